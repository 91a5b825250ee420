"""Token and position embeddings."""

import keras
from keras import ops

from kerasformers.backend import check_ids_in_range


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
        kernel = ops.cast(self.embeddings, self.compute_dtype)
        # (batch, seq, hidden) x (vocab, hidden)^T -> (batch, seq, vocab)
        return ops.matmul(inputs, ops.transpose(kernel))

    def compute_output_shape(self, input_shape, mode="embedding"):
        self._check_mode(mode)
        if mode == "dense":
            return tuple(input_shape[:-1]) + (self.input_dim,)
        return super().compute_output_shape(input_shape)

    def compute_output_spec(self, inputs, mode="embedding"):
        shape = self.compute_output_shape(inputs.shape, mode=mode)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)


@keras.saving.register_keras_serializable(package="kerasformers")
class PositionEmbedding(keras.layers.Layer):
    """Trainable absolute position embedding (BERT's), merged into its input.

    Args:
        input_dim: number of positions (max_position).
        output_dim: embedding width.
        merge_mode: how to combine with the input: "add", "mul", "zero" (return the
            position embedding alone) or "concat".
        hierarchical: None, or the alpha of hierarchical decomposition (True means
            0.4) to extend a trained table past `input_dim` positions.
        embeddings_initializer: initializer of the table.
        custom_position_ids: if True, call with `[x, position_ids]`.

    Reference:
        Hierarchical decomposition: https://kexue.fm/archives/7947
    """

    def __init__(
        self,
        input_dim,
        output_dim,
        merge_mode="add",
        hierarchical=None,
        embeddings_initializer="zeros",
        custom_position_ids=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if merge_mode not in ("add", "mul", "zero", "concat"):
            raise ValueError(f"merge_mode must be one of add/mul/zero/concat, got {merge_mode!r}")
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.merge_mode = merge_mode
        self.hierarchical = hierarchical
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.custom_position_ids = custom_position_ids

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
        )

    def call(self, inputs):
        if self.custom_position_ids:
            inputs, position_ids = inputs
            position_ids = ops.cast(position_ids, "int32")
        else:
            seq_len = ops.shape(inputs)[1]
            if isinstance(seq_len, int) and seq_len > self.input_dim and not self.hierarchical:
                raise ValueError(
                    f"{self.name}: input length {seq_len} exceeds the {self.input_dim} "
                    "positions of the table (max_position); truncate the input or pass "
                    "hierarchical_position=True"
                )
            position_ids = ops.expand_dims(ops.arange(seq_len, dtype="int32"), 0)
        embeddings = ops.cast(self.embeddings, self.compute_dtype)
        if self.hierarchical:
            alpha = 0.4 if self.hierarchical is True else self.hierarchical
            embeddings = (embeddings - alpha * embeddings[:1]) / (1 - alpha)
            high = ops.take(embeddings, position_ids // self.input_dim, axis=0)
            low = ops.take(embeddings, position_ids % self.input_dim, axis=0)
            positions = alpha * high + (1 - alpha) * low
        else:
            positions = ops.take(embeddings, position_ids, axis=0)  # (1|batch, seq, dim)

        if self.merge_mode == "add":
            return inputs + positions
        if self.merge_mode == "mul":
            return inputs * (positions + 1.0)
        if self.merge_mode == "zero":
            return ops.broadcast_to(positions, ops.shape(inputs)[:2] + (self.output_dim,))
        positions = ops.broadcast_to(positions, ops.shape(inputs)[:2] + (self.output_dim,))
        return ops.concatenate([inputs, positions], axis=-1)

    def compute_output_shape(self, input_shape):
        if self.custom_position_ids:
            input_shape = input_shape[0]
        if self.merge_mode == "concat":
            return tuple(input_shape[:2]) + (input_shape[2] + self.output_dim,)
        if self.merge_mode == "zero":
            return tuple(input_shape[:2]) + (self.output_dim,)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "input_dim": self.input_dim,
                "output_dim": self.output_dim,
                "merge_mode": self.merge_mode,
                "hierarchical": self.hierarchical,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
                "custom_position_ids": self.custom_position_ids,
            }
        )
        return config
