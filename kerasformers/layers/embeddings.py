"""Token and position embeddings."""

import keras
from keras import ops

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

    def compute_output_shape(self, input_shape, mode="embedding"):
        self._check_mode(mode)
        if mode == "dense":
            return tuple(input_shape[:-1]) + (self.input_dim,)
        return super().compute_output_shape(input_shape)

    def compute_output_spec(self, inputs, mode="embedding"):
        shape = self.compute_output_shape(inputs.shape, mode=mode)
        return keras.KerasTensor(shape, dtype=self.compute_dtype)


_MERGE_MODES = ("add", "mul", "zero", "concat")


def _merge(inputs, positions, merge_mode, output_dim):
    """Combines (1|batch, seq, dim) position embeddings with the input."""
    if merge_mode == "add":
        return inputs + positions
    if merge_mode == "mul":
        return inputs * (positions + 1.0)
    positions = ops.broadcast_to(positions, ops.shape(inputs)[:2] + (output_dim,))
    if merge_mode == "zero":
        return positions
    return ops.concatenate([inputs, positions], axis=-1)


def _merged_shape(input_shape, custom_position_ids, merge_mode, output_dim):
    if custom_position_ids:
        input_shape = input_shape[0]
    if merge_mode == "concat":
        return tuple(input_shape[:2]) + (input_shape[2] + output_dim,)
    if merge_mode == "zero":
        return tuple(input_shape[:2]) + (output_dim,)
    return tuple(input_shape)


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

    Cached generation calls it as `layer(x, position_ids=ids)` with explicit
    (1|batch, seq) ids (the positions of the new tokens) instead of 0..seq-1.

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
        if merge_mode not in _MERGE_MODES:
            raise ValueError(f"merge_mode must be one of {_MERGE_MODES}, got {merge_mode!r}")
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

    def call(self, inputs, position_ids=None):
        if self.custom_position_ids:
            inputs, position_ids = inputs
        if position_ids is not None:
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

        return _merge(inputs, positions, self.merge_mode, self.output_dim)

    def compute_output_shape(self, input_shape):
        return _merged_shape(
            input_shape, self.custom_position_ids, self.merge_mode, self.output_dim
        )

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


def _sinusoid(positions, dim):
    """(2D float positions) -> (..., dim): [sin(p*w_0), cos(p*w_0), sin(p*w_1), ...],
    w_i = 10000^(-2i/dim)."""
    freqs = ops.power(10000.0, -2.0 * ops.arange(dim // 2, dtype="float32") / dim)
    # (a, b) x (dim/2,) -> (a, b, dim/2)
    angles = ops.einsum("ab,d->abd", positions, freqs)
    # (a, b, dim/2, 2) -> (a, b, dim), interleaved sin/cos
    table = ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1)
    return ops.reshape(table, ops.shape(positions) + (dim,))


@keras.saving.register_keras_serializable(package="kerasformers")
class SinusoidalPositionEmbedding(keras.layers.Layer):
    """Fixed sine/cosine position embedding, merged into its input.

    Features are interleaved: [sin(p*w_0), cos(p*w_0), sin(p*w_1), cos(p*w_1), ...]
    with w_i = 10000^(-2i/output_dim); with merge_mode="zero" the table is what
    `backend.apply_rotary_position_embeddings` expects (RoFormer, GlobalPointer).

    Args:
        output_dim: embedding width (even).
        merge_mode: "add", "mul", "zero" (return the table alone) or "concat".
        custom_position_ids: if True, call with `[x, position_ids]`; cached
            generation instead passes `position_ids=` (1|batch, seq) to the call.

    Example:
        >>> pos = SinusoidalPositionEmbedding(64, merge_mode="zero")
        >>> table = pos(keras.ops.zeros((2, 10, 8)))        # (2, 10, 64)

    Reference:
        https://arxiv.org/abs/1706.03762
    """

    def __init__(self, output_dim, merge_mode="add", custom_position_ids=False, **kwargs):
        super().__init__(**kwargs)
        if merge_mode not in _MERGE_MODES:
            raise ValueError(f"merge_mode must be one of {_MERGE_MODES}, got {merge_mode!r}")
        if output_dim % 2:
            raise ValueError(
                f"SinusoidalPositionEmbedding: output_dim must be even, got {output_dim}"
            )
        self.output_dim = output_dim
        self.merge_mode = merge_mode
        self.custom_position_ids = custom_position_ids

    def call(self, inputs, position_ids=None):
        if self.custom_position_ids:
            inputs, position_ids = inputs
        if position_ids is not None:
            position_ids = ops.cast(position_ids, "float32")
        else:
            position_ids = ops.arange(ops.shape(inputs)[1], dtype="float32")[None]
        table = ops.cast(_sinusoid(position_ids, self.output_dim), self.compute_dtype)
        return _merge(inputs, table, self.merge_mode, self.output_dim)

    def compute_output_shape(self, input_shape):
        return _merged_shape(
            input_shape, self.custom_position_ids, self.merge_mode, self.output_dim
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "output_dim": self.output_dim,
                "merge_mode": self.merge_mode,
                "custom_position_ids": self.custom_position_ids,
            }
        )
        return config


