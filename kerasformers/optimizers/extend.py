"""The `extend_with_*` factories of `kerasformers.optimizers` (bert4keras' derived optimizers).

Each factory takes an optimizer class and returns a NEW subclass that adds one
feature; they stack. bert4keras intercepted `K.update`; here every feature is a
plain override of the Keras 3 optimizer API:

- per-variable features (weight decay, layer adaptation, lazy optimization,
  lookahead, parameter-wise learning rates) wrap `update_step`, running code
  before and after the base class' update of one variable;
- the piecewise-linear learning rate scales `_get_current_learning_rate`;
- gradient accumulation and EMA switch on Keras' own `gradient_accumulation_steps`
  and `use_ema`.

Stacking order follows bert4keras: the feature added first (innermost) sees the
base update first, e.g. in `extend_with_layer_adaptation(extend_with_weight_decay(Adam))`
the trust ratio normalises the Adam step *including* the decay term (LAMB).
"""

import warnings

import keras
import numpy as np
from keras import ops

from kerasformers.backend import piecewise_linear
from kerasformers.optimizers.base import (
    check_number,
    check_patterns,
    string_matching,
    variable_path,
)

# name -> recipe (base module, base name, factory): warns when one name is
# reused for a different optimizer, which would make saved models load the wrong class.
_RECIPES = {}


def _check_base(BaseOptimizer, factory):
    if not (
        isinstance(BaseOptimizer, type) and issubclass(BaseOptimizer, keras.optimizers.Optimizer)
    ):
        raise TypeError(
            f"{factory}: BaseOptimizer must be an optimizer class (a subclass of "
            "keras.optimizers.Optimizer, e.g. kerasformers.optimizers.Adam), got "
            f"{BaseOptimizer!r}"
        )
    if hasattr(BaseOptimizer, "_parallel_update_step"):
        # torch's fused optimizers never call update_step, so no feature would apply.
        raise TypeError(
            f"{factory}: {BaseOptimizer.__name__} is a backend-specific fused optimizer "
            "class; pass the keras.optimizers (or kerasformers.optimizers) class instead"
        )


def _finish(cls, BaseOptimizer, name, suffix, factory):
    """Names the new class and registers it for `.keras` saving under that name."""
    if name is None:
        name = f"{BaseOptimizer.__name__}With{suffix}"
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{factory}: name must be a Python identifier string, got {name!r}")
    recipe = (BaseOptimizer.__module__, BaseOptimizer.__qualname__, factory)
    if _RECIPES.get(name, recipe) != recipe:
        warnings.warn(
            f"{factory}: the optimizer name {name!r} was already registered for a "
            f"different optimizer ({_RECIPES[name][2]} of {_RECIPES[name][1]}); models "
            "saved with the old class will now load with the new one. Pass a distinct "
            "name= to avoid this.",
            stacklevel=3,
        )
    _RECIPES[name] = recipe
    cls.__name__ = cls.__qualname__ = name
    cls.__module__ = "kerasformers.optimizers"
    return keras.saving.register_keras_serializable(package="kerasformers", name=name)(cls)


def extend_with_weight_decay(BaseOptimizer, name=None):
    """Adds decoupled weight decay: `x <- x - lr * weight_decay_rate * x` each step.

    The decay is computed from the value before the step and added to the base
    optimizer's update (so an outer layer adaptation normalises both together).

    Args:
        BaseOptimizer: the optimizer class to extend.
        name: name of the new class (the name it is saved under); default
            "<Base>WithWeightDecay".

    New constructor arguments:
        weight_decay_rate: decay coefficient (default 0.01).
        exclude_from_weight_decay: regular expressions searched in variable
            paths ("layer/kernel"); matching variables are not decayed,
            e.g. ["Norm", "bias"].

    Example:
        >>> AdamW = extend_with_weight_decay(Adam, "AdamW")
        >>> opt = AdamW(1e-5, weight_decay_rate=0.01, exclude_from_weight_decay=["Norm", "bias"])

    Reference:
        https://arxiv.org/abs/1711.05101 (https://kexue.fm/archives/7094)
    """
    _check_base(BaseOptimizer, "extend_with_weight_decay")

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, weight_decay_rate=0.01, exclude_from_weight_decay=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.weight_decay_rate = check_number(weight_decay_rate, "weight_decay_rate", 0.0)
            # Shadows Keras' exclude_from_weight_decay() method, which configures
            # Keras' own `weight_decay`; bert4keras' argument name wins here.
            self.exclude_from_weight_decay = check_patterns(
                exclude_from_weight_decay, "exclude_from_weight_decay"
            )

        def _do_weight_decay(self, variable):
            return self.weight_decay_rate > 0 and not string_matching(
                variable, self.exclude_from_weight_decay
            )

        def update_step(self, gradient, variable, learning_rate):
            if not self._do_weight_decay(variable):
                return super().update_step(gradient, variable, learning_rate)
            rate = ops.cast(learning_rate, variable.dtype) * self.weight_decay_rate
            decay = variable.value * rate  # from the value before this step
            super().update_step(gradient, variable, learning_rate)
            self.assign_sub(variable, decay)

        def get_config(self):
            return {
                **super().get_config(),
                "weight_decay_rate": self.weight_decay_rate,
                "exclude_from_weight_decay": list(self.exclude_from_weight_decay),
            }

    return _finish(NewOptimizer, BaseOptimizer, name, "WeightDecay", "extend_with_weight_decay")


