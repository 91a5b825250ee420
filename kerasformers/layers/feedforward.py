"""Position-wise feed-forward block."""

import keras

from kerasformers.backend import activation_name, dense, get_activation, recompute_grad


@keras.saving.register_keras_serializable(package="kerasformers")
class FeedForward(keras.layers.Layer):
    """Two dense layers, `o_dense(act(i_dense(x)))`; gated when given several activations.

    With `activation=["gelu", "linear"]` the hidden state is the product
    `gelu(i0_dense(x)) * i1_dense(x)` (GLU variants, T5 v1.1).

    Args:
        units: hidden (intermediate) width.
        activation: activation name/callable, or a list of them for the gated form.
        use_bias: biases in the dense layers.
        kernel_initializer: initializer of the kernels.

    Reference:
        https://arxiv.org/abs/2002.05202 (GLU variants)
    """

    def __init__(
        self,
        units,
        activation="relu",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = units
        if not isinstance(activation, (list, tuple)):
            activation = [activation]
        self.activation = [get_activation(a) for a in activation]
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        out_dim = input_shape[-1]
        self.input_denses = []
        for i, activation in enumerate(self.activation):
            dense = keras.layers.Dense(
                self.units,
                activation=activation,
                use_bias=self.use_bias,
                kernel_initializer=self.kernel_initializer,
                dtype=self.dtype_policy,
                name="i_dense" if len(self.activation) == 1 else f"i{i}_dense",
            )
            dense.build(input_shape)
            self.input_denses.append(dense)
        self.o_dense = keras.layers.Dense(
            out_dim,
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="o_dense",
        )
        self.o_dense.build(tuple(input_shape[:-1]) + (self.units,))

    @recompute_grad
    def call(self, inputs):
        # `dense` skips the sub-layers' __call__ overhead and fuses the bias on torch.
        x = dense(self.input_denses[0], inputs)
        for layer in self.input_denses[1:]:
            x = x * dense(layer, inputs)
        return dense(self.o_dense, x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        activation = [activation_name(a) for a in self.activation]
        config.update(
            {
                "units": self.units,
                "activation": activation[0] if len(activation) == 1 else activation,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