def _positions(explicit, x):
    """1-D int32 positions: the explicit ones, or 0..len(x)-1."""
    if explicit is not None:
        return ops.cast(explicit, "int32")
    return ops.arange(ops.shape(x)[1], dtype="int32")


@keras.saving.register_keras_serializable(package="kerasformers")
class RelativePositionEmbedding(keras.layers.Layer):
    """Fixed sinusoidal embedding of clipped relative positions (NEZHA's "functional" one).

    Called on `[q, k]` (only their lengths matter; cached generation passes 1-D
    `query_positions` / `key_positions` instead), returns the (q_len, k_len,
    output_dim) table whose entry (i, j) embeds clip(j - i, -m, m) with
    m = (input_dim - 1) // 2. Row r = clip(j - i) + m of the table is
    [sin(r*w_0), cos(r*w_0), sin(r*w_1), ...], w_k = 10000^(-2k/output_dim), which
    is how NEZHA (and bert4keras) fill it: the offset row index, not the signed
    distance, is what goes into the sines.

    Args:
        input_dim: number of distinct relative positions, 2 * max_relative_position + 1.
        output_dim: embedding width (the attention key size).

    Example:
        >>> rel = RelativePositionEmbedding(2 * 64 + 1, 64)
        >>> table = rel([x, x])                             # (seq, seq, 64)

    Reference:
        https://arxiv.org/abs/1909.00204 (NEZHA), https://arxiv.org/abs/1803.02155
    """

    def __init__(self, input_dim, output_dim, **kwargs):
        super().__init__(**kwargs)
        if input_dim < 1 or input_dim % 2 == 0:
            raise ValueError(
                f"RelativePositionEmbedding: input_dim must be odd (2 * max + 1), got {input_dim}"
            )
        if output_dim % 2:
            raise ValueError(
                f"RelativePositionEmbedding: output_dim must be even, got {output_dim}"
            )
        self.input_dim = input_dim
        self.output_dim = output_dim

    def call(self, inputs, query_positions=None, key_positions=None):
        q, k = inputs[:2]
        max_distance = (self.input_dim - 1) // 2
        q_idx = _positions(query_positions, q)
        k_idx = _positions(key_positions, k)
        # (q_len, k_len) offset rows in [0, input_dim)
        rows = ops.clip(k_idx[None, :] - q_idx[:, None], -max_distance, max_distance)
        rows = ops.cast(rows + max_distance, "float32")
        return ops.cast(_sinusoid(rows, self.output_dim), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][1], input_shape[1][1], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"input_dim": self.input_dim, "output_dim": self.output_dim})
        return config
