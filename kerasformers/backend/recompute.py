"""Gradient checkpointing (`recompute_grad`) on every backend."""

import contextlib
import functools
import inspect
import os

import keras
from keras import ops

# ------------------------------------------------------ gradient checkpointing
_TRUE = ("1", "y", "yes", "t", "true", "on")
_FALSE = ("", "0", "n", "no", "f", "false", "off")


def recompute_enabled():
    """Whether the RECOMPUTE environment variable (bert4keras' switch) is on."""
    value = os.environ.get("RECOMPUTE", "0").strip().lower()
    if value not in _TRUE + _FALSE:
        raise ValueError(f"RECOMPUTE must be 1/0 (or true/false, yes/no, on/off), got {value!r}")
    return value in _TRUE


def recompute_grad(call):
    """Decorates a layer's `call` with gradient checkpointing (recomputation).

    While training, the decorated call keeps only its inputs for the backward
    pass and runs again there to rebuild its intermediate activations: less
    memory for one more forward. The layer's random state (dropout seeds, and
    torch's global RNG) is replayed, so the recomputed forward is the same and
    the gradients equal those without checkpointing. jax: `jax.checkpoint`;
    torch: `torch.utils.checkpoint` (non-reentrant); tensorflow:
    `tf.recompute_grad`. In inference (`training` false, or torch with
    autograd off) the call runs as it is, at no cost. On jax with the CPU
    compiler it saves no memory: XLA's CPU pipeline drops the optimization
    barriers of `jax.checkpoint` and merges the recomputation back.

    It is on for a layer whose `recompute` attribute is True (the model
    builders set it from their `recompute` argument), or, when the layer has no
    such attribute, if the environment variable RECOMPUTE=1 is set. Keras
    passes `training` to the decorated call even if the wrapped one does not
    take it. (tf.recompute_grad has no second derivatives: on TensorFlow the
    gradient penalty of `kerasformers.training` runs without it.)

    Example:
        >>> class Block(keras.layers.Layer):
        ...     @recompute_grad
        ...     def call(self, inputs):
        ...         return self.o_dense(ops.gelu(self.i_dense(inputs)))
        >>> model = build_transformer_model(config, recompute=True)  # or RECOMPUTE=1

    Reference:
        https://arxiv.org/abs/1604.06174
    """
    signature = inspect.signature(call)
    takes_training = "training" in signature.parameters

    @functools.wraps(call)
    def wrapper(self, *args, **kwargs):
        training = kwargs.get("training")
        if not takes_training:
            kwargs.pop("training", None)
        enabled = getattr(self, "recompute", None)
        if enabled is None:
            enabled = recompute_enabled()
        if not (enabled and training) or _RECOMPUTE_SUSPENDED:
            return call(self, *args, **kwargs)
        recompute = _RECOMPUTE.get(keras.backend.backend())
        if recompute is None:  # a backend without autodiff (numpy)
            return call(self, *args, **kwargs)
        return recompute(call, self, args, kwargs)

    if not takes_training:
        # Keras passes `training` only to calls that declare it.
        params = list(signature.parameters.values())
        at = len(params) - (params[-1].kind == inspect.Parameter.VAR_KEYWORD)
        extra = inspect.Parameter("training", inspect.Parameter.KEYWORD_ONLY, default=None)
        wrapper.__signature__ = signature.replace(parameters=params[:at] + [extra] + params[at:])
    wrapper.supports_recompute = True
    return wrapper


def _replaying(layer, call):
    """`call` that, from its second run on (the recomputation), replays the
    layer's random state: non-trainable variables (dropout seed generators) are
    set back to their values before the first run, and restored after."""
    # Keras has no public handle on it: the mixed-precision autocast scope the
    # layer's __call__ opened is gone by the backward pass, so re-open it.
    from keras.src.backend import AutocastScope, get_autocast_scope

    scope = get_autocast_scope()
    autocast_dtype = None if scope is None else scope.dtype
    states = [v for v in layer.variables if not v.trainable]
    before = [ops.copy(v.value) for v in states]
    runs = []

    def run(*args, **kwargs):
        runs.append(None)
        if len(runs) == 1:
            return call(layer, *args, **kwargs)
        after = [ops.copy(v.value) for v in states]
        for variable, value in zip(states, before, strict=True):
            variable.assign(value)
        try:
            with AutocastScope(autocast_dtype):
                return call(layer, *args, **kwargs)
        finally:
            for variable, value in zip(states, after, strict=True):
                variable.assign(value)

    return run


def _recompute_jax(call, layer, args, kwargs):
    import jax

    # jax.checkpoint needs a pure function: the layer's variables go in as
    # arguments (inside a StatelessScope) and updated states (seeds) come out.
    variables = layer.variables
    states = [i for i, v in enumerate(variables) if not v.trainable]
    leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
    is_array = [isinstance(leaf, jax.Array) for leaf in leaves]

    def pure(values, arrays):
        arrays = iter(arrays)
        merged = [next(arrays) if a else leaf for leaf, a in zip(leaves, is_array, strict=True)]
        call_args, call_kwargs = jax.tree_util.tree_unflatten(treedef, merged)
        mapping = list(zip(variables, values, strict=True))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            outputs = call(layer, *call_args, **call_kwargs)
        new_states = []
        for i in states:
            new = scope.get_current_value(variables[i])
            new_states.append(values[i] if new is None else new)
        return outputs, new_states

    values = [v.value for v in variables]
    arrays = [leaf for leaf, a in zip(leaves, is_array, strict=True) if a]
    outputs, new_states = jax.checkpoint(pure)(values, arrays)
    for i, value in zip(states, new_states, strict=True):
        variables[i].assign(value)
    return outputs


def _recompute_torch(call, layer, args, kwargs):
    import torch
    from torch.utils.checkpoint import checkpoint

    if not torch.is_grad_enabled():
        return call(layer, *args, **kwargs)
    # preserve_rng_state (default) replays torch's global RNG (unseeded dropout).
    return checkpoint(_replaying(layer, call), *args, use_reentrant=False, **kwargs)


def _recompute_tensorflow(call, layer, args, kwargs):
    import tensorflow as tf

    # tf.recompute_grad differentiates its positional float tensors; everything
    # else (masks, flags, None) is closed over.
    leaves = tf.nest.flatten((args, kwargs))
    is_float = [tf.is_tensor(x) and x.dtype.is_floating for x in leaves]
    run = _replaying(layer, call)

    def inner(*floats):
        floats = iter(floats)
        merged = [next(floats) if f else leaf for leaf, f in zip(leaves, is_float, strict=True)]
        call_args, call_kwargs = tf.nest.pack_sequence_as((args, kwargs), merged)
        return run(*call_args, **call_kwargs)

    floats = [leaf for leaf, f in zip(leaves, is_float, strict=True) if f]
    return tf.recompute_grad(inner)(*floats)


# Set while tracing a TensorFlow double backward: tf.recompute_grad has no
# second derivatives, so the gradient penalty runs without checkpointing there.
_RECOMPUTE_SUSPENDED = []

_RECOMPUTE = {
    "jax": _recompute_jax,
    "torch": _recompute_torch,
    "tensorflow": _recompute_tensorflow,
}


@contextlib.contextmanager
def _recompute_suspended():
    _RECOMPUTE_SUSPENDED.append(None)
    try:
        yield
    finally:
        _RECOMPUTE_SUSPENDED.pop()
