"""Optimizers of bert4keras on Keras 3 (`bert4keras.optimizers`).

Base optimizers: `Adam` (bert4keras' variant: epsilon after bias correction),
`AdaFactor` and `AdaX`; any `keras.optimizers` class works as a base too.

Factories `extend_with_xxx(BaseOptimizer, name=None)` return a new optimizer
class adding one feature; they stack:

>>> OPT = extend_with_weight_decay(Adam)
>>> OPT = extend_with_layer_adaptation(OPT)          # LAMB
>>> OPT = extend_with_piecewise_linear_lr(OPT)
>>> OPT = extend_with_gradient_accumulation(OPT, name="LAMBLRG")
>>> opt = OPT(learning_rate=1e-3, weight_decay_rate=0.01,
...           exclude_from_weight_decay=["Norm", "bias"],
...           exclude_from_layer_adaptation=["Norm", "bias"],
...           lr_schedule={1000: 1.0, 100000: 0.0}, grad_accum_steps=4)

Saving: every class is registered with Keras under "kerasformers>NAME", where
NAME is the `name` given to the factory (default "<Base>With<Feature>"). A
model compiled with one saves as `.keras` with its optimizer state. To load it
in a new process, import `kerasformers.optimizers` (enough for the classes
defined here, e.g. `AdamW`) and, for classes built in your own script, run the
same factory calls with the same names before `keras.saving.load_model`, as
bert4keras needed them in `custom_objects`. The registered names do not depend
on which file defines a class, so models saved before the package layout below
still load.

Layout: `base` (the base optimizers and the shared argument checks), `extend`
(the factories that override one step), `stateful` (lookahead, lazy
optimization and EMA, which keep extra state); everything is imported from here.
"""

from kerasformers.backend import piecewise_linear
from kerasformers.optimizers.base import AdaFactor, Adam, AdaX
from kerasformers.optimizers.extend import (
    extend_with_gradient_accumulation,
    extend_with_layer_adaptation,
    extend_with_parameter_wise_lr,
    extend_with_piecewise_linear_lr,
    extend_with_weight_decay,
)
from kerasformers.optimizers.stateful import (
    extend_with_exponential_moving_average,
    extend_with_lazy_optimization,
    extend_with_lookahead,
)

# Saved configs record a class' module: name the public one, as the factories do
# for the classes they make, so .keras files never depend on the file layout.
for _cls in (AdaFactor, Adam, AdaX):
    _cls.__module__ = __name__
del _cls

# The combinations bert4keras' examples define, ready-made and registered.
AdamW = extend_with_weight_decay(Adam, "AdamW")
AdamLR = extend_with_piecewise_linear_lr(Adam, "AdamLR")
AdamGA = extend_with_gradient_accumulation(Adam, "AdamGA")
AdamLA = extend_with_lookahead(Adam, "AdamLA")
AdamLO = extend_with_lazy_optimization(Adam, "AdamLO")
AdamLazy = AdamLO
AdamEMA = extend_with_exponential_moving_average(Adam, "AdamEMA")
AdamWLR = extend_with_piecewise_linear_lr(AdamW, "AdamWLR")
AdamWG = extend_with_gradient_accumulation(AdamW, "AdamWG")
LAMB = extend_with_layer_adaptation(AdamW, "LAMB")

__all__ = [
    "AdaFactor",
    "Adam",
    "AdamEMA",
    "AdamGA",
    "AdamLA",
    "AdamLO",
    "AdamLR",
    "AdamLazy",
    "AdamW",
    "AdamWG",
    "AdamWLR",
    "AdaX",
    "LAMB",
    "extend_with_exponential_moving_average",
    "extend_with_gradient_accumulation",
    "extend_with_layer_adaptation",
    "extend_with_lazy_optimization",
    "extend_with_lookahead",
    "extend_with_parameter_wise_lr",
    "extend_with_piecewise_linear_lr",
    "extend_with_weight_decay",
    "piecewise_linear",
]
