"""The token embedding (also the tied output projection)."""

import keras

from kerasformers.backend import check_ids_in_range, tied_dense


@keras.saving.register_keras_serializable(package="kerasformers")
class Embedding(keras.layers.Embedding):
    """A token embedding that doubles as the tied output projection.

    `layer(ids)` looks tokens up; `layer(x, mode="dense")` multiplies hidden states
    by the transposed embedding matrix, which is how BERT's MLM head shares its
    output weights with the input embedding (bert4keras' `Embedding`).

    Example:
        >>> emb = Embedding(100, 16, name="Embedding-Token")
        >>> h = emb(keras.ops.ones((2, 5), "int32"))        # (2, 5, 16)
        >>> logits = emb(h, mode="dense")                 # (2, 5, 100)
    """

    def _check_mode(self, mode):
        if mode not in ("embedding", "dense"):
            raise ValueError(f"{self.name}: mode must be 'embedding' or 'dense', got {mode!r}")

    def call(self, inputs, mode="embedding"):
        self._check_mode(mode)
        if mode == "embedding":
            check_ids_in_range(inputs, self.input_dim, self.name)
            return super().call(inputs)
        # (batch, seq, hidden) x (vocab, hidden)^T -> (batch, seq, vocab)
        return tied_dense(inputs, self.embeddings.value)

    def decode_call(self, decoding, inputs, mode="embedding"):
        if mode == "dense":
            # As a tied LM head, only the last token's logits are read by generation.
            inputs = inputs[:, -1:]
        return self.call(inputs, mode=mode)

    def compute_output_shape(self, input_shape, mode="embedding"):
        self._check_mode(mode)
        if mode == "dense":
            return tuple(input_shape[:-1]) + (self.input_dim,)
        return super().compute_output_shape(input_shape)

    def compute_output_spec(self, inputs, mode="embedding"):
        shape = self.compute_output_shape(inputs.shape, mode=mode)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)
