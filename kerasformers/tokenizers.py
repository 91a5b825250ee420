"""Tokenizers: BERT WordPiece (pure Python) and a SentencePiece wrapper.

A rebuild of bert4keras' ``tokenizers`` module with the same names and
semantics (``load_vocab``, ``save_vocab``, ``Tokenizer``, ``SpTokenizer``,
``tokenize``/``encode``/``decode``/``rematch`` and the ``_token_*_id``
attributes).

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
  ``kerasformers._tokenizer_unicode``).
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

from kerasformers import _tokenizer_unicode as _uni
from kerasformers.snippets import truncate_sequences

__all__ = ["load_vocab", "save_vocab", "Tokenizer", "SpTokenizer", "TokenizerBase"]

_DECODE_PUNCTUATION_RE = re.compile(
    "({}) ".format("|".join(re.escape(p) for p in _uni.CJK_PUNCTUATION + "+-/={(<["))
)
_DECODE_CONTRACTION_RE = re.compile(r"' (re|m|s|t|ve|d|ll) ")
_DECODE_DECIMAL_RE = re.compile(r"(\d\.) (\d)")
_DECODE_SPACES_RE = re.compile(" +")


def _stem(token):
    return token[2:] if token[:2] == "##" else token


def _check_text(text, name="text"):
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")


def load_vocab(dict_path, encoding="utf-8", simplified=False, startswith=None):
    """Reads a BERT ``vocab.txt`` (one token per line) into ``{token: id}``.

    The id of a token is its line number. Only the first whitespace-separated
    field of a line is kept, so vocabs with counts after the token load too.

    Args:
        dict_path: path of the vocab file.
        encoding: its text encoding.
        simplified: if true, also drop the tokens the tokenizer can never
            produce (longer than one character and containing a CJK character
            or punctuation after "##" is removed, such as "[unused1]" or
            "##的"), renumbering the rest.
        startswith: with ``simplified``, tokens to put first, in this order,
            whatever the rule says (typically
            ``["[PAD]", "[UNK]", "[CLS]", "[SEP]"]``).

    Returns:
        ``{token: id}``; with ``simplified``, ``(new_token_dict, keep_tokens)``
        where ``keep_tokens[new_id]`` is the token's original id, ready to
        gather the rows of a pretrained embedding matrix.

    Raises:
        FileNotFoundError: if ``dict_path`` does not exist.

    Example:
        >>> token_dict, keep_tokens = load_vocab(  # doctest: +SKIP
        ...     "vocab.txt", simplified=True,
        ...     startswith=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    """
    if not os.path.isfile(dict_path):
        raise FileNotFoundError(f"vocab file not found: {dict_path}")
    token_dict = {}
    with open(dict_path, encoding=encoding) as reader:
        for index, line in enumerate(reader):
            fields = line.split()
            token_dict[fields[0] if fields else line.strip()] = index

    if not simplified:
        return token_dict

    new_token_dict, keep_tokens = {}, []
    for token in startswith or []:
        if token not in token_dict:
            raise KeyError(f"startswith token {token!r} is not in {dict_path}")
        new_token_dict[token] = len(new_token_dict)
        keep_tokens.append(token_dict[token])
    for token, index in sorted(token_dict.items(), key=lambda item: item[1]):
        if token not in new_token_dict and not Tokenizer._is_redundant(token):
            new_token_dict[token] = len(new_token_dict)
            keep_tokens.append(index)
    return new_token_dict, keep_tokens


def save_vocab(dict_path, token_dict, encoding="utf-8"):
    """Writes ``{token: id}`` as a vocab file, one token per line in id order.

    Args:
        dict_path: path of the file to write.
        token_dict: the vocab, e.g. the simplified one from ``load_vocab``.
        encoding: text encoding of the file.

    Example:
        >>> save_vocab("vocab.txt", {"[PAD]": 0, "[UNK]": 1})  # doctest: +SKIP
    """
    with open(dict_path, "w", encoding=encoding) as writer:
        for token, _ in sorted(token_dict.items(), key=lambda item: item[1]):
            writer.write(token + "\n")


class TokenizerBase:
    """Shared logic of the tokenizers: start/end tokens, truncation, encoding.

    Args:
        token_start: token put in front of every sequence, or ``None``.
        token_end: token put after every sequence, or ``None``.
        pre_tokenize: optional callable splitting a text into pieces first;
            pieces found in the vocab are kept whole.
        token_translate: optional ``{token: token}`` map applied after
            tokenizing (and reversed by ``SpTokenizer.decode``).

    Example:
        >>> tokenizer = Tokenizer({"[CLS]": 0, "[SEP]": 1, "hi": 2})
        >>> tokenizer.tokenize("hi")
        ['[CLS]', 'hi', '[SEP]']
    """

    def __init__(
        self, token_start="[CLS]", token_end="[SEP]", pre_tokenize=None, token_translate=None
    ):
        self._token_pad = "[PAD]"
        self._token_unk = "[UNK]"
        self._token_mask = "[MASK]"
        self._token_start = token_start
        self._token_end = token_end
        self._pre_tokenize = pre_tokenize
        self._token_translate = token_translate or {}
        self._token_translate_inv = {v: k for k, v in self._token_translate.items()}

    def tokenize(self, text, maxlen=None):
        """Splits ``text`` into tokens, adding the start and end tokens.

        Args:
            text: the text.
            maxlen: if given, tokens are dropped from the end (keeping the end
                token) until at most ``maxlen`` remain.

        Returns:
            A list of token strings.

        Raises:
            TypeError: if ``text`` is not a str.
        """
        _check_text(text)
        tokens = self._tokenize(text)
        if self._token_translate:
            tokens = [self._token_translate.get(t) or t for t in tokens]
        if self._token_start is not None:
            tokens.insert(0, self._token_start)
        if self._token_end is not None:
            tokens.append(self._token_end)
        if maxlen is not None:
            index = int(self._token_end is not None) + 1
            truncate_sequences(maxlen, -index, tokens)
        return tokens

    def token_to_id(self, token):
        """Returns the id of ``token`` (the unknown id if it has none)."""
        raise NotImplementedError

    def tokens_to_ids(self, tokens):
        """Returns the ids of a list of tokens."""
        return [self.token_to_id(token) for token in tokens]

    def id_to_token(self, i):
        """Returns the token of id ``i``."""
        raise NotImplementedError

    def ids_to_tokens(self, ids):
        """Returns the tokens of a list of ids."""
        return [self.id_to_token(i) for i in ids]

    def _as_tokens(self, text, name):
        if isinstance(text, str):
            return self.tokenize(text)
        if isinstance(text, (list, tuple)):
            return list(text)
        raise TypeError(f"{name} must be a str or a list of tokens, got {type(text).__name__}")

    def encode(
        self, first_text, second_text=None, maxlen=None, pattern="S*E*E", truncate_from="right"
    ):
        """Returns the token ids and segment ids of a text or a text pair.

        With ``maxlen``, tokens are popped one at a time from the longer
        sequence (the first on ties), from its end just before the end token
        (``truncate_from="right"``), from just after the start token
        (``"left"``), or at a given integer index, until the total fits.

        Args:
            first_text: a str, or a list of tokens (already with start/end).
            second_text: optional second str or list of tokens.
            maxlen: the largest total number of ids.
            pattern: ``"S*E*E"`` (BERT: the second sequence loses its start
                token) or ``"S*ES*E"`` (it keeps it).
            truncate_from: ``"right"``, ``"left"`` or an int index.

        Returns:
            ``(token_ids, segment_ids)``; segment ids are 0 for the first
            sequence and 1 for the second.

        Raises:
            TypeError: if a text is neither a str nor a list of tokens.

        Example:
            >>> tokenizer = Tokenizer({"[CLS]": 0, "[SEP]": 1, "a": 2, "b": 3})
            >>> tokenizer.encode("a a", "b")
            ([0, 2, 2, 1, 3, 1], [0, 0, 0, 0, 1, 1])
        """
        first_tokens = self._as_tokens(first_text, "first_text")
        second_tokens = None
        if second_text is not None:
            second_tokens = self._as_tokens(second_text, "second_text")

        if maxlen is not None:
            if truncate_from == "right":
                index = -int(self._token_end is not None) - 1
            elif truncate_from == "left":
                index = int(self._token_start is not None)
            else:
                index = truncate_from
            if second_tokens is not None and pattern == "S*E*E":
                # The second start token is dropped below, so it may be counted.
                maxlen += 1
            truncate_sequences(maxlen, index, first_tokens, second_tokens)

        token_ids = self.tokens_to_ids(first_tokens)
        segment_ids = [0] * len(token_ids)
        if second_tokens is not None:
            if pattern == "S*E*E":
                second_tokens = second_tokens[int(bool(self._token_start)) :]
            second_ids = self.tokens_to_ids(second_tokens)
            token_ids.extend(second_ids)
            segment_ids.extend([1] * len(second_ids))
        return token_ids, segment_ids

    def decode(self, ids):
        """Turns ids back into readable text."""
        raise NotImplementedError

    def _tokenize(self, text):
        raise NotImplementedError


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

    Raises:
        FileNotFoundError: if ``token_dict`` is a path that does not exist.

    Example:
        >>> tokenizer = Tokenizer("vocab.txt", do_lower_case=True)  # doctest: +SKIP
        >>> tokens = tokenizer.tokenize("Naïve café")  # doctest: +SKIP
        >>> tokens  # doctest: +SKIP
        ['[CLS]', 'naive', 'cafe', '[SEP]']
        >>> tokenizer.rematch("Naïve café", tokens)  # doctest: +SKIP
        [[], [0, 1, 2, 3, 4], [6, 7, 8, 9], []]
    """

    def __init__(self, token_dict, do_lower_case=False, word_maxlen=100, **kwargs):
        super().__init__(**kwargs)
        if isinstance(token_dict, (str, os.PathLike)):
            token_dict = load_vocab(token_dict)
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
        """Returns the id of ``token``, or the unknown id if it is not in the vocab."""
        return self._token_dict.get(token, self._token_unk_id)

    def tokens_to_ids(self, tokens):
        """Returns the ids of a list of tokens (the unknown id for unknown ones)."""
        get, unk_id = self._token_dict.get, self._token_unk_id
        return [get(token, unk_id) for token in tokens]

    def id_to_token(self, i):
        """Returns the token of id ``i``; raises ``KeyError`` for an unknown id."""
        return self._token_dict_inv[i]

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
            return (self._token_unk,)
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
                return (self._token_unk,)
            tokens.append(piece)
            start = end
        return tuple(tokens)

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

        Example:
            >>> tokenizer = Tokenizer({"hello": 0, "world": 1, "##s": 2, "你": 3, "好": 4})
            >>> tokenizer.decode([0, 1, 2, 3, 4])
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
            >>> tokenizer = Tokenizer({"[CLS]": 0, "[SEP]": 1, "cafe": 2}, do_lower_case=True)
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
        if len(token) > 1:
            for ch in _stem(token):
                if _uni.is_cjk_character(ch) or _uni.is_punctuation(ch):
                    return True
        return False


# At the end: SpTokenizer subclasses TokenizerBase defined above.
from kerasformers._sp_tokenizer import SpTokenizer  # noqa: E402
