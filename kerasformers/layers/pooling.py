"""Mask-aware sequence pooling and sequence concatenation."""

import keras
from keras import ops

from kerasformers.backend import sequence_masking


def _pooling_mask(layer, inputs, mask):
    """The (batch, seq_len) mask as float32, checked against the input."""
    if len(inputs.shape) != 3:
        raise ValueError(
            f"{layer.name}: expects a (batch, seq_len, features) input "
            f"(or (batch, features, seq_len) with channels_first), got shape {tuple(inputs.shape)}"
        )
    if len(mask.shape) != 2:
        raise ValueError(
            f"{layer.name}: mask must have shape (batch, seq_len), got {tuple(mask.shape)}"
        )
    return ops.cast(mask, "float32")


@keras.saving.register_keras_serializable(package="kerasformers")
class GlobalAveragePooling1D(keras.layers.GlobalAveragePooling1D):
    """Mean over the sequence axis of the real (unmasked) positions only.

    Takes the Keras mask of its input, or one given explicitly, e.g.
    `layer(x, mask=keras.ops.not_equal(token_ids, 0))` for a model whose
    layers do not carry Keras masks. A row with no real position gives zeros.
    Same arguments as `keras.layers.GlobalAveragePooling1D`.

    Example:
        >>> pooled = GlobalAveragePooling1D()(hidden, mask=keras.ops.not_equal(ids, 0))
    """

    def call(self, inputs, mask=None):
        axis = 1 if self.data_format == "channels_last" else 2
        if mask is None:
            return ops.mean(inputs, axis=axis, keepdims=self.keepdims)
        mask = _pooling_mask(self, inputs, mask)
        # (batch, seq, 1) or (batch, 1, seq), to broadcast over the features
        mask = ops.expand_dims(mask, 2 if axis == 1 else 1)
        # Sum in float32: half-precision sums over long sequences lose digits.
        total = ops.sum(ops.cast(inputs, "float32") * mask, axis=axis, keepdims=self.keepdims)
        count = ops.sum(mask, axis=axis, keepdims=self.keepdims)
        return ops.cast(total / ops.maximum(count, 1.0), inputs.dtype)


@keras.saving.register_keras_serializable(package="kerasformers")
class GlobalMaxPooling1D(keras.layers.GlobalMaxPooling1D):
    """Max over the sequence axis of the real (unmasked) positions only.

    Mask as for `GlobalAveragePooling1D`; a row with no real position gives
    zeros. Same arguments as `keras.layers.GlobalMaxPooling1D`.

    Example:
        >>> pooled = GlobalMaxPooling1D()(hidden, mask=keras.ops.not_equal(ids, 0))
    """

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(data_format=data_format, keepdims=keepdims, **kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        axis = 1 if self.data_format == "channels_last" else 2
        if mask is None:
            return ops.max(inputs, axis=axis, keepdims=self.keepdims)
        mask = _pooling_mask(self, inputs, mask)
        pooled = ops.max(sequence_masking(inputs, mask, "-inf", axis), axis=axis, keepdims=True)
        any_real = ops.max(mask, axis=1)[:, None, None] > 0  # (batch, 1, 1)
        pooled = ops.where(any_real, pooled, ops.zeros_like(pooled))
        return pooled if self.keepdims else ops.squeeze(pooled, axis=axis)

    def compute_mask(self, inputs, mask=None):
        return None


@keras.saving.register_keras_serializable(package="kerasformers")
class Concatenate1D(keras.layers.Layer):
    """Concatenates sequences along the sequence axis, concatenating their masks.

    Inputs without a mask count as all real, so a masked and an unmasked
    sequence join cleanly (Keras' own Concatenate merges masks along the
    feature axis and fails on such a mix).

    Example:
        >>> joined = Concatenate1D()([prefix_states, token_states])  # (batch, m + n, dim)
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def _check(self, shapes):
        if not isinstance(shapes, (list, tuple)) or len(shapes) < 2:
            raise ValueError(f"{self.name}: expects a list of at least two sequences")
        rest = [tuple(shape[2:]) for shape in shapes]
        if any(len(shape) < 2 for shape in shapes) or any(r != rest[0] for r in rest):
            raise ValueError(
                f"{self.name}: sequences must share every axis but the sequence axis (1), "
                f"got shapes {[tuple(shape) for shape in shapes]}"
            )

    def call(self, inputs):
        self._check([x.shape for x in inputs])
        return ops.concatenate(inputs, axis=1)

    def compute_mask(self, inputs, mask=None):
        if mask is None or all(m is None for m in mask):
            return None
        masks = []
        for x, m in zip(inputs, mask, strict=True):
            if m is None:
                # all real; ones_like keeps a symbolic batch/sequence size
                while len(x.shape) > 2:
                    x = x[..., 0]
                m = ops.ones_like(x, dtype="bool")  # (batch, seq_len)
            masks.append(ops.cast(m, "bool"))
        return ops.concatenate(masks, axis=1)

    def compute_output_shape(self, input_shape):
        self._check(input_shape)
        lengths = [shape[1] for shape in input_shape]
        seq_len = None if any(n is None for n in lengths) else sum(lengths)
        return (input_shape[0][0], seq_len) + tuple(input_shape[0][2:])