def extend_with_layer_adaptation(BaseOptimizer, name=None):
    """Adds LAMB's layer adaptation: each variable's step becomes `lr * ||x||` long.

    The base update `u` (weight decay included when added before) is multiplied
    by the trust ratio `||x|| / ||u / lr||`: it keeps its direction and moves
    every variable by the same fraction `lr` of its norm. A zero variable or a
    zero update is left unscaled.

    Args:
        BaseOptimizer: the optimizer class to extend.
        name: name of the new class; default "<Base>WithLayerAdaptation".

    New constructor arguments:
        exclude_from_layer_adaptation: regular expressions searched in
            variable paths; matching variables keep the base update.

    Example:
        >>> LAMB = extend_with_layer_adaptation(extend_with_weight_decay(Adam), "LAMB")

    Reference:
        https://arxiv.org/abs/1904.00962 (https://kexue.fm/archives/7094)
    """
    _check_base(BaseOptimizer, "extend_with_layer_adaptation")

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, exclude_from_layer_adaptation=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.exclude_from_layer_adaptation = check_patterns(
                exclude_from_layer_adaptation, "exclude_from_layer_adaptation"
            )

        def _do_layer_adaptation(self, variable):
            return not string_matching(variable, self.exclude_from_layer_adaptation)

        def update_step(self, gradient, variable, learning_rate):
            if not self._do_layer_adaptation(variable):
                return super().update_step(gradient, variable, learning_rate)
            old = ops.copy(variable.value)
            super().update_step(gradient, variable, learning_rate)
            delta = variable.value - old
            lr = ops.maximum(ops.cast(learning_rate, variable.dtype), keras.config.epsilon())
            x_norm = ops.sqrt(ops.sum(ops.square(old)))
            u_norm = ops.sqrt(ops.sum(ops.square(delta / lr)))
            positive = ops.logical_and(x_norm > 0, u_norm > 0)
            ratio = ops.where(positive, x_norm / ops.where(positive, u_norm, 1.0), 1.0)
            self.assign(variable, old + delta * ratio)

        def get_config(self):
            return {
                **super().get_config(),
                "exclude_from_layer_adaptation": list(self.exclude_from_layer_adaptation),
            }

    return _finish(
        NewOptimizer, BaseOptimizer, name, "LayerAdaptation", "extend_with_layer_adaptation"
    )


def _check_lr_schedule(lr_schedule):
    if not isinstance(lr_schedule, dict) or not lr_schedule:
        raise TypeError(
            "lr_schedule must be a non-empty dict {step: multiplier}, e.g. "
            f"{{1000: 1.0, 2000: 0.1}}, got {lr_schedule!r}"
        )
    schedule = {}
    for step, value in lr_schedule.items():
        try:
            int_step = int(step)  # JSON turns the int keys into strings
        except (TypeError, ValueError):
            raise ValueError(f"lr_schedule: step {step!r} is not an integer") from None
        if int_step < 0 or int_step in schedule:
            raise ValueError(f"lr_schedule: steps must be distinct integers >= 0, got {step!r}")
        schedule[int_step] = check_number(value, f"lr_schedule[{step!r}]")
    return dict(sorted(schedule.items()))


def extend_with_piecewise_linear_lr(BaseOptimizer, name=None):
    """Multiplies the learning rate by a piecewise-linear function of the step.

    `lr_schedule={1000: 1, 2000: 0.1}` warms up linearly from 0 at step 0 to the
    full rate at step 1000, decays to 10% at step 2000 and stays there
    (bert4keras' `piecewise_linear`: the point (0, 0) is prepended when the
    first key is not 0). The step is the optimizer's raw iteration count before
    the update, 0 for the first batch; with gradient accumulation that counts
    micro-batches, as in bert4keras (its pretraining script multiplies the
    steps by `grad_accum_steps`) and as Keras' learning-rate schedules do.
    `optimizer.learning_rate` reports the scheduled rate.

    Args:
        BaseOptimizer: the optimizer class to extend.
        name: name of the new class; default "<Base>WithPiecewiseLinearLR".

    New constructor arguments:
        lr_schedule: {step: multiplier} (default {0: 1}, a constant rate).

    Example:
        >>> AdamLR = extend_with_piecewise_linear_lr(Adam, "AdamLR")
        >>> opt = AdamLR(learning_rate=1e-4, lr_schedule={1000: 1, 2000: 0.1})

    Reference:
        https://kexue.fm/archives/7094
    """
    _check_base(BaseOptimizer, "extend_with_piecewise_linear_lr")

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, lr_schedule=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.lr_schedule = _check_lr_schedule({0: 1.0} if lr_schedule is None else lr_schedule)

        def _get_current_learning_rate(self):
            multiplier = piecewise_linear(self._iterations, self.lr_schedule)
            return super()._get_current_learning_rate() * multiplier

        def get_config(self):
            return {**super().get_config(), "lr_schedule": dict(self.lr_schedule)}

    return _finish(
        NewOptimizer, BaseOptimizer, name, "PiecewiseLinearLR", "extend_with_piecewise_linear_lr"
    )


