"""bert4keras' text helpers: character forms, splitting, matching, common subsequences."""

import re
import unicodedata

__all__ = [
    "convert_to_str",
    "convert_to_unicode",
    "is_string",
    "longest_common_subsequence",
    "longest_common_substring",
    "lowercase_and_normalize",
    "strQ2B",
    "string_matching",
    "text_segmentate",
]


def is_string(s):
    """Whether `s` is a `str`."""
    return isinstance(s, str)


# Full-width forms U+FF01..U+FF5E sit exactly 0xFEE0 above ASCII 0x21..0x7E; U+3000 is
# the ideographic (full-width) space.
_Q2B_TABLE = {0x3000: 0x20, **{code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}}


def strQ2B(ustring):
    """Converts full-width ASCII forms and the ideographic space to half-width.

    Example:
        >>> strQ2B("ＡＢＣ，１２３　ok")
        'ABC,123 ok'
    """
    return ustring.translate(_Q2B_TABLE)


def string_matching(s, keywords):
    """Whether any of the regular expressions `keywords` is found in `s`."""
    return any(re.search(k, s) for k in keywords)


def convert_to_unicode(text, encoding="utf-8", errors="ignore"):
    """Decodes bytes to str (str passes through)."""
    if isinstance(text, bytes):
        text = text.decode(encoding, errors=errors)
    return text


def convert_to_str(text, encoding="utf-8", errors="ignore"):
    """bert4keras' Python 2/3 shim; on Python 3 the same as `convert_to_unicode`."""
    return convert_to_unicode(text, encoding, errors)


def lowercase_and_normalize(text):
    """Lower-cases, NFD-decomposes and drops non-spacing marks (accents).

    Example:
        >>> lowercase_and_normalize("Café")
        'cafe'
    """
    text = unicodedata.normalize("NFD", text.lower())
    return "".join(ch for ch in text if unicodedata.category(ch) != "Mn")


def text_segmentate(text, maxlen, seps="\n", strips=None):
    """Splits a text into pieces of at most `maxlen` characters at separators.

    The text is split at `seps[0]` and the parts are packed greedily into pieces
    (each part keeps its separator); a piece still longer than `maxlen` is split
    again with `seps[1:]`. Pieces are stripped of whitespace and of the characters
    in `strips`. A piece can exceed `maxlen` only where no separator allows a cut,
    or (as in bert4keras) through a run of consecutive separators, which always
    stays with the piece before it.

    Args:
        text: the text.
        maxlen: the largest piece length wanted.
        seps: separators in order of preference (a string of characters or a list
            of strings), e.g. "\\n。！？；，".
        strips: characters to strip from both ends of each piece.

    Returns:
        The list of pieces.

    Example:
        >>> text_segmentate("今天天气很好。我们去公园吧！好的", 8, "。！")
        ['今天天气很好。', '我们去公园吧！', '好的']
    """
    if not isinstance(text, str):
        raise TypeError(f"text_segmentate: text must be a str, got {type(text).__name__}")
    text = text.strip().strip(strips)
    if not seps or len(text) <= maxlen:
        return [text]
    sep, finer = seps[0], seps[1:]
    parts = text.split(sep)
    pieces, current = [], ""
    for i, part in enumerate(parts):
        # Close the current piece when this part and its separator would overflow it.
        if current and part and len(current) + len(part) > maxlen - 1:
            pieces.extend(text_segmentate(current, maxlen, finer, strips))
            current = ""
        current += part if i + 1 == len(parts) else part + sep
    if current:
        pieces.extend(text_segmentate(current, maxlen, finer, strips))
    return pieces


def longest_common_substring(source, target):
    """Longest common contiguous run of two sequences.

    Returns:
        `(length, (i0, i1, j0, j1))` with `source[i0:i1] == target[j0:j1]`; the first
        such run (scanning source, then target) when several are longest.
    """
    best, span = 0, (0, 0, 0, 0)
    previous = [0] * (len(target) + 1)
    for i, s in enumerate(source, 1):
        # current[j]: length of the common run ending at source[i - 1], target[j - 1].
        current = [0] * (len(target) + 1)
        for j, t in enumerate(target, 1):
            if s == t:
                current[j] = previous[j - 1] + 1
                if current[j] > best:
                    best = current[j]
                    span = (i - best, i, j - best, j)
        previous = current
    return best, span


def longest_common_subsequence(source, target):
    """Longest common (not necessarily contiguous) subsequence of two sequences.

    Returns:
        `(length, mapping)` where mapping lists the matched `(i, j)` index pairs,
        increasing in both, with `source[i] == target[j]`.

    Example:
        >>> longest_common_subsequence("abcde", "ace")
        (3, [(0, 0), (2, 1), (4, 2)])
    """
    n, m = len(source), len(target)
    # table[i][j]: LCS length of source[:i] and target[:j].
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            if source[i - 1] == target[j - 1]:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i][j - 1], table[i - 1][j])
    length, mapping = table[n][m], []
    # Walk back from the end; on a tie drop the source item (bert4keras' choice).
    i, j = n - 1, m - 1
    while len(mapping) < length:
        if source[i] == target[j]:
            mapping.append((i, j))
            i, j = i - 1, j - 1
        elif table[i + 1][j] > table[i][j + 1]:
            j -= 1
        else:
            i -= 1
    return length, mapping[::-1]
