"""Backend glue of cached generation: in-place cache writes and the compiled loop.

The decode loop itself (`kerasformers.generation`) is plain `keras.ops`; only
how a cache slot is written and how the loop is compiled differ per backend:

- jax: the whole generation (prefill + `ops.while_loop`) is one `jax.jit`
  function of the model's variable values (a `keras.StatelessScope` maps them),
  traced once per (batch, prompt length, settings) and cached; the cache update
  is `lax.dynamic_update_slice`, which XLA performs in place inside the loop.
  Streaming jits the prefill and one step separately; the step's caches are
  donated, so XLA writes them in place across calls too.
- torch: eager, under `torch.no_grad()`; the cache is written in place with
  slice assignment (Keras' `slice_update` copies the whole cache every step).
- tensorflow: eager, `ops.slice_update`.
"""

import keras
from keras import ops


def update_cache(cache, index, value):
    """Writes `value` (batch, n, ...) into `cache` (batch, length, ...) at [:, index:index+n].

    Returns the updated cache: the same tensor, modified in place, on torch.
    """
    backend = keras.backend.backend()
    if backend == "torch":
        start = int(index)
        cache[:, start : start + value.shape[1]] = value.to(cache.dtype)
        return cache
    if backend == "jax":
        from jax import lax

        value = value.astype(cache.dtype)
        start = (0, index) + (0,) * (len(cache.shape) - 2)
        return lax.dynamic_update_slice(cache, value, start)
    start = [0, index] + [0] * (len(cache.shape) - 2)
    return ops.slice_update(cache, start, ops.cast(value, cache.dtype))


def compiles_per_shape():
    """Whether every new input shape costs a compile (jax: one trace + XLA
    compile per shape), so that callers should round shapes up to buckets."""
    return keras.backend.backend() == "jax"


def compile_generation(fn, variables, donate=()):
    """Wraps `fn(*tensors) -> outputs` (reading `variables`) for fast repeated calls.

    Args:
        fn: a function of tensors and structures of tensors (settings are
            closed over).
        variables: every variable `fn` reads (the model's weights).
        donate: positions of the arguments `fn` consumes: the caller never
            reads them again, so jax may write the outputs into their buffers
            (the key/value caches of a streamed step); torch writes caches in
            place anyway.

    Returns:
        `run(*tensors)`, compiled once per input shapes on jax, eager without
        autograd on torch (each call in its own `no_grad`, so a generator
        driving it between yields leaves its consumer's grad mode alone).
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def stateless(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
                return fn(*args)

        jitted = jax.jit(stateless, donate_argnums=tuple(1 + i for i in donate))
        return lambda *args: jitted([v.value for v in variables], *args)
    if backend == "torch":
        import torch

        def run(*args):
            with torch.no_grad():
                return fn(*args)

        return run
    return fn


def random_uniform(shape, seed, step):
    """Uniform [0, 1) float32 noise determined by (`seed`, `step`) alone.

    `seed` is an int32 tensor of shape (1,) and `step` a scalar tensor; both may
    be traced (inside the compiled jax loop). Keras' own random ops take only
    Python ints or SeedGenerators, neither of which a compiled loop can vary.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        key = jax.random.fold_in(jax.random.PRNGKey(seed[0]), step)
        return jax.random.uniform(key, shape, dtype="float32")
    if backend == "torch":
        import torch

        generator = torch.Generator(device=seed.device)
        generator.manual_seed(int(seed[0]) * 1_000_003 + int(step))
        return torch.rand(shape, generator=generator, device=seed.device)
    return keras.random.uniform(shape, seed=int(seed[0]) * 1_000_003 + int(step))


def autocast(dtype):
    """The scope in which a mixed-precision layer's variables read as `dtype`
    (what Keras' `Layer.__call__` sets up; cached passes call hooks directly)."""
    from keras.src.backend import AutocastScope

    return AutocastScope(dtype)
