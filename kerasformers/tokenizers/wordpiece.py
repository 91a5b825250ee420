"""BERT's WordPiece tokenizer (bert4keras' ``Tokenizer``) in pure Python.

The same names and semantics as bert4keras (``tokenize``/``encode``/
``decode``/``rematch`` and the ``_token_*_id`` attributes).

``Tokenizer`` produces exactly the ids of Hugging Face's ``BertTokenizer``
(the Rust ``tokenizers`` backend: ``BertNormalizer`` + ``BertPreTokenizer`` +
``WordPiece``) for the same vocab and ``do_lower_case``. Reaching that meant
these departures from bert4keras:

* Words longer than 100 characters become the unknown token (HF's
  ``max_input_chars_per_word=100``; bert4keras used ``word_maxlen=200``).
* A word that WordPiece cannot split becomes ``"[UNK]"`` in ``tokenize``'s
  output, as in HF (bert4keras kept the raw word, which also mapped to the
  unknown id). ``rematch`` maps such a ``"[UNK]"`` to the whole word.
* Dropped "control" characters are categories Cc, Cf, Co and Cs (bert4keras:
  Cc and Cf only), and whitespace also covers U+2028 and U+2029 (Zl, Zp).
* Punctuation, format characters and accents are classified as HF's Rust
  code does, whose category tables are Unicode 8.0: the ~500 rarely used
  characters added or re-categorised since are overridden (see
  ``kerasformers.tokenizers.unicode``).
* With ``do_lower_case`` the text is NFD-decomposed and stripped of
  non-spacing marks (Mn) *before* it is lower-cased, one character at a time,
  as HF does; so a final capital sigma becomes "σ", never "ς".
* The CJK ideograph ranges are HF's, which start CJK Extension E at U+2B920
  (bert4keras and Google's BERT: U+2B820); U+2B820..U+2B91F are treated as
  ordinary letters.
* Ids come from line numbers in the vocab file, so a duplicated or blank line
  cannot shift the ids of the lines after it (bert4keras counted the tokens
  seen so far).
* ``_token_*_id`` attributes are ``None`` when the vocab lacks that token
  (bert4keras left the attribute undefined).
* Bad input is an error: a vocab without its unknown token (``ValueError`` at
  construction; bert4keras failed on the first ``encode``), an id outside the
  vocab in ``decode``/``id_to_token`` (``ValueError`` naming the valid ids),
  and a list of ids given to ``encode`` as if it were tokens (``TypeError``;
  bert4keras turned every id into ``[UNK]``).

Known differences from HF that remain: HF matches special tokens written
literally in the text (``"[MASK]"`` becomes id 103), while this tokenizer
splits them like any text, as bert4keras did; pair truncation follows
bert4keras' ``truncate_sequences``, which gives an odd leftover token to the
second sequence where HF's ``longest_first`` gives it to the longer one; and
characters unassigned in the running Python's Unicode tables may normalise
differently.

Example:
    >>> tokenizer = Tokenizer("vocab.txt", do_lower_case=True)  # doctest: +SKIP
    >>> tokenizer.encode("Hello world!", maxlen=8)  # doctest: +SKIP
    ([101, 7592, 2088, 999, 102], [0, 0, 0, 0, 0])
"""

import os
import re
from collections.abc import Mapping

from kerasformers.tokenizers import unicode as _uni
from kerasformers.tokenizers.base import (
    TokenizerBase,
    _check_text,
    _is_redundant,
    _short_repr,
    _stem,
    load_vocab,
)

__all__ = ["Tokenizer"]

_DECODE_PUNCTUATION_RE = re.compile(
    "({}) ".format("|".join(re.escape(p) for p in _uni.CJK_PUNCTUATION + "+-/={(<["))
)
_DECODE_CONTRACTION_RE = re.compile(r"' (re|m|s|t|ve|d|ll) ")
_DECODE_DECIMAL_RE = re.compile(r"(\d\.) (\d)")
_DECODE_SPACES_RE = re.compile(" +")


