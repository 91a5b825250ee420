"""Moving numpy arrays into Keras variables and back without detours.

Keras' own path from a numpy array to a variable goes through float32 for bfloat16 on
torch (`keras.ops.convert_to_tensor` casts numpy bfloat16 to float32, then to bfloat16)
and copies on jax (`jnp.asarray`). A 0.5B-parameter checkpoint in bfloat16 is 1 GB;
those detours cost a float32 copy of each tensor, or a second copy of the model while the
old values are still alive. The helpers here keep the array's own dtype end to end and
cast only when the variable's dtype differs, one tensor at a time:

* torch: the array's bytes are viewed as a torch tensor (`torch.from_numpy` of an
  integer view for bfloat16 and float8, which numpy holds only through ml_dtypes) and
  copied into the variable's storage; `variable_storage` exposes that storage as a
  writable numpy array, so a reader can fill it directly;
* jax: a C-contiguous, 64-byte aligned array becomes a jax array without a copy
  (`jax.device_put` aliases such host buffers on the CPU); `discard_variable_value`
  frees a variable's placeholder value before its real value is read.
"""

from __future__ import annotations

import sys

import keras
import ml_dtypes
import numpy as np

__all__ = [
    "assign_variable",
    "discard_variable_value",
    "variable_storage",
    "variable_to_numpy",
]

# numpy dtypes torch has but numpy only through ml_dtypes: moved as same-width integers.
_VIEWED = {
    np.dtype(ml_dtypes.bfloat16): ("int16", "bfloat16"),
    np.dtype(ml_dtypes.float8_e4m3fn): ("uint8", "float8_e4m3fn"),
    np.dtype(ml_dtypes.float8_e5m2): ("uint8", "float8_e5m2"),
}


def _backend():
    return keras.backend.backend()


def _torch_from_numpy(array):
    """A torch tensor sharing `array`'s memory, of the same dtype (bfloat16 included)."""
    import torch

    if not array.flags.writeable:  # torch.from_numpy warns on read-only memory
        array = array.copy()
    viewed = _VIEWED.get(array.dtype)
    if viewed is None:
        return torch.from_numpy(array)
    integer, name = viewed
    return torch.from_numpy(array.view(integer)).view(getattr(torch, name))


def assign_variable(variable, value):
    """Assigns a numpy array to a variable, casting only if the dtypes differ.

    Same dtype: no intermediate copy in another dtype (bfloat16 stays bfloat16 on every
    backend). Different float dtypes (a float32 checkpoint into bfloat16 variables): this
    one tensor is cast by the backend, rounding to nearest even as `ml_dtypes` does.

    Args:
        value: A numpy array of the variable's shape (any dtype numpy or ml_dtypes has);
            it must not be changed afterwards (jax may keep using its memory).
    """
    value = np.asarray(value)
    dtype = keras.backend.standardize_dtype(variable.dtype)
    backend = _backend()
    if backend == "torch":
        import torch

        tensor = _torch_from_numpy(value)
        target = getattr(torch, dtype)
        if tensor.dtype != target:
            tensor = tensor.to(target)
        variable.assign(tensor)
    elif backend == "jax":
        import jax

        if value.dtype.byteorder == ">":  # pragma: no cover - readers return native order
            value = value.astype(value.dtype.newbyteorder("="))
        array = jax.device_put(value)  # aliases an aligned C-contiguous host buffer
        if array.dtype != dtype:
            array = array.astype(dtype)
        variable.assign(array)
    else:
        if keras.backend.standardize_dtype(value.dtype) != dtype:
            value = value.astype(dtype)
        variable.assign(value)


def variable_storage(variable):
    """The variable's own memory as a writable numpy array, or None where it has none.

    Torch variables on the CPU hold their values in place: a reader that fills this array
    (of the variable's dtype and shape) fills the variable, with no copy in between. Jax
    arrays are immutable and device memory is not host memory: those give None, as does
    any variable inside a stateless scope or not laid out contiguously.
    """
    if _backend() != "torch":
        return None
    from keras.src.backend.common.stateless_scope import in_stateless_scope

    if in_stateless_scope():
        return None
    tensor = variable.value
    if tensor.device.type != "cpu" or not tensor.is_contiguous():
        return None
    tensor = tensor.detach()
    name = str(tensor.dtype).replace("torch.", "")
    for numpy_dtype, (integer, torch_name) in _VIEWED.items():
        if torch_name == name:
            import torch

            return tensor.view(getattr(torch, integer)).numpy().view(numpy_dtype)
    try:
        return tensor.numpy()
    except (TypeError, RuntimeError):  # a dtype numpy cannot hold
        return None


def discard_variable_value(variable):
    """Frees the memory of a variable's current value, which is about to be replaced.

    For placeholder values only (the zeros a builder creates while a checkpoint is on its
    way): on jax the old buffer would otherwise stay alive next to the new one until the
    assignment. The variable must be assigned before it is used again. A no-op where
    values are overwritten in place (torch) or cannot be freed.
    """
    if _backend() != "jax":
        return
    value = getattr(variable, "_value", None)
    if getattr(value, "delete", None) is None or value.is_deleted():
        return
    # Only a buffer nobody else holds (this frame, the variable, getrefcount's argument).
    if sys.getrefcount(value) <= 3:
        value.delete()


def variable_to_numpy(variable):
    """The variable's value as a numpy array of the same dtype (bfloat16 as ml_dtypes').

    Unlike `keras.ops.convert_to_numpy` on torch, bfloat16 is not widened to float32 on
    the way. The array may share the variable's memory: do not write to it.
    """
    backend = _backend()
    if backend == "torch":
        tensor = variable.value.detach().cpu()
        name = str(tensor.dtype).replace("torch.", "")
        for numpy_dtype, (integer, torch_name) in _VIEWED.items():
            if torch_name == name:
                import torch

                return tensor.view(getattr(torch, integer)).numpy().view(numpy_dtype)
        return tensor.numpy()
    if backend == "jax":
        return np.asarray(variable.value)
    return keras.ops.convert_to_numpy(variable)
