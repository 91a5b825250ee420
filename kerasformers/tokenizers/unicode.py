"""Character classes of BERT tokenization, matched to Hugging Face's Rust tokenizers.

Python's ``unicodedata`` (Unicode 14 in Python 3.11) is newer than the
category tables in the Rust ``tokenizers`` library, which behave like Unicode
8.0: punctuation, format characters and non-spacing marks added or
re-categorised since then are not recognised there. The override tables below
list exactly those characters, measured over all code points against
``tokenizers`` 0.23 under Python 3.11, so that
``kerasformers.tokenizers.Tokenizer`` splits text as HF does. What remains
differs only with ``do_lower_case``: 55 code points unassigned in Python
3.11's tables (HF's newer lower-casing knows them) and U+11938 (whose
decomposition HF's NFD lacks). A newer Python assigns more characters, which
these tables cannot know about.
"""

import bisect
import unicodedata

CJK_PUNCTUATION = (
    "\uff02\uff03\uff04\uff05\uff06\uff07\uff08\uff09\uff0a\uff0b\uff0c\uff0d\uff0f\uff1a"
    "\uff1b\uff1c\uff1d\uff1e\uff20\uff3b\uff3c\uff3d\uff3e\uff3f\uff40\uff5b\uff5c\uff5d"
    "\uff5e\uff5f\uff60\uff62\uff63\uff64\u3000\u3001\u3003\u3008\u3009\u300a\u300b\u300c"
    "\u300d\u300e\u300f\u3010\u3011\u3014\u3015\u3016\u3017\u3018\u3019\u301a\u301b\u301c"
    "\u301d\u301e\u301f\u3030\u303e\u303f\u2013\u2014\u2018\u2019\u201b\u201c\u201d\u201e"
    "\u201f\u2026\u2027\ufe4f\ufe51\ufe54\u00b7\uff01\uff1f\uff61\u3002"
)

_SPACE_CATEGORIES = ("Zs", "Zl", "Zp")
_CONTROL_CATEGORIES = ("Cc", "Cf", "Co", "Cs")


def _parse_ranges(spec):
    """Parses "61D 2E43-2E4F ..." (hex) into sorted (starts, ends) lists."""
    starts, ends = [], []
    for item in spec.split():
        first, _, last = item.partition("-")
        starts.append(int(first, 16))
        ends.append(int(last or first, 16))
    return starts, ends


def _in_ranges(code, ranges):
    starts, ends = ranges
    i = bisect.bisect_right(starts, code) - 1
    return i >= 0 and code <= ends[i]


# Unicode P* today, but not punctuation to HF.
_NOT_PUNCTUATION = _parse_ranges(
    "61D 9FD A76 C77 C84 1B7D-1B7E 2E43-2E4F 2E52-2E5D 10EAD 10F55-10F59 10F86-10F89"
    " 1144B-1144F 1145A-1145B 1145D 11660-1166C 116B9 1183B 11944-11946 119E2 11A3F-11A46"
    " 11A9A-11A9C 11A9E-11AA2 11C41-11C45 11C70-11C71 11EF7-11EF8 11FFF 12FF1-12FF2"
    " 16E97-16E9A 16FE2 1E95E-1E95F"
)
# Punctuation to HF, though no longer P* (Unicode 8.0 had them as Po).
_EXTRA_PUNCTUATION = frozenset((0x166D, 0x111C9))
# Format characters (Cf) that HF keeps.
_NOT_CONTROL = _parse_ranges("890-891 8E2 110CD 13430-13438")
# Non-spacing marks (Mn) that HF's accent stripping keeps.
_NOT_NONSPACING_MARK = _parse_ranges(
    "7FD 898-89F 8CA-8E1 9FE AFA-AFF B55 C04 C3C D00 D3B-D3C D81 EBA 180F 1885-1886"
    " 1ABF-1ACE 1DF6-1DFB A82C A8C5 A8FF A9BD 10D24-10D27 10EAB-10EAC 10F46-10F50"
    " 10F82-10F85 11070 11073-11074 110C2 111C9 111CF 1123E 1133B 11438-1143F 11442-11444"
    " 11446 1145E 1182F-11837 11839-1183A 1193B-1193C 1193E 11943 119D4-119D7 119DA-119DB"
    " 119E0 11A01-11A0A 11A33-11A38 11A3B-11A3E 11A47 11A51-11A56 11A59-11A5B 11A8A-11A96"
    " 11A98-11A99 11C30-11C36 11C38-11C3D 11C3F 11C92-11CA7 11CAA-11CB0 11CB2-11CB3"
    " 11CB5-11CB6 11D31-11D36 11D3A 11D3C-11D3D 11D3F-11D45 11D47 11D90-11D91 11D95 11D97"
    " 11EF3-11EF4 16F4F 16FE4 1CF00-1CF2D 1CF30-1CF46 1E000-1E006 1E008-1E018 1E01B-1E021"
    " 1E023-1E024 1E026-1E02A 1E130-1E136 1E2AE 1E2EC-1E2EF 1E944-1E94A"
)
# Stripped by HF (Mn in Unicode 8.0, Mc today).
_EXTRA_NONSPACING_MARK = frozenset((0x1734,))


