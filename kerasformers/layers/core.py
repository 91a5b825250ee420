"""Small utility layers the builders use."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasformers")
class BiasAdd(keras.layers.Layer):
    """Adds a trainable bias on the last axis (BERT's MLM output bias)."""

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(input_shape[-1],), initializer="zeros")

    def call(self, inputs):
        return inputs + ops.cast(self.bias, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="kerasformers")
class TakePosition(keras.layers.Layer):
    """Selects one sequence position: (batch, seq, dim) -> (batch, dim).

    A serialisable stand-in for bert4keras' `Lambda(lambda x: x[:, 0])` pooler.

    Args:
        index: the position to keep (negative counts from the end).
    """

    def __init__(self, index=0, **kwargs):
        super().__init__(**kwargs)
        self.index = index

    def call(self, inputs):
        return ops.take(inputs, self.index, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[2:])

    def get_config(self):
        return {**super().get_config(), "index": self.index}


@keras.saving.register_keras_serializable(package="kerasformers")
class OutputActivation(keras.layers.Activation):
    """The activation at the end of an LM head ("MLM-Activation", "LM-Activation").

    A `keras.layers.Activation`; cached generation works on logits, so while
    decoding a softmax (or linear) head passes its logits through unchanged.
    """

    def decode_call(self, decoding, inputs):
        name = getattr(self.activation, "__name__", str(self.activation))
        if name not in ("softmax", "linear"):
            raise ValueError(
                f"generate needs a softmax or linear LM head, but {self.name} applies {name!r}"
            )
        return inputs


@keras.saving.register_keras_serializable(package="kerasformers")
class Scale(keras.layers.Layer):
    """Multiplies its input by a constant held in the input's dtype.

    Gemma scales its token embeddings by sqrt(hidden_size), with the constant
    rounded to the compute dtype first as HF does.

    Args:
        factor: the constant.
    """

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = float(factor)

    def call(self, inputs):
        return inputs * ops.cast(self.factor, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
