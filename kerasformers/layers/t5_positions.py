"""T5's bucketed relative position bias."""

import functools

import keras
from keras import ops


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
    Cached generation passes 1-D int32 `query_positions` / `key_positions`,
    which replace arange(q_len) / arange(k_len) (one query at step t against a
    fixed-size key cache).

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

    # Tells cached generation to pass query_positions / key_positions.
    takes_query_key_positions = True

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
