"""`extend_with_*` factories that keep extra state: lookahead, lazy optimization, EMA.

See `kerasformers.optimizers.extend` for how the factories work.
"""

import keras
import numpy as np
from keras import ops

from kerasformers.optimizers.base import (
    check_number,
    check_patterns,
    dense_gradient,
    string_matching,
)
from kerasformers.optimizers.extend import _check_base, _finish


def extend_with_lookahead(BaseOptimizer, name=None):
    """Adds Lookahead: every k steps the weights move back toward slow weights.

    The slow weights start at the weights before the first step. After every
    `steps_per_slow_update`-th update, `slow <- slow + slow_step_size * (x - slow)`
    and the weights `x` are reset to `slow` (k steps forward, one step back).

    Args:
        BaseOptimizer: the optimizer class to extend.
        name: name of the new class; default "<Base>WithLookahead".

    New constructor arguments:
        steps_per_slow_update: k, updates between synchronisations (default 5).
        slow_step_size: alpha, the interpolation factor in [0, 1] (default 0.5).

    Example:
        >>> AdamLA = extend_with_lookahead(Adam, "AdamLA")
        >>> opt = AdamLA(1e-3, steps_per_slow_update=5, slow_step_size=0.5)

    Reference:
        https://arxiv.org/abs/1907.08610 (https://kexue.fm/archives/6869)
    """
    _check_base(BaseOptimizer, "extend_with_lookahead")

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, steps_per_slow_update=5, slow_step_size=0.5, **kwargs):
            super().__init__(*args, **kwargs)
            if (
                isinstance(steps_per_slow_update, bool)
                or not isinstance(steps_per_slow_update, (int, np.integer))
                or steps_per_slow_update < 1
            ):
                raise ValueError(
                    f"steps_per_slow_update must be an integer >= 1, got {steps_per_slow_update!r}"
                )
            self.steps_per_slow_update = int(steps_per_slow_update)
            self.slow_step_size = check_number(slow_step_size, "slow_step_size", 0.0, 1.0)

        def build(self, var_list):
            if self.built:
                return
            super().build(var_list)
            self._slow_weights = self.add_optimizer_variables(var_list, "slow_weight")

        def update_step(self, gradient, variable, learning_rate):
            slow = self._slow_weights[self._get_variable_index(variable)]
            # The slow weights copy the weights on the first step rather than at
            # build time, so weights loaded after compile() are the ones used.
            first = ops.equal(self.iterations, 0)
            self.assign(slow, ops.where(first, variable.value, slow.value))
            super().update_step(gradient, variable, learning_rate)
            sync = ops.equal((self.iterations + 1) % self.steps_per_slow_update, 0)
            moved = slow.value + self.slow_step_size * (variable.value - slow.value)
            self.assign(slow, ops.where(sync, moved, slow.value))
            self.assign(variable, ops.where(sync, moved, variable.value))

        def get_config(self):
            return {
                **super().get_config(),
                "steps_per_slow_update": self.steps_per_slow_update,
                "slow_step_size": self.slow_step_size,
            }

    return _finish(NewOptimizer, BaseOptimizer, name, "Lookahead", "extend_with_lookahead")


def extend_with_lazy_optimization(BaseOptimizer, name=None):
    """Leaves rows whose gradient is all zero untouched, optimizer state included.

    For the variables selected by `include_in_lazy_optimization` (typically
    embeddings), a row (slice along the last axis) whose gradient is exactly
    zero, e.g. the embedding of a token absent from the batch, keeps its value
    and its moment slots: momentum does not keep moving unused embeddings.
    Slots that aggregate over rows (AdaFactor's column statistics) cannot be
    restored row-wise and are updated as usual.

    Args:
        BaseOptimizer: the optimizer class to extend.
        name: name of the new class; default "<Base>WithLazyOptimization".

    New constructor arguments:
        include_in_lazy_optimization: regular expressions searched in variable
            paths, e.g. ["Embedding-Token"]; only matches are lazy.

    Example:
        >>> AdamLO = extend_with_lazy_optimization(Adam, "AdamLO")
        >>> opt = AdamLO(1e-3, include_in_lazy_optimization=["Embedding-Token"])

    Reference:
        https://kexue.fm/archives/6869
    """
    _check_base(BaseOptimizer, "extend_with_lazy_optimization")

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, include_in_lazy_optimization=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.include_in_lazy_optimization = check_patterns(
                include_in_lazy_optimization, "include_in_lazy_optimization"
            )
            self._lazy_recording = False
            self._lazy_slots = {}

        def _do_lazy_optimization(self, variable):
            return string_matching(variable, self.include_in_lazy_optimization)

        def _note_slot(self, variable, slot):
            if self._lazy_recording:
                self._lazy_slots.setdefault(id(variable), []).append(slot)

        def add_variable_from_reference(self, reference_variable, *args, **kwargs):
            slot = super().add_variable_from_reference(reference_variable, *args, **kwargs)
            self._note_slot(reference_variable, slot)
            return slot

        def build(self, var_list):
            if self.built:
                return
            # Slots created by the base optimizer (and inner extensions) while it
            # builds belong to the variable they were made from.
            self._lazy_recording = True
            try:
                super().build(var_list)
            finally:
                self._lazy_recording = False
            # Keras' accumulators and EMA averages change outside update_step.
            skip = {
                id(v)
                for v in list(getattr(self, "_accumulated_gradients", None) or [])
                + list(getattr(self, "_model_variables_moving_average", None) or [])
                if v is not None
            }
            self._lazy_slots = {
                key: [s for s in slots if id(s) not in skip]
                for key, slots in self._lazy_slots.items()
            }

        def update_step(self, gradient, variable, learning_rate):
            if not self._do_lazy_optimization(variable):
                return super().update_step(gradient, variable, learning_rate)
            # (..., 1): rows with any non-zero gradient move.
            used = ops.any(
                ops.not_equal(dense_gradient(gradient, variable), 0), axis=-1, keepdims=True
            )
            rank = len(variable.shape)
            tracked = [variable] + [
                slot
                for slot in self._lazy_slots.get(id(variable), [])
                if len(slot.shape) == rank and tuple(slot.shape[:-1]) == tuple(variable.shape[:-1])
            ]
            old = [ops.copy(v.value) for v in tracked]
            super().update_step(gradient, variable, learning_rate)
            for v, before in zip(tracked, old, strict=True):
                self.assign(v, ops.where(used, v.value, before))

        def get_config(self):
            return {
                **super().get_config(),
                "include_in_lazy_optimization": list(self.include_in_lazy_optimization),
            }

    return _finish(
        NewOptimizer, BaseOptimizer, name, "LazyOptimization", "extend_with_lazy_optimization"
    )