def _check_grad_accum_steps(value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"grad_accum_steps must be an integer >= 1, got {value!r}")
    return int(value)


def extend_with_gradient_accumulation(BaseOptimizer, name=None):
    """Updates once every `grad_accum_steps` batches with their mean gradient.

    Built on Keras' `gradient_accumulation_steps`: gradients are summed in
    accumulators and the base update runs on their mean at every
    `grad_accum_steps`-th batch; in between the variables do not move. With a
    mean-reduced loss this equals one step on a batch `grad_accum_steps` times
    larger. `optimizer.iterations` counts updates (Adam's bias correction uses
    it), while learning-rate schedules see the batch count.

    Args:
        BaseOptimizer: the optimizer class to extend.
        name: name of the new class; default "<Base>WithGradientAccumulation".

    New constructor arguments:
        grad_accum_steps: batches per update (default 2; 1 turns accumulation off).

    Example:
        >>> AdamGA = extend_with_gradient_accumulation(Adam, "AdamGA")
        >>> opt = AdamGA(learning_rate=1e-5, grad_accum_steps=16)

    Reference:
        https://kexue.fm/archives/6794
    """
    _check_base(BaseOptimizer, "extend_with_gradient_accumulation")

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, grad_accum_steps=2, **kwargs):
            grad_accum_steps = _check_grad_accum_steps(grad_accum_steps)
            keras_steps = kwargs.pop("gradient_accumulation_steps", None)
            if keras_steps not in (None, grad_accum_steps if grad_accum_steps > 1 else None):
                raise ValueError(
                    f"grad_accum_steps={grad_accum_steps} conflicts with "
                    f"gradient_accumulation_steps={keras_steps}; pass only grad_accum_steps"
                )
            steps = grad_accum_steps if grad_accum_steps > 1 else None
            super().__init__(*args, gradient_accumulation_steps=steps, **kwargs)
            self.grad_accum_steps = grad_accum_steps

        def get_config(self):
            config = super().get_config()
            config.pop("gradient_accumulation_steps", None)
            return {**config, "grad_accum_steps": self.grad_accum_steps}

    return _finish(
        NewOptimizer,
        BaseOptimizer,
        name,
        "GradientAccumulation",
        "extend_with_gradient_accumulation",
    )


def extend_with_parameter_wise_lr(BaseOptimizer, name=None):
    """Multiplies the learning rate of each variable by factors chosen by name.

    Every key of `paramwise_lr_schedule` found as a substring of a variable's
    path multiplies that variable's learning rate by its value (several matches
    multiply together, as in bert4keras).

    Args:
        BaseOptimizer: the optimizer class to extend.
        name: name of the new class; default "<Base>WithParameterWiseLR".

    New constructor arguments:
        paramwise_lr_schedule: {path substring: multiplier}, e.g.
            {"Embedding-": 0.1, "Transformer-11": 2.0}.

    Example:
        >>> AdamPLR = extend_with_parameter_wise_lr(Adam, "AdamPLR")
        >>> opt = AdamPLR(1e-4, paramwise_lr_schedule={"Embedding-": 0.1})

    Reference:
        https://kexue.fm/archives/7094
    """
    _check_base(BaseOptimizer, "extend_with_parameter_wise_lr")

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, paramwise_lr_schedule=None, **kwargs):
            super().__init__(*args, **kwargs)
            schedule = {} if paramwise_lr_schedule is None else paramwise_lr_schedule
            if not isinstance(schedule, dict) or not all(isinstance(k, str) for k in schedule):
                raise TypeError(
                    "paramwise_lr_schedule must be a dict {path substring: multiplier}, "
                    f"got {paramwise_lr_schedule!r}"
                )
            self.paramwise_lr_schedule = {
                k: check_number(v, f"paramwise_lr_schedule[{k!r}]") for k, v in schedule.items()
            }

        def _get_multiplier(self, variable):
            path = variable_path(variable)
            multiplier = 1.0
            for key, value in self.paramwise_lr_schedule.items():
                if key in path:
                    multiplier *= value
            return multiplier

        def update_step(self, gradient, variable, learning_rate):
            multiplier = self._get_multiplier(variable)
            if multiplier != 1.0:
                learning_rate = learning_rate * multiplier
            super().update_step(gradient, variable, learning_rate)

        def get_config(self):
            return {
                **super().get_config(),
                "paramwise_lr_schedule": dict(self.paramwise_lr_schedule),
            }

    return _finish(
        NewOptimizer, BaseOptimizer, name, "ParameterWiseLR", "extend_with_parameter_wise_lr"
    )
