"""bert4keras' `SpTokenizer`: a SentencePiece model used like `Tokenizer`."""

import os

from kerasformers.tokenizers.base import TokenizerBase

__all__ = ["SpTokenizer"]


class SpTokenizer(TokenizerBase):
    """bert4keras' wrapper of a SentencePiece model, used like ``Tokenizer``.

    Args:
        sp_model_path: path of the ``.model`` file.
        token_start: token put first; ``None`` by default (T5/mT5 style).
        token_end: token put last; ``"</s>"`` by default.
        pre_tokenize: optional callable; its pieces are joined with spaces
            before SentencePiece sees the text.
        token_translate: optional ``{token: token}`` replacements, reversed
            by ``decode``.

    Raises:
        FileNotFoundError: if ``sp_model_path`` does not exist.
        ImportError: if the ``sentencepiece`` package is not installed.

    Example:
        >>> tokenizer = SpTokenizer("spiece.model")  # doctest: +SKIP
        >>> ids, _ = tokenizer.encode("Hello world")  # doctest: +SKIP
        >>> tokenizer.decode(ids)  # doctest: +SKIP
        'Hello world'
    """

    def __init__(self, sp_model_path, token_start=None, token_end="</s>", **kwargs):
        super().__init__(token_start=token_start, token_end=token_end, **kwargs)
        if not os.path.isfile(sp_model_path):
            raise FileNotFoundError(f"sentencepiece model not found: {sp_model_path}")
        import sentencepiece as spm

        self.sp_model = spm.SentencePieceProcessor()
        self.sp_model.Load(str(sp_model_path))
        self._vocab_size = self.sp_model.get_piece_size()
        # A model trained without a pad (or unk) piece reports id -1.
        pad_id, unk_id = self.sp_model.pad_id(), self.sp_model.unk_id()
        self._token_pad = self.sp_model.id_to_piece(pad_id) if pad_id >= 0 else None
        self._token_unk = self.sp_model.id_to_piece(unk_id) if unk_id >= 0 else None
        for name in ("pad", "unk", "mask", "start", "end"):
            token = getattr(self, f"_token_{name}")
            setattr(self, f"_token_{name}_id", self._piece_id(token))

    def _piece_id(self, piece):
        if piece is None:
            return None
        i = self.sp_model.piece_to_id(piece)
        # piece_to_id answers the unk id for unknown pieces; None is clearer.
        if i == self.sp_model.unk_id() and piece != self._token_unk:
            return None
        return i

    @property
    def vocab_size(self):
        """Number of pieces in the model."""
        return self._vocab_size

    def token_to_id(self, token):
        """Returns the id of ``token`` (the model's unknown id if absent)."""
        return self.sp_model.piece_to_id(token)

    def id_to_token(self, i):
        """Returns the piece of id ``i``, or ``""`` past the vocab."""
        i = int(i)  # sentencepiece rejects NumPy integers
        if 0 <= i < self._vocab_size:
            return self.sp_model.id_to_piece(i)
        return ""

    def decode(self, ids):
        """Turns ids back into text with SentencePiece's ``DecodePieces``.

        Args:
            ids: token ids; control pieces (like ``</s>``) decode to nothing.

        Returns:
            The text.
        """
        tokens = [self._token_translate_inv.get(t) or t for t in self.ids_to_tokens(ids)]
        return self.sp_model.decode_pieces(tokens)

    def _tokenize(self, text):
        if self._pre_tokenize is not None:
            text = " ".join(self._pre_tokenize(text))
        return self.sp_model.encode_as_pieces(text)

    def _is_special(self, i):
        """Whether id ``i`` is a control, unknown or unused piece."""
        i = int(i)
        return (
            self.sp_model.is_control(i) or self.sp_model.is_unknown(i) or self.sp_model.is_unused(i)
        )

    def _is_decodable(self, i):
        """Whether id ``i`` should appear in decoded text."""
        return i < self._vocab_size and not self._is_special(i)