def is_space(ch):
    """Space, tab, newline, carriage return, or a Zs/Zl/Zp separator."""
    return ch in " \t\n\r" or unicodedata.category(ch) in _SPACE_CATEGORIES


def is_punctuation(ch):
    """ASCII non-alphanumeric printable characters and Unicode P* (HF's view)."""
    code = ord(ch)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    if code < 128:
        return False
    if code in _EXTRA_PUNCTUATION:
        return True
    return unicodedata.category(ch)[0] == "P" and not _in_ranges(code, _NOT_PUNCTUATION)


def is_cjk_character(ch):
    """CJK ideographs, with HF's ranges (Extension E from U+2B920, not U+2B820)."""
    code = ord(ch)
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0x20000 <= code <= 0x2A6DF
        or 0x2A700 <= code <= 0x2B73F
        or 0x2B740 <= code <= 0x2B81F
        or 0x2B920 <= code <= 0x2CEAF
        or 0xF900 <= code <= 0xFAFF
        or 0x2F800 <= code <= 0x2FA1F
    )


def is_control(ch):
    """Control, format, private-use and surrogate characters, except tab/newlines."""
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch) in _CONTROL_CATEGORIES and not _in_ranges(ord(ch), _NOT_CONTROL)


def is_removed(ch):
    """Characters BERT's text cleaning deletes: NUL, U+FFFD and controls."""
    return ch == "\x00" or ch == "\ufffd" or is_control(ch)


def is_nonspacing_mark(ch):
    """Marks (accents) that uncased BERT strips after NFD."""
    code = ord(ch)
    if code in _EXTRA_NONSPACING_MARK:
        return True
    return unicodedata.category(ch) == "Mn" and not _in_ranges(code, _NOT_NONSPACING_MARK)


def strip_and_lower(ch):
    """Uncased normalisation of one character: NFD, drop marks, then lower-case.

    HF lower-cases character by character after stripping, so a final capital
    sigma becomes "σ" (``str.lower`` on a whole word would give "ς").
    """
    if ch.isascii():
        return ch.lower()
    decomposed = unicodedata.normalize("NFD", ch)
    return "".join(c.lower() for c in decomposed if not is_nonspacing_mark(c))


# Bounds the per-tokenizer word cache so a long stream of distinct words
# cannot grow memory without limit.
_WORD_CACHE_LIMIT = 200_000


class CharTable(dict):
    """A ``str.translate`` table that computes and caches entries on first use."""

    def __init__(self, fn):
        super().__init__()
        self._fn = fn

    def __missing__(self, code):
        value = self._fn(chr(code))
        self[code] = value
        return value


class WordCache(dict):
    """Word -> WordPiece tokens, computed on first use, bounded in size."""

    def __init__(self, fn):
        super().__init__()
        self._fn = fn

    def __missing__(self, word):
        value = self._fn(word)
        if len(self) < _WORD_CACHE_LIMIT:
            self[word] = value
        return value