def extend_with_exponential_moving_average(BaseOptimizer, name=None):
    """Keeps an exponential moving average of the weights (Keras' `use_ema`).

    After each update, `average <- ema_momentum * average + (1 - ema_momentum) * x`
    (the first update copies `x`, so the average needs no bias correction).
    The model keeps training on its own weights: swap the average in with
    `apply_ema_weights()` (e.g. to evaluate or save) and back with
    `reset_old_weights()`. Unlike plain Keras EMA, `fit()` does not overwrite
    the weights with the average when it ends.

    Args:
        BaseOptimizer: the optimizer class to extend.
        name: name of the new class; default "<Base>WithEMA".

    New constructor arguments:
        ema_momentum: decay of the average (default 0.999).

    Example:
        >>> AdamEMA = extend_with_exponential_moving_average(Adam, "AdamEMA")
        >>> opt = AdamEMA(1e-3, ema_momentum=0.9999)
        >>> model.fit(x, y)
        >>> opt.apply_ema_weights()
        >>> model.evaluate(x, y)
        >>> opt.reset_old_weights()

    Reference:
        https://kexue.fm/archives/6575
    """
    _check_base(BaseOptimizer, "extend_with_exponential_moving_average")

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, ema_momentum=0.999, **kwargs):
            if kwargs.pop("use_ema", True) is not True:
                raise ValueError(f"{type(self).__name__} always uses EMA; use_ema must be True")
            ema_momentum = check_number(ema_momentum, "ema_momentum", 0.0, 1.0)
            super().__init__(*args, use_ema=True, ema_momentum=ema_momentum, **kwargs)
            self.old_weights = None

        def finalize_variable_values(self, var_list):
            # bert4keras users swap the average in themselves (apply_ema_weights).
            pass

        def _check_ema_built(self, method):
            if not self.built:
                raise ValueError(
                    f"{method}: the optimizer has no moving average yet; train (or "
                    "build) it on the model's variables first"
                )

        def apply_ema_weights(self, bias_correction=True):
            """Backs up the current weights, then loads the moving average into them.

            Args:
                bias_correction: accepted for bert4keras compatibility; Keras'
                    average starts from the first updated weights, so it is
                    already unbiased and nothing is corrected.
            """
            self._check_ema_built("apply_ema_weights")
            pairs = [
                (v, a)
                for v, a in zip(
                    self._trainable_variables, self._model_variables_moving_average, strict=True
                )
                if a is not None
            ]
            self.old_weights = [keras.ops.convert_to_numpy(v) for v, _ in pairs]
            averages = [keras.ops.convert_to_numpy(a) for _, a in pairs]
            for (variable, _), average in zip(pairs, averages, strict=True):
                variable.assign(average)

        def reset_old_weights(self):
            """Restores exactly the weights backed up by the last `apply_ema_weights()`."""
            self._check_ema_built("reset_old_weights")
            if self.old_weights is None:
                raise ValueError("reset_old_weights: call apply_ema_weights() first")
            pairs = [
                v
                for v, a in zip(
                    self._trainable_variables, self._model_variables_moving_average, strict=True
                )
                if a is not None
            ]
            for variable, value in zip(pairs, self.old_weights, strict=True):
                variable.assign(value)

        def get_config(self):
            config = super().get_config()
            config.pop("use_ema", None)
            return config

    return _finish(
        NewOptimizer, BaseOptimizer, name, "EMA", "extend_with_exponential_moving_average"
    )
