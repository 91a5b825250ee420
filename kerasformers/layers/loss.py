"""The `Loss` layer: losses that need more than (y_true, y_pred), defined in the graph."""

import keras
from keras import ops


def _pick(items, output_axis):
    """items, items[output_axis], or [items[i] for i in output_axis]."""
    if output_axis is None:
        return items
    if isinstance(output_axis, (list, tuple)):
        return [items[i] for i in output_axis]
    return items[output_axis]


@keras.saving.register_keras_serializable(package="kerasformers")
class Loss(keras.layers.Layer):
    """Base class of layers that add a loss computed from any tensors of the model.

    Subclass it and implement `compute_loss(inputs, mask=None)`; calling the
    layer adds that loss to the model (`add_loss`) and returns the inputs
    selected by `output_axis`. Feed labels in as model inputs, compile without
    a loss, and `fit(x)` with no y: bert4keras' way to train seq2seq models,
    contrastive losses and anything else a (y_true, y_pred) loss cannot express.

    The loss is taken in float32; a non-scalar loss is averaged (Keras itself
    would sum it).

    Args:
        output_axis: which inputs to return: None (all of them, as given), an
            index, or a list of indices.

    Example:
        >>> class CrossEntropy(Loss):
        ...     def compute_loss(self, inputs, mask=None):
        ...         y_true, y_pred = inputs
        ...         return keras.ops.mean(
        ...             keras.losses.sparse_categorical_crossentropy(y_true, y_pred))
        >>> probs = CrossEntropy(output_axis=1)([labels_in, probs])
        >>> model = keras.Model([token_ids_in, labels_in], probs)
        >>> model.compile(optimizer="adam")
        >>> model.fit([token_ids, labels])

    Reference:
        bert4keras' `Loss` layer (https://github.com/bojone/bert4keras); the
        seq2seq and SimBERT examples train through it.
    """

    def __init__(self, output_axis=None, **kwargs):
        super().__init__(**kwargs)
        if not (
            output_axis is None
            or isinstance(output_axis, int)
            or (
                isinstance(output_axis, (list, tuple))
                and all(isinstance(i, int) for i in output_axis)
            )
        ):
            raise ValueError(
                f"{type(self).__name__}: output_axis must be None, an int or a list of ints, "
                f"got {output_axis!r}"
            )
        self.output_axis = list(output_axis) if isinstance(output_axis, tuple) else output_axis
        self.supports_masking = True

    def compute_loss(self, inputs, mask=None):
        """The loss tensor of `inputs` (a scalar, ideally); subclasses implement it."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement compute_loss(inputs, mask=None)"
        )

    def _check_axis(self, inputs):
        if self.output_axis is None:
            return
        if not isinstance(inputs, (list, tuple)):
            raise ValueError(
                f"{self.name}: output_axis={self.output_axis} needs a list of inputs, "
                "got a single tensor"
            )
        axes = self.output_axis if isinstance(self.output_axis, list) else [self.output_axis]
        for i in axes:
            if not -len(inputs) <= i < len(inputs):
                raise ValueError(
                    f"{self.name}: output_axis {i} is out of range for {len(inputs)} inputs"
                )

    def call(self, inputs, mask=None):
        self._check_axis(inputs)
        loss = ops.cast(self.compute_loss(inputs, mask), "float32")
        if len(loss.shape) > 0:
            loss = ops.mean(loss)
        self.add_loss(loss)
        return _pick(inputs, self.output_axis)

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        if self.output_axis is not None and not isinstance(mask, (list, tuple)):
            return None
        return _pick(mask, self.output_axis)

    def get_config(self):
        return {**super().get_config(), "output_axis": self.output_axis}
