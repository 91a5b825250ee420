"""GlobalPointer heads: every (start, end) span scored at once, for nested NER."""

import keras
from keras import ops

from kerasformers.backend import (
    apply_rotary_position_embeddings,
    infinity,
    recompute_grad,
    sequence_masking,
)
from kerasformers.layers.positions import SinusoidalPositionEmbedding


def _mask_spans(logits, mask, tril_mask):
    """-infinity on spans touching padding and, if tril_mask, on spans with end < start.

    logits: (batch, heads, start, end).
    """
    logits = sequence_masking(logits, mask, "-inf", 2)
    logits = sequence_masking(logits, mask, "-inf", 3)
    if tril_mask:
        seq_len = ops.shape(logits)[-1]
        positions = ops.arange(seq_len)
        # (start, end): True where end >= start
        upper = ops.greater_equal(positions[None, :], positions[:, None])
        logits = ops.where(upper, logits, ops.cast(-infinity(), logits.dtype))
    return logits


@keras.saving.register_keras_serializable(package="kerasformers")
class GlobalPointer(keras.layers.Layer):
    """Scores every span (start, end) of a sequence for each of `heads` entity types.

    Per head, start i and end j get query q_i and key k_j from one projection of
    the hidden states; the span score is q_i . k_j / sqrt(head_size), with
    rotary position embeddings (RoPE) on q and k so the score sees the relative
    distance. Spans touching padding (Keras mask, or an explicit `mask=`) and,
    with tril_mask, spans ending before they start are set to -infinity. A
    span is predicted where its score is > 0; train with
    `backend.multilabel_categorical_crossentropy` on the scores reshaped to
    (batch * heads, seq_len^2). Gradient checkpointing as for the other layers
    (`recompute` attribute or RECOMPUTE=1, see `backend.recompute_grad`).

    Args:
        heads: number of span types.
        head_size: width of each query and key (even when RoPE is used).
        RoPE: rotate queries and keys by position (bert4keras' argument name).
        use_bias: bias in the projection.
        tril_mask: mask the lower triangle (end < start).
        kernel_initializer: initializer of the projection.

    Input: (batch, seq_len, hidden). Output: (batch, heads, seq_len, seq_len).

    Example:
        >>> scores = GlobalPointer(heads=num_types, head_size=64)(hidden, mask=token_mask)

    Reference:
        https://kexue.fm/archives/8373
    """

    def __init__(
        self,
        heads,
        head_size,
        RoPE=True,
        use_bias=True,
        tril_mask=True,
        kernel_initializer="lecun_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if RoPE and head_size % 2:
            raise ValueError(
                f"{type(self).__name__}: head_size must be even with RoPE=True, got {head_size}"
            )
        self.heads = heads
        self.head_size = head_size
        self.RoPE = RoPE
        self.use_bias = use_bias
        self.tril_mask = tril_mask
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    def _dense(self, units, name):
        return keras.layers.Dense(
            units,
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name=name,
        )

    def _check_input(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(
                f"{self.name}: expects hidden states of shape (batch, seq_len, hidden), "
                f"got {tuple(input_shape)}"
            )

    def build(self, input_shape):
        self._check_input(input_shape)
        self.dense = self._dense(self.heads * self.head_size * 2, "dense")
        self.dense.build(input_shape)
        self._build_rope(input_shape)

    def _build_rope(self, input_shape):
        # No weights: the table of RoPE angles, rebuilt for each input length.
        self.position_embedding = SinusoidalPositionEmbedding(
            self.head_size, merge_mode="zero", dtype=self.dtype_policy, name="rope"
        )
        self.position_embedding.build(input_shape)

    def _rotate(self, qw, kw, inputs):
        """RoPE on (batch, seq_len, [heads,] head_size) queries and keys."""
        if not self.RoPE:
            return qw, kw
        # `.call`: the table needs no mask handling (and would warn about the mask)
        table = self.position_embedding.call(inputs)  # (batch, seq_len, head_size)
        if len(qw.shape) == 4:
            table = ops.expand_dims(table, 2)  # broadcast over heads
        return apply_rotary_position_embeddings(table, qw, kw)

    @recompute_grad
    def call(self, inputs, mask=None):
        self._check_input(inputs.shape)
        x = self.dense(inputs)
        # (batch, seq_len, heads * 2 * head_size) -> (batch, seq_len, heads, 2 * head_size)
        x = ops.reshape(x, ops.shape(x)[:2] + (self.heads, 2 * self.head_size))
        qw, kw = self._rotate(x[..., : self.head_size], x[..., self.head_size :], inputs)
        # (batch, start, heads, size) x (batch, end, heads, size) -> (batch, heads, start, end)
        logits = ops.einsum("bmhd,bnhd->bhmn", qw, kw) / self.head_size**0.5
        return _mask_spans(logits, mask, self.tril_mask)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.heads, input_shape[1], input_shape[1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "heads": self.heads,
                "head_size": self.head_size,
                "RoPE": self.RoPE,
                "use_bias": self.use_bias,
                "tril_mask": self.tril_mask,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="kerasformers")
class EfficientGlobalPointer(GlobalPointer):
    """GlobalPointer with the span-matching part shared by all heads.

    One projection gives a shared query and key per token; each head only adds
    its own start and end biases, read off the projected features:
    score_h(i, j) = q_i . k_j / sqrt(head_size) + start_h(i) + end_h(j). Far fewer
    parameters than GlobalPointer for many span types, with comparable accuracy
    in the reference's experiments. Same arguments, input and output.

    Example:
        >>> scores = EfficientGlobalPointer(heads=num_types, head_size=64)(hidden)

    Reference:
        https://kexue.fm/archives/8877
    """

    def build(self, input_shape):
        self._check_input(input_shape)
        self.p_dense = self._dense(self.head_size * 2, "p_dense")
        self.p_dense.build(input_shape)
        self.q_dense = self._dense(self.heads * 2, "q_dense")
        self.q_dense.build(tuple(input_shape[:2]) + (self.head_size * 2,))
        self._build_rope(input_shape)

    @recompute_grad
    def call(self, inputs, mask=None):
        self._check_input(inputs.shape)
        x = self.p_dense(inputs)  # (batch, seq_len, 2 * head_size)
        # Query and key features interleave: (q0, k0, q1, k1, ...)
        qw, kw = self._rotate(x[..., ::2], x[..., 1::2], inputs)
        # (batch, start, size) x (batch, end, size) -> (batch, start, end)
        logits = ops.einsum("bmd,bnd->bmn", qw, kw) / self.head_size**0.5
        # (batch, seq_len, 2 * heads) -> (batch, 2 * heads, seq_len); halved as in the paper
        bias = ops.transpose(self.q_dense(x), (0, 2, 1)) / 2
        # even rows score the end token, odd rows the start token of a span
        logits = logits[:, None] + bias[:, ::2, None] + bias[:, 1::2, :, None]
        return _mask_spans(logits, mask, self.tril_mask)
