"""Position layers: absolute (learned, sinusoidal), NEZHA's relative and T5's bucketed.

Each says how it moves during cached generation through `decode_call`: absolute
positions come from `decoding.positions` (counted from each row's first real
token), relative ones from the query / key cache slots.
"""

import functools

import keras
from keras import ops

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


class _MergedPositions(keras.layers.Layer):
    """What the absolute position layers share: merging into the input, and moving
    along with cached generation (the pass's `positions`)."""

    def check_decode_length(self, decoding):
        """Hook: raise if the table cannot hold `decoding.length` positions."""

    def decode_call(self, decoding, inputs, position_ids=None):
        self.check_decode_length(decoding)
        if self.custom_position_ids:
            return self.call(inputs)  # the position input carries decoding.positions
        return self.call(inputs, position_ids=decoding.positions)

    def compute_output_shape(self, input_shape):
        return _merged_shape(
            input_shape, self.custom_position_ids, self.merge_mode, self.output_dim
        )


@keras.saving.register_keras_serializable(package="kerasformers")
class PositionEmbedding(_MergedPositions):
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

    In cached generation (`decode_call`) the new tokens' positions come from
    the pass (`decoding.positions`, counted from each row's first real token).

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

    def check_decode_length(self, decoding):
        if not self.hierarchical and decoding.length > self.input_dim:
            raise ValueError(
                f"generate: the prompt plus max_new_tokens needs {decoding.length} positions "
                f"but {self.name} has {self.input_dim} (max_position); shorten the prompt "
                "or max_new_tokens"
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
class SinusoidalPositionEmbedding(_MergedPositions):
    """Fixed sine/cosine position embedding, merged into its input.

    Features are interleaved: [sin(p*w_0), cos(p*w_0), sin(p*w_1), cos(p*w_1), ...]
    with w_i = 10000^(-2i/output_dim); with merge_mode="zero" the table is what
    `backend.apply_rotary_position_embeddings` expects (RoFormer, GlobalPointer).

    Args:
        output_dim: embedding width (even).
        merge_mode: "add", "mul", "zero" (return the table alone) or "concat".
        custom_position_ids: if True, call with `[x, position_ids]`.

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


@keras.saving.register_keras_serializable(package="kerasformers")
class RelativePositionEmbedding(keras.layers.Layer):
    """Fixed sinusoidal embedding of clipped relative positions (NEZHA's "functional" one).

    Called on `[q, k]` (only their lengths matter; 1-D `query_positions` /
    `key_positions` override arange(len), as cached generation does), returns the (q_len, k_len,
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

    def decode_call(self, decoding, inputs):
        return self.call(
            inputs, query_positions=decoding.query_slots, key_positions=decoding.key_slots
        )

    def compute_output_shape(self, input_shape):
        return (input_shape[0][1], input_shape[1][1], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update({"input_dim": self.input_dim, "output_dim": self.output_dim})
        return config


def _check_buckets(num_buckets, max_distance, bidirectional, name):
    """The bucket rule needs at least one exact and one logarithmic bucket per direction."""
    for value, what in ((num_buckets, "num_buckets"), (max_distance, "max_distance")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name}: {what} must be an integer, got {value!r}")
    per_direction = num_buckets // 2 if bidirectional else num_buckets
    max_exact = per_direction // 2
    if max_exact < 1:
        least = 4 if bidirectional else 2
        raise ValueError(
            f"{name}: num_buckets must be >= {least} "
            f"({'bidirectional' if bidirectional else 'unidirectional'}), got {num_buckets}"
        )
    if max_distance <= max_exact:
        raise ValueError(
            f"{name}: max_distance must exceed the {max_exact} exactly bucketed distances "
            f"(num_buckets={num_buckets}), got {max_distance}"
        )


@functools.lru_cache(maxsize=64)
def _distance_buckets(num_buckets, max_distance):
    """Bucket of each distance 0..max_distance in one direction (`num_buckets` of them).

    Distances below max_exact = num_buckets // 2 have their own bucket; a larger
    distance n gets max_exact + floor(log(n / max_exact) / log(max_distance /
    max_exact) * (num_buckets - max_exact)), at most num_buckets - 1. The floor
    is the largest k with (max_distance / max_exact) ** k <= (n / max_exact) **
    (num_buckets - max_exact), compared in exact integers: float32 logarithms
    (mesh-tensorflow, HF) land exactly on an integer at some boundaries (n = 10
    for max_exact 1, max_distance 100), where XLA's log rounds below it and
    torch's does not.
    """
    max_exact = num_buckets // 2
    steps = num_buckets - max_exact
    table = list(range(max_exact))
    for n in range(max_exact, max_distance + 1):
        k = 0
        while k < steps and max_distance ** (k + 1) * max_exact**steps <= n**steps * max_exact ** (
            k + 1
        ):
            k += 1
        table.append(min(max_exact + k, num_buckets - 1))
    return tuple(table)


def t5_relative_position_bucket(
    relative_position, bidirectional=True, num_buckets=32, max_distance=128
):
    """Maps relative positions (key index - query index) to T5's bucket ids.

    Per direction, half of the buckets hold the distances 0, 1, ... exactly; the
    other half cover larger distances on a log scale up to `max_distance`, and
    everything beyond shares the last bucket. Bidirectional (encoder) buckets
    split in two: keys after the query use the upper half. Unidirectional
    (decoder) buckets only tell how far back a key is (keys ahead map to 0).
    Ids agree with mesh-tensorflow's and HF's `_relative_position_bucket`; the
    log-scale boundaries are computed exactly (see `_distance_buckets`).

    Args:
        relative_position: int tensor of key index - query index.
        bidirectional: whether keys after the query get their own buckets.
        num_buckets: number of buckets (all directions together).
        max_distance: distance from which the last bucket is used.

    Returns:
        int32 tensor of bucket ids in [0, num_buckets), shaped like the input.

    Example:
        >>> rel = keras.ops.arange(5)[None, :] - keras.ops.arange(5)[:, None]
        >>> t5_relative_position_bucket(rel, bidirectional=False, num_buckets=32)

    Reference:
        https://arxiv.org/abs/1910.10683 (T5, section 2.1)
    """
    _check_buckets(num_buckets, max_distance, bidirectional, "t5_relative_position_bucket")
    relative_position = ops.cast(relative_position, "int32")
    if bidirectional:
        num_buckets //= 2
        offset = ops.cast(relative_position > 0, "int32") * num_buckets
        distance = ops.abs(relative_position)
    else:
        offset = 0
        distance = -ops.minimum(relative_position, 0)
    table = ops.convert_to_tensor(_distance_buckets(num_buckets, max_distance), "int32")
    # Every distance from max_distance on shares the last bucket.
    return offset + ops.take(table, ops.minimum(distance, max_distance), axis=0)


@keras.saving.register_keras_serializable(package="kerasformers")
class RelativePositionEmbeddingT5(keras.layers.Layer):
    """T5's learned relative position bias, one scalar per head and bucket.

    Called on `[q, k]` (only their lengths matter), returns the additive
    attention bias (1, heads, q_len, k_len) whose entry (h, i, j) is the table
    row of bucket(j - i) at column h (see `t5_relative_position_bucket`). A
    T5 stack computes it once, in its first layer, and every layer reuses it.
    1-D int32 `query_positions` / `key_positions` replace arange(q_len) /
    arange(k_len); cached generation passes the cache slots (one query at step
    t against a fixed-size key cache).

    Args:
        input_dim: number of buckets (HF's relative_attention_num_buckets).
        output_dim: number of attention heads.
        max_distance: distance from which the last bucket is used
            (HF's relative_attention_max_distance).
        bidirectional: True in the encoder, False in the (causal) decoder.
        embeddings_initializer: initializer of the (input_dim, output_dim) table.

    Example:
        >>> rel = RelativePositionEmbeddingT5(32, 8, bidirectional=False)
        >>> bias = rel([x, x])                                 # (1, 8, len, len)
        >>> step = rel([x_t, x_t], query_positions=[t],
        ...            key_positions=keras.ops.arange(cache_len))  # (1, 8, 1, cache_len)

    Reference:
        https://arxiv.org/abs/1910.10683 (T5)
    """

    def __init__(
        self,
        input_dim,
        output_dim,
        max_distance=128,
        bidirectional=True,
        embeddings_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_buckets(input_dim, max_distance, bidirectional, "RelativePositionEmbeddingT5")
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
        )

    def call(self, inputs, query_positions=None, key_positions=None):
        q, k = inputs[:2]
        q_idx = _positions(query_positions, q)
        k_idx = _positions(key_positions, k)
        # (q_len, k_len) key index - query index
        relative = k_idx[None, :] - q_idx[:, None]
        buckets = t5_relative_position_bucket(
            relative, self.bidirectional, self.input_dim, self.max_distance
        )
        table = ops.cast(self.embeddings, self.compute_dtype)
        # (q_len, k_len, heads) -> (1, heads, q_len, k_len)
        bias = ops.take(table, buckets, axis=0)
        return ops.expand_dims(ops.transpose(bias, (2, 0, 1)), 0)

    def decode_call(self, decoding, inputs):
        return self.call(
            inputs, query_positions=decoding.query_slots, key_positions=decoding.key_slots
        )

    def compute_output_shape(self, input_shape):
        return (1, self.output_dim, input_shape[0][1], input_shape[1][1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "input_dim": self.input_dim,
                "output_dim": self.output_dim,
                "max_distance": self.max_distance,
                "bidirectional": self.bidirectional,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
            }
        )
        return config


def _positions(explicit, x):
    """1-D int32 positions: the explicit ones, or 0..len(x)-1."""
    if explicit is not None:
        return ops.reshape(ops.cast(explicit, "int32"), (-1,))
    return ops.arange(ops.shape(x)[1], dtype="int32")
