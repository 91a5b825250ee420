"""What every tokenizer shares: vocab files, truncation and `TokenizerBase`.

`TokenizerBase` holds bert4keras' encoding logic (start/end tokens, pair
patterns, truncation); `Tokenizer` (WordPiece) and `SpTokenizer`
(SentencePiece) fill in how a text becomes tokens and tokens become ids.
`truncate_sequences` lives here, not in `kerasformers.snippets` (which
re-exports it), so the tokenizers load without Keras.
"""

import os

from kerasformers.tokenizers import unicode as _uni

__all__ = ["TokenizerBase", "load_vocab", "save_vocab", "truncate_sequences"]


def _stem(token):
    return token[2:] if token[:2] == "##" else token


def _is_redundant(token):
    """Whether WordPiece can never output ``token`` (see ``load_vocab``)."""
    if len(token) > 1:
        for ch in _stem(token):
            if _uni.is_cjk_character(ch) or _uni.is_punctuation(ch):
                return True
    return False


def _check_text(text, name="text"):
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}")


def _short_repr(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def truncate_sequences(maxlen, indices, *sequences):
    """Pops from the longest sequence (the first on ties) until the total fits.

    Args:
        maxlen: the largest total length allowed.
        indices: the position to pop from, one for all or one per sequence
            (bert4keras pops at -2 to keep a trailing [SEP]).
        *sequences: lists, truncated in place; None or empty ones are skipped.

    Returns:
        The non-empty sequences.

    Raises:
        ValueError: if ``indices`` has the wrong length, or ``maxlen`` is too
            small to pop at the given index.

    Example:
        >>> first, second = [1, 2, 3, 4], [5, 6]
        >>> truncate_sequences(4, -1, first, second)
        [[1, 2], [5, 6]]
    """
    if isinstance(indices, (list, tuple)):
        if len(indices) != len(sequences):
            raise ValueError(
                f"truncate_sequences: got {len(indices)} indices for {len(sequences)} sequences"
            )
        # Keep each index with its own sequence when None/empty ones are skipped.
        indices = [i for i, s in zip(indices, sequences, strict=True) if s]
    sequences = [s for s in sequences if s]
    if not isinstance(indices, (list, tuple)):
        indices = [indices] * len(sequences)
    lengths = [len(s) for s in sequences]
    total = sum(lengths)
    while total > maxlen:
        i = lengths.index(max(lengths))
        index = indices[i]
        if not -lengths[i] <= index < lengths[i]:
            raise ValueError(
                f"maxlen={maxlen} is too small: cannot pop index {index} from a "
                f"sequence of {lengths[i]} tokens"
            )
        sequences[i].pop(index)
        lengths[i] -= 1
        total -= 1
    return sequences


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
        if token not in new_token_dict and not _is_redundant(token):
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
        >>> from kerasformers.tokenizers import Tokenizer
        >>> tokenizer = Tokenizer({"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "hi": 3})
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
        # bert4keras took a str, or anything else as a list of tokens (which then
        # mapped to the unknown id if it held, say, ids): only str tokens pass here.
        if isinstance(text, str):
            return self.tokenize(text)
        if isinstance(text, (list, tuple)):
            for position, token in enumerate(text):
                if not isinstance(token, str):
                    raise TypeError(
                        f"{name} must be a text (str) or a list of str tokens, got a "
                        f"{type(text).__name__} whose item {position} is of type "
                        f"{type(token).__name__} ({_short_repr(text)}); ids are not "
                        "encoded again (to turn ids into text, use decode)"
                    )
            return list(text)
        raise TypeError(
            f"{name} must be a text (str) or a list of str tokens, got "
            f"{type(text).__name__} ({_short_repr(text)})"
        )

    def encode(
        self, first_text, second_text=None, maxlen=None, pattern="S*E*E", truncate_from="right"
    ):
        """Returns the token ids and segment ids of a text or a text pair.

        With ``maxlen``, tokens are popped one at a time from the longer
        sequence (the first on ties), from its end just before the end token
        (``truncate_from="right"``), from just after the start token
        (``"left"``), or at a given integer index, until the total fits.

        Args:
            first_text: a str, or a list of str tokens (already with start/end),
                as bert4keras accepted.
            second_text: optional second str or list of str tokens.
            maxlen: the largest total number of ids.
            pattern: ``"S*E*E"`` (BERT: the second sequence loses its start
                token) or ``"S*ES*E"`` (it keeps it).
            truncate_from: ``"right"``, ``"left"`` or an int index.

        Returns:
            ``(token_ids, segment_ids)``; segment ids are 0 for the first
            sequence and 1 for the second.

        Raises:
            TypeError: if a text is neither a str nor a list of str tokens
                (e.g. a list of ids: bert4keras silently encoded those as
                unknown tokens).

        Example:
            >>> from kerasformers.tokenizers import Tokenizer
            >>> tokenizer = Tokenizer({"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "a": 3, "b": 4})
            >>> tokenizer.encode("a a", "b")
            ([1, 3, 3, 2, 4, 2], [0, 0, 0, 0, 1, 1])
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
