"""Base optimizers of `kerasformers.optimizers`: bert4keras' Adam, AdaFactor and AdaX."""

import re

import keras
import numpy as np
from keras import ops


def variable_path(variable):
    """The name patterns are matched against: the variable's path ("layer/kernel").

    Keras 3 variable names are bare ("kernel"); the path carries the layer name,
    as the TF 1.x names bert4keras matched against did.
    """
    return getattr(variable, "path", None) or variable.name


def string_matching(variable, patterns):
    """Whether any regular expression in `patterns` is found in the variable's path."""
    path = variable_path(variable)
    return any(re.search(pattern, path) for pattern in patterns)


def check_patterns(patterns, argument):
    """Validates a list of name patterns (a lone string counts as a list of one)."""
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, (list, tuple)) or not all(isinstance(p, str) for p in patterns):
        raise TypeError(
            f"{argument} must be a list of strings (regular expressions searched in "
            f"variable paths, e.g. ['Norm', 'bias']), got {patterns!r}"
        )
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as err:
            raise ValueError(f"{argument}: {pattern!r} is not a valid regular expression") from err
    return list(patterns)


def check_number(value, argument, low=None, high=None, low_open=False):
    """Validates a real number within [low, high] ((low, high] if `low_open`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{argument} must be a number, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        bounds = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'}]"
        raise ValueError(f"{argument} must be in {bounds}, got {value!r}")
    return float(value)


def dense_gradient(gradient, variable):
    """The gradient as a dense tensor of the variable's dtype.

    TensorFlow hands embeddings `tf.IndexedSlices` (recognised here by their
    attributes, without importing TensorFlow); Keras' `add` densifies them.
    """
    if hasattr(gradient, "indices") and hasattr(gradient, "dense_shape"):
        gradient = ops.add(ops.zeros(variable.shape, dtype=gradient.dtype), gradient)
    return ops.cast(gradient, variable.dtype)


def rms(x):
    """Root mean square of all entries of `x`."""
    return ops.sqrt(ops.mean(ops.square(x)))


@keras.saving.register_keras_serializable(package="kerasformers")
class Adam(keras.optimizers.Adam):
    """Adam as bert4keras defines it: epsilon added after bias correction.

    The update is `x -= lr * m_hat / (sqrt(v_hat) + epsilon)` with
    `m_hat = m / (1 - beta_1^t)` and `v_hat = v / (1 - beta_2^t)`. Keras' own
    Adam adds epsilon to the uncorrected `sqrt(v)`; with bert4keras' default
    `epsilon=1e-6` the two differ in the first steps, so ported scripts get
    the numbers they had.

    Args:
        learning_rate: float, `LearningRateSchedule` or callable.
        beta_1: decay rate of the first moment.
        beta_2: decay rate of the second moment.
        epsilon: added to `sqrt(v_hat)` (bert4keras' default 1e-6).
        bias_correction: divide the moments by `1 - beta^t` (False: plain EMAs).
        amsgrad: use the running maximum of `v` (Keras' AMSGrad option).
        **kwargs: Keras optimizer arguments (`clipnorm`, `global_clipnorm`,
            `loss_scale_factor`, `name`, ...).

    Example:
        >>> model.compile(loss="mse", optimizer=Adam(1e-5))

    Reference:
        https://arxiv.org/abs/1412.6980
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-6,
        bias_correction=True,
        amsgrad=False,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=amsgrad,
            **kwargs,
        )
        self.bias_correction = bias_correction

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = dense_gradient(gradient, variable)
        index = self._get_variable_index(variable)
        m = self._momentums[index]
        v = self._velocities[index]
        self.assign(m, m * self.beta_1 + gradient * (1 - self.beta_1))
        self.assign(v, v * self.beta_2 + ops.square(gradient) * (1 - self.beta_2))
        m_t, v_t = m.value, v.value
        if self.amsgrad:
            v_hat = self._velocity_hats[index]
            self.assign(v_hat, ops.maximum(v_hat, v_t))
            v_t = v_hat.value
        if self.bias_correction:
            step = ops.cast(self.iterations + 1, dtype)
            m_t = m_t / (1 - ops.power(ops.cast(self.beta_1, dtype), step))
            v_t = v_t / (1 - ops.power(ops.cast(self.beta_2, dtype), step))
        self.assign_sub(variable, lr * m_t / (ops.sqrt(v_t) + self.epsilon))

    def get_config(self):
        return {**super().get_config(), "bias_correction": self.bias_correction}


@keras.saving.register_keras_serializable(package="kerasformers")
class AdaX(keras.optimizers.Optimizer):
    """AdaX: Adam whose second moment accumulates with growing weight.

    `m = beta_1 m + (1 - beta_1) g`, `v = (1 + beta_2) v + beta_2 g^2`, and
    `x -= lr * m / (sqrt(v / ((1 + beta_2)^t - 1)) + epsilon)`: the second
    moment never forgets, which keeps the step size from exploding late in
    training. `m` is not bias-corrected (as in bert4keras' implementation).

    Args:
        learning_rate: float, `LearningRateSchedule` or callable.
        beta_1: decay rate of the first moment.
        beta_2: growth rate of the second moment (small: 1e-4).
        epsilon: added to the corrected `sqrt(v)`.
        **kwargs: Keras optimizer arguments.

    Example:
        >>> model.compile(loss="mse", optimizer=AdaX(learning_rate=1e-3))

    Reference:
        https://arxiv.org/abs/2004.09740
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=1e-4, epsilon=1e-6, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta_1 = check_number(beta_1, "AdaX: beta_1", 0.0, 1.0)
        self.beta_2 = check_number(beta_2, "AdaX: beta_2", 0.0, low_open=True)
        self.epsilon = check_number(epsilon, "AdaX: epsilon", 0.0)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(
            var_list, ["momentum", "velocity"]
        )

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = dense_gradient(gradient, variable)
        step = ops.cast(self.iterations + 1, dtype)
        index = self._get_variable_index(variable)
        m = self._momentums[index]
        v = self._velocities[index]
        self.assign(m, m * self.beta_1 + gradient * (1 - self.beta_1))
        self.assign(v, v * (1 + self.beta_2) + ops.square(gradient) * self.beta_2)
        v_hat = v.value / (ops.power(ops.cast(1 + self.beta_2, dtype), step) - 1)
        self.assign_sub(variable, lr * m.value / (ops.sqrt(v_hat) + self.epsilon))

    def get_config(self):
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
        }


@keras.saving.register_keras_serializable(package="kerasformers")
class AdaFactor(keras.optimizers.Optimizer):
    """AdaFactor: Adam-like steps with a factored second moment (bert4keras' version).

    For a variable of rank >= 2 whose second-largest dimension is at least
    `min_dim_size_to_factor`, the second moment is kept as two vectors, the mean
    of `g^2 + epsilon1` over the largest axis (`vr`) and over the second-largest
    (`vc`), and rebuilt as `vr * vc / mean(vr)`: memory O(n + m) instead of O(nm).
    Smaller variables keep a full `v`. Then `u = g / sqrt(v + epsilon1)`, clipped
    to RMS `clipping_threshold`, optionally averaged with momentum `beta1`,
    scaled by `max(rms(x), epsilon2)` and applied as `x -= lr * u`.

    Args:
        learning_rate: float, or None for the relative step
            `min(1 / sqrt(t), 0.01)` (times 0.05 without parameter scaling).
        beta1: momentum of the update; 0 keeps no first moment (saves memory).
        beta2: decay of the second moment; None gives `1 - t^-0.8`.
        epsilon1: added to the squared gradient.
        epsilon2: floor of the parameter scale `rms(x)`.
        multiply_by_parameter_scale: scale updates by `rms(x)`.
        clipping_threshold: maximum RMS of the update before momentum (None: off).
        min_dim_size_to_factor: factor only when the second-largest dimension
            is at least this.
        exclude_from_parameter_scale: regular expressions searched in variable
            paths; matches are not scaled by `rms(x)`.
        **kwargs: Keras optimizer arguments.

    Example:
        >>> model.compile(loss="mse", optimizer=AdaFactor(learning_rate=1e-3))

    Reference:
        https://arxiv.org/abs/1804.04235 (https://kexue.fm/archives/7302)
    """

    def __init__(
        self,
        learning_rate=1e-3,
        beta1=0.0,
        beta2=None,
        epsilon1=1e-30,
        epsilon2=1e-3,
        multiply_by_parameter_scale=True,
        clipping_threshold=1.0,
        min_dim_size_to_factor=128,
        exclude_from_parameter_scale=None,
        **kwargs,
    ):
        # Keras wants a float learning rate; the relative step replaces it below.
        super().__init__(learning_rate=0.0 if learning_rate is None else learning_rate, **kwargs)
        self.relative_step = learning_rate is None
        self.beta1 = check_number(beta1, "AdaFactor: beta1", 0.0, 1.0)
        if beta1 == 1.0:
            raise ValueError("AdaFactor: beta1 must be < 1, got 1.0")
        self.beta2 = None if beta2 is None else check_number(beta2, "AdaFactor: beta2", 0.0, 1.0)
        self.epsilon1 = check_number(epsilon1, "AdaFactor: epsilon1", 0.0)
        self.epsilon2 = check_number(epsilon2, "AdaFactor: epsilon2", 0.0)
        self.multiply_by_parameter_scale = bool(multiply_by_parameter_scale)
        if clipping_threshold is not None:
            clipping_threshold = check_number(
                clipping_threshold, "AdaFactor: clipping_threshold", 0.0, low_open=True
            )
        self.clipping_threshold = clipping_threshold
        if isinstance(min_dim_size_to_factor, bool) or not isinstance(min_dim_size_to_factor, int):
            raise TypeError(
                f"AdaFactor: min_dim_size_to_factor must be an int, got {min_dim_size_to_factor!r}"
            )
        self.min_dim_size_to_factor = min_dim_size_to_factor
        self.exclude_from_parameter_scale = check_patterns(
            exclude_from_parameter_scale, "AdaFactor: exclude_from_parameter_scale"
        )

    def _get_current_learning_rate(self):
        if not self.relative_step:
            return super()._get_current_learning_rate()
        step = ops.cast(self.iterations + 1, "float32")
        lr = ops.minimum(1.0 / ops.sqrt(step), 0.01)
        return lr if self.multiply_by_parameter_scale else lr * 0.05

    def factored_shape(self, shape):
        """(shape of vr, axis it averages, shape of vc, axis it averages), or None.

        vr averages over the largest axis and vc over the second largest (ties
        broken as `np.argpartition` breaks them, like bert4keras).
        """
        if len(shape) < 2:
            return None
        shape = np.array(shape)
        indices = shape.argpartition(-2)
        if shape[indices[-2]] < self.min_dim_size_to_factor:
            return None
        shape_r, shape_c = shape.copy(), shape.copy()
        shape_r[indices[-1]] = 1
        shape_c[indices[-2]] = 1
        return tuple(shape_r.tolist()), int(indices[-1]), tuple(shape_c.tolist()), int(indices[-2])

    def _add_slot(self, variable, shape, name):
        prefix = variable_path(variable).replace("/", "_")
        slot = self.add_variable(shape=shape, dtype=variable.dtype, name=f"{prefix}_{name}")
        # Lets extensions (lazy optimization) find the slots of a variable.
        self._note_slot(variable, slot)
        return slot

    def _note_slot(self, variable, slot):
        pass

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._v, self._vr, self._vc = [], [], [], []
        for variable in var_list:
            self._momentums.append(
                self.add_variable_from_reference(variable, "momentum") if self.beta1 > 0 else None
            )
            factored = self.factored_shape(tuple(variable.shape))
            if factored is None:
                self._v.append(self.add_variable_from_reference(variable, "velocity"))
                self._vr.append(None)
                self._vc.append(None)
            else:
                self._v.append(None)
                self._vr.append(self._add_slot(variable, factored[0], "velocity_r"))
                self._vc.append(self._add_slot(variable, factored[2], "velocity_c"))

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = dense_gradient(gradient, variable)
        if self.beta2 is None:
            beta2 = 1.0 - ops.power(ops.cast(self.iterations + 1, dtype), -0.8)
        else:
            beta2 = ops.cast(self.beta2, dtype)
        index = self._get_variable_index(variable)
        g2 = ops.square(gradient) + self.epsilon1
        factored = self.factored_shape(tuple(variable.shape))
        if factored is None:
            v = self._v[index]
            self.assign(v, beta2 * v + (1.0 - beta2) * g2)
            v_t = v.value
        else:
            _, axis_r, _, axis_c = factored
            vr, vc = self._vr[index], self._vc[index]
            self.assign(vr, beta2 * vr + (1.0 - beta2) * ops.mean(g2, axis=axis_r, keepdims=True))
            self.assign(vc, beta2 * vc + (1.0 - beta2) * ops.mean(g2, axis=axis_c, keepdims=True))
            # Rank-1 rebuild of the full second moment, broadcast to variable.shape.
            v_t = vr.value * vc.value / ops.mean(vr.value, axis=axis_c, keepdims=True)
        update = gradient / ops.sqrt(v_t + self.epsilon1)
        if self.clipping_threshold is not None:
            update = update / ops.maximum(1.0, rms(update) / self.clipping_threshold)
        if self.beta1 > 0:
            m = self._momentums[index]
            self.assign(m, self.beta1 * m + (1.0 - self.beta1) * update)
            update = m.value
        if self.multiply_by_parameter_scale and not string_matching(
            variable, self.exclude_from_parameter_scale
        ):
            update = update * ops.maximum(rms(variable.value), self.epsilon2)
        self.assign_sub(variable, lr * update)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "learning_rate": None if self.relative_step else config["learning_rate"],
                "beta1": self.beta1,
                "beta2": self.beta2,
                "epsilon1": self.epsilon1,
                "epsilon2": self.epsilon2,
                "multiply_by_parameter_scale": self.multiply_by_parameter_scale,
                "clipping_threshold": self.clipping_threshold,
                "min_dim_size_to_factor": self.min_dim_size_to_factor,
                "exclude_from_parameter_scale": list(self.exclude_from_parameter_scale),
            }
        )
        return config