class Tokenizer(TokenizerBase):
    """BERT's WordPiece tokenizer in pure Python, id-exact with HF's BertTokenizer.

    Args:
        token_dict: a vocab file path or a ``{token: id}`` dict.
        do_lower_case: lower-case and strip accents (for uncased vocabs).
        word_maxlen: words longer than this many characters (after
            normalisation) become the unknown token; 100 as in HF.
        token_start: token put first, ``"[CLS]"`` by default, or ``None``.
        token_end: token put last, ``"[SEP]"`` by default, or ``None``.
        pre_tokenize: optional callable splitting the (normalised) text into
            pieces before WordPiece, e.g. a Chinese word segmenter; pieces in
            the vocab are kept whole.
        token_translate: optional ``{token: token}`` replacements.
        token_unk: the vocab's unknown token, ``"[UNK]"`` by default (bert4keras
            hard-coded it): unknown words become it. ``None`` declares a vocab
            without one; a word WordPiece cannot split, or a token missing from
            the vocab, then raises ``ValueError`` naming it instead.

    Raises:
        FileNotFoundError: if ``token_dict`` is a path that does not exist.
        TypeError: if ``token_dict`` is neither a path nor a dict.
        ValueError: if the vocab lacks ``token_unk`` (bert4keras failed on the
            first ``encode`` instead).

    Example:
        >>> tokenizer = Tokenizer("vocab.txt", do_lower_case=True)  # doctest: +SKIP
        >>> tokens = tokenizer.tokenize("Naïve café")  # doctest: +SKIP
        >>> tokens  # doctest: +SKIP
        ['[CLS]', 'naive', 'cafe', '[SEP]']
        >>> tokenizer.rematch("Naïve café", tokens)  # doctest: +SKIP
        [[], [0, 1, 2, 3, 4], [6, 7, 8, 9], []]
    """

    def __init__(
        self, token_dict, do_lower_case=False, word_maxlen=100, token_unk="[UNK]", **kwargs
    ):
        super().__init__(**kwargs)
        if isinstance(token_dict, (str, os.PathLike)):
            source = os.fspath(token_dict)
            token_dict = load_vocab(token_dict)
        elif isinstance(token_dict, Mapping):
            source = f"a dict of {len(token_dict)} tokens"
        else:
            raise TypeError(
                "Tokenizer: token_dict must be a vocab file path or a {token: id} dict, got "
                f"{type(token_dict).__name__}"
            )
        if token_unk is not None and token_unk not in token_dict:
            raise ValueError(
                f"Tokenizer: the vocab ({source}) has no unknown "
                f"token {token_unk!r}, so words outside it would have no id. Add "
                f"{token_unk!r} to the vocab, pass token_unk= with the vocab's own unknown "
                "token, or token_unk=None to make unknown words an error"
            )
        self._token_unk = token_unk
        self._do_lower_case = do_lower_case
        self._token_dict = token_dict
        self._token_dict_inv = {v: k for k, v in token_dict.items()}
        self._vocab_size = max(token_dict.values()) + 1 if token_dict else 0
        self._word_maxlen = word_maxlen
        self._max_piece_len = max((len(_stem(t)) for t in token_dict), default=1)
        for name in ("pad", "unk", "mask", "start", "end"):
            token = getattr(self, f"_token_{name}")
            setattr(self, f"_token_{name}_id", token_dict.get(token))

        self._norm_table = _uni.CharTable(self._normalize_char)
        self._split_table = _uni.CharTable(self._split_char)
        self._word_cache = _uni.WordCache(self._word_piece_tokenize)
        # ASCII letters are most text; filling their entries now keeps the
        # Python-level __missing__ out of the common path.
        for code in range(128):
            self._split_table[code]  # noqa: B018

    @property
    def vocab_size(self):
        """One more than the largest id: the rows an embedding matrix needs."""
        return self._vocab_size

    def token_to_id(self, token):
        """Returns the id of ``token``, or the unknown id if it is not in the vocab.

        Raises:
            ValueError: if ``token`` is not in a vocab without unknown token
                (``token_unk=None``).
        """
        i = self._token_dict.get(token, self._token_unk_id)
        if i is None:
            raise ValueError(self._not_in_vocab(f"token {token!r}"))
        return i

    def tokens_to_ids(self, tokens):
        """Returns the ids of a list of tokens (the unknown id for unknown ones)."""
        get, unk_id = self._token_dict.get, self._token_unk_id
        if unk_id is None:
            return [self.token_to_id(token) for token in tokens]
        return [get(token, unk_id) for token in tokens]

    def id_to_token(self, i):
        """Returns the token of id ``i``.

        Raises:
            ValueError: if ``i`` is not an id of the vocab, naming the valid ids.
        """
        try:
            return self._token_dict_inv[i]
        except (KeyError, TypeError):
            raise ValueError(self._bad_id_message(i)) from None

    def ids_to_tokens(self, ids):
        """Returns the tokens of a list of ids (``ValueError`` for an id not in the vocab)."""
        inv = self._token_dict_inv
        try:
            return [inv[i] for i in ids]
        except (KeyError, TypeError):
            return [self.id_to_token(i) for i in ids]  # raises, naming the id

    def _bad_id_message(self, i):
        size = self._vocab_size
        valid = f"valid ids: 0..{size - 1}" if size else "the vocab is empty"
        if isinstance(i, bool) or not hasattr(i, "__index__"):
            return f"token id {i!r} is not an integer ({valid})"
        i = int(i)
        if 0 <= i < size:
            return (
                f"token id {i} has no token in the vocabulary ({valid}; {len(self._token_dict)} "
                "distinct tokens: a duplicated or blank line of the vocab file leaves an id "
                "without a token)"
            )
        return f"token id {i} is outside the vocabulary of {size} ids ({valid})"

    def _not_in_vocab(self, what):
        return (
            f"{what} is not in the vocab, which has no unknown token (token_unk=None); "
            "add it to the vocab or build the Tokenizer with the vocab's unknown token"
        )

    def _normalize_char(self, ch):
        # Per-character normalisation without the splitting spaces, shared by
        # tokenizing and rematch so their views of the text cannot diverge.
        if _uni.is_removed(ch):
            return ""
        if _uni.is_space(ch):
            return " "
        return _uni.strip_and_lower(ch) if self._do_lower_case else ch

    def _split_char(self, ch):
        normalized = self._normalize_char(ch)
        if normalized == " " or not normalized:
            return normalized
        if _uni.is_cjk_character(ch):
            return f" {normalized} "
        # Punctuation is judged after normalisation, as HF's pre-tokenizer
        # sees the normalised text (e.g. U+1FEF decomposes to "`").
        return "".join(f" {c} " if _uni.is_punctuation(c) else c for c in normalized)

    def _tokenize(self, text, pre_tokenize=True):
        if pre_tokenize and self._pre_tokenize is not None:
            normalized = text.translate(self._norm_table)
            tokens = []
            for piece in self._pre_tokenize(normalized):
                if piece in self._token_dict:
                    tokens.append(piece)
                else:
                    tokens.extend(self._tokenize(piece, False))
            return tokens

        cache = self._word_cache
        tokens = []
        for word in text.translate(self._split_table).split():
            tokens.extend(cache[word])
        return tokens

    def _word_piece_tokenize(self, word):
        """Greedy longest-match-first WordPiece; the unknown token if any part fails."""
        if len(word) > self._word_maxlen:
            return self._unknown_word(word)
        vocab = self._token_dict
        if word in vocab:
            return (word,)
        tokens, start, length = [], 0, len(word)
        while start < length:
            end = min(length, start + self._max_piece_len)
            while end > start:
                piece = word[start:end]
                if start > 0:
                    piece = "##" + piece
                if piece in vocab:
                    break
                end -= 1
            else:
                return self._unknown_word(word)
            tokens.append(piece)
            start = end
        return tuple(tokens)

    def _unknown_word(self, word):
        if self._token_unk is None:
            raise ValueError(self._not_in_vocab(f"the word {_short_repr(word)} (or a piece of it)"))
        return (self._token_unk,)

    def decode(self, ids, tokens=None):
        """Turns ids (or ``tokens``) into text the way bert4keras does.

        Special tokens (``[xxx]``) are dropped, "##" pieces are glued to the
        previous piece, CJK characters get no spaces between them, other words
        are separated by spaces, and spaces after opening punctuation or
        inside "it ' s" and "3. 14" are removed.

        Args:
            ids: token ids.
            tokens: optional tokens to decode instead of ``ids``.

        Returns:
            The text.

        Raises:
            ValueError: if an id is not in the vocabulary, naming it and the
                valid ids (e.g. a model whose vocab_size exceeds the vocab's).

        Example:
            >>> vocab = {"[UNK]": 0, "hello": 1, "world": 2, "##s": 3, "你": 4, "好": 5}
            >>> Tokenizer(vocab).decode([1, 2, 3, 4, 5])
            'hello worlds你好'
        """
        tokens = tokens or self.ids_to_tokens(ids)
        tokens = [token for token in tokens if not self._is_special(token)]

        text = ""
        for i, token in enumerate(tokens):
            if token[:2] == "##":
                text += token[2:]
            elif len(token) == 1 and _uni.is_cjk_character(token):
                text += token
            elif len(token) == 1 and _uni.is_punctuation(token):
                text += token + " "
            elif i > 0 and text and _uni.is_cjk_character(text[-1]):
                text += token
            else:
                text += " " + token

        text = _DECODE_SPACES_RE.sub(" ", text)
        text = _DECODE_CONTRACTION_RE.sub(r"'\1 ", text)
        text = _DECODE_PUNCTUATION_RE.sub(r"\1", text)
        text = _DECODE_DECIMAL_RE.sub(r"\1\2", text)
        return text.strip()

    def rematch(self, text, tokens):
        """Maps each token back to the character positions it came from in ``text``.

        Args:
            text: the original text given to ``tokenize``.
            tokens: its tokens (e.g. from ``tokenize``).

        Returns:
            One list of indices into ``text`` per token: ``[]`` for special
            tokens such as ``[CLS]``/``[SEP]``; the whole word for the unknown
            token; otherwise the characters that normalise to the token (with
            an index repeated when one character normalises to several, e.g.
            a Hangul syllable to its jamo). A token not found in the text
            gets ``[]``.

        Raises:
            TypeError: if ``text`` is not a str.

        Example:
            >>> vocab = {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "cafe": 3}
            >>> tokenizer = Tokenizer(vocab, do_lower_case=True)
            >>> tokenizer.rematch("Café", ["[CLS]", "cafe", "[SEP]"])
            [[], [0, 1, 2, 3], []]
        """
        _check_text(text)
        table = self._norm_table
        pieces, char_mapping = [], []
        for i, ch in enumerate(text):
            normalized = table[ord(ch)]
            pieces.append(normalized)
            char_mapping.extend([i] * len(normalized))
        normalized_text = "".join(pieces)

        mapping, offset = [], 0
        for token in tokens:
            if token == self._token_unk:
                start, end = self._find_word(normalized_text, offset)
            elif self._is_special(token):
                mapping.append([])
                continue
            else:
                stem = self.stem(token)
                start = normalized_text.find(stem, offset) if stem else -1
                end = start + len(stem)
            if start < 0 or end <= start:
                mapping.append([])
                continue
            mapping.append(char_mapping[start:end])
            offset = end
        return mapping

    @staticmethod
    def _find_word(text, offset):
        """Span of the next whole word (as the tokenizer splits) from ``offset``."""
        length = len(text)
        start = offset
        while start < length and text[start] == " ":
            start += 1
        if start == length:
            return -1, -1
        if _uni.is_punctuation(text[start]) or _uni.is_cjk_character(text[start]):
            return start, start + 1
        end = start + 1
        while end < length:
            ch = text[end]
            if ch == " " or _uni.is_punctuation(ch) or _uni.is_cjk_character(ch):
                break
            end += 1
        return start, end

    @staticmethod
    def stem(token):
        """Returns ``token`` without a leading "##"."""
        return _stem(token)

    @staticmethod
    def _is_space(ch):
        """Whether ``ch`` separates words (space, tab, newline, Zs, Zl, Zp)."""
        return _uni.is_space(ch)

    @staticmethod
    def _is_punctuation(ch):
        """Whether ``ch`` is punctuation: ASCII non-alphanumerics or Unicode P*."""
        return _uni.is_punctuation(ch)

    @staticmethod
    def _cjk_punctuation():
        """Full-width and CJK punctuation, kept glued to the text by ``decode``."""
        return _uni.CJK_PUNCTUATION

    @staticmethod
    def _is_cjk_character(ch):
        """Whether ``ch`` is a CJK ideograph (HF's ranges), tokenized on its own."""
        return _uni.is_cjk_character(ch)

    @staticmethod
    def _is_control(ch):
        """Whether ``ch`` is a control/format/private-use char dropped from text."""
        return _uni.is_control(ch)

    @staticmethod
    def _is_special(ch):
        """Whether a token looks like ``[xxx]`` (special, not real text)."""
        return bool(ch) and ch[0] == "[" and ch[-1] == "]"

    @staticmethod
    def _is_redundant(token):
        """Whether the tokenizer can never output ``token`` (see ``load_vocab``)."""
        return _is_redundant(token)
