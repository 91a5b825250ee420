"""Layer normalisation, plain or conditional."""

import keras
from keras import ops

from kerasformers.backend import activation_name, get_activation, layer_norm, recompute_grad


@keras.saving.register_keras_serializable(package="kerasformers")
class LayerNormalization(keras.layers.Layer):
    """Layer normalisation over the last axis, optionally conditional.

    With `conditional=True` the layer is called on `[x, cond]` and gamma/beta are
    shifted by dense projections of `cond` (initialised to zero, so a pretrained
    model starts unchanged): the "Conditional Layer Normalization" of bert4keras.
    Statistics are computed in at least float32 whatever the dtype policy.

    Args:
        center: learn the bias beta.
        scale: learn the gain gamma.
        epsilon: added to the variance (default 1e-12, BERT's).
        zero_mean: subtract the mean first; False gives RMS normalisation
            x / sqrt(mean(x^2) + epsilon) (RoFormer-v2, T5).
        conditional: condition gamma/beta on a second input.
        hidden_units: if set, `cond` is first projected to this width.
        hidden_activation: activation of that projection.
        hidden_initializer: initializer of that projection.
        unit_offset: the gain is 1 + gamma (gamma starts at 0), applied in
            float32 before the cast back (Gemma's RMS norm).

    Reference:
        https://kexue.fm/archives/7124
    """

    def __init__(
        self,
        center=True,
        scale=True,
        epsilon=None,
        zero_mean=True,
        conditional=False,
        hidden_units=None,
        hidden_activation="linear",
        hidden_initializer="glorot_uniform",
        unit_offset=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.center = center
        self.scale = scale
        self.epsilon = epsilon or 1e-12
        self.zero_mean = zero_mean
        self.conditional = conditional
        self.hidden_units = hidden_units
        self.hidden_activation = get_activation(hidden_activation)
        self.hidden_initializer = keras.initializers.get(hidden_initializer)
        self.unit_offset = unit_offset
        if unit_offset and (zero_mean or conditional):
            raise ValueError(f"{self.name}: unit_offset is for plain RMS norms (zero_mean=False)")

    def build(self, input_shape):
        shape = (input_shape[0][-1],) if self.conditional else (input_shape[-1],)
        if self.center:
            self.beta = self.add_weight(name="beta", shape=shape, initializer="zeros")
        if self.scale:
            self.gamma = self.add_weight(
                name="gamma", shape=shape, initializer="zeros" if self.unit_offset else "ones"
            )
        if self.conditional:
            if self.hidden_units is not None:
                self.hidden_dense = keras.layers.Dense(
                    self.hidden_units,
                    activation=self.hidden_activation,
                    use_bias=False,
                    kernel_initializer=self.hidden_initializer,
                    dtype=self.dtype_policy,
                    name="hidden_dense",
                )
                self.hidden_dense.build(input_shape[1])
            cond_dim = self.hidden_units or input_shape[1][-1]
            if self.center:
                self.beta_dense = keras.layers.Dense(
                    shape[0],
                    use_bias=False,
                    kernel_initializer="zeros",
                    dtype=self.dtype_policy,
                    name="beta_dense",
                )
                self.beta_dense.build((None, cond_dim))
            if self.scale:
                self.gamma_dense = keras.layers.Dense(
                    shape[0],
                    use_bias=False,
                    kernel_initializer="zeros",
                    dtype=self.dtype_policy,
                    name="gamma_dense",
                )
                self.gamma_dense.build((None, cond_dim))

    @recompute_grad
    def call(self, inputs):
        if self.conditional:
            inputs, cond = inputs
            if self.hidden_units is not None:
                cond = self.hidden_dense(cond)
            # cond is (batch, dim) or (batch, seq, dim): broadcast over the sequence.
            for _ in range(len(inputs.shape) - len(cond.shape)):
                cond = ops.expand_dims(cond, 1)
        if not self.conditional:
            # The fused kernel (torch's F.layer_norm) computes in float32 internally.
            gamma = self.gamma if self.scale else None
            beta = self.beta if self.center else None
            return self._normalize(inputs, gamma, beta)
        x = self._normalize(inputs)
        if self.scale:
            x = x * ops.cast(self.gamma + self.gamma_dense(cond), x.dtype)
        if self.center:
            x = x + ops.cast(self.beta + self.beta_dense(cond), x.dtype)
        return x

    def _normalize(self, x, gamma=None, beta=None):
        if self.zero_mean:
            return layer_norm(x, gamma, beta, epsilon=self.epsilon)
        # RMS norm, statistics in float32 (bfloat16 squares lose too much).
        x32 = ops.cast(x, "float32")
        x32 = x32 * ops.rsqrt(ops.mean(ops.square(x32), axis=-1, keepdims=True) + self.epsilon)
        if self.unit_offset:
            if gamma is not None:
                x32 = x32 * (1.0 + ops.cast(gamma, "float32"))
            return ops.cast(x32, x.dtype)
        out = ops.cast(x32, x.dtype)
        if gamma is not None:
            out = out * ops.cast(gamma, x.dtype)
        if beta is not None:
            out = out + ops.cast(beta, x.dtype)
        return out

    def compute_output_shape(self, input_shape):
        return input_shape[0] if self.conditional else input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "center": self.center,
                "scale": self.scale,
                "epsilon": self.epsilon,
                "zero_mean": self.zero_mean,
                "conditional": self.conditional,
                "hidden_units": self.hidden_units,
                "hidden_activation": activation_name(self.hidden_activation),
                "hidden_initializer": keras.initializers.serialize(self.hidden_initializer),
                "unit_offset": self.unit_offset,
            }
        )
        return config
