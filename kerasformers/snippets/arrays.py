"""numpy helpers of bert4keras: `to_array`, `softmax`, `orthogonally_resize`."""

import numpy as np

__all__ = ["orthogonally_resize", "softmax", "to_array"]


def to_array(*args):
    """Converts each argument with `np.array`; one argument gives one array, else a list."""
    results = [np.array(a) for a in args]
    return results[0] if len(args) == 1 else results


def softmax(x, axis=-1):
    """Numerically stable numpy softmax."""
    x = np.asarray(x)
    x = np.exp(x - x.max(axis=axis, keepdims=True))
    return x / x.sum(axis=axis, keepdims=True)


def orthogonally_resize(a, new_shape, window=2):
    """Resizes a weight tensor by repeating it in windows, keeping its Frobenius norm.

    Along each axis that grows from `d1` to `d2`, the axis is cut into windows of
    `window` entries, each window is repeated `k = ceil(d2 / d1)` times in place
    (`[0, 1, 2, 3]` -> `[0, 1, 0, 1, 2, 3, 2, 3]` for window 2, so rotary pairs
    stay together) and the result is cut to `d2`; a shrinking axis is simply cut.
    The result is then rescaled to the norm of `a`. When every grown axis grows by
    an exact factor `k`: repeating only the last axis keeps the Gram matrix
    `a @ a.T` (orthonormal rows stay orthonormal), and a matrix grown by `k` on both
    axes maps a repeated input to the repeated output (`x @ a` up to the layout).
    bert4keras uses it to load a small model's weights into a bigger one.

    Args:
        a: the array.
        new_shape: the wanted shape (same number of axes).
        window: how many consecutive entries are repeated together.

    Returns:
        The resized array.

    Reference:
        https://kexue.fm/archives/8444 (losslessly enlarging a Transformer)
    """
    a = np.asarray(a)
    new_shape = tuple(int(d) for d in new_shape)
    if a.ndim != len(new_shape):
        raise ValueError(
            f"orthogonally_resize: new_shape {new_shape} has {len(new_shape)} axes, "
            f"the array has {a.ndim} (shape {a.shape})"
        )
    norm = np.linalg.norm(a)
    for axis, (d1, d2) in enumerate(zip(a.shape, new_shape, strict=True)):
        if d2 <= d1:
            continue
        if d1 % window:
            raise ValueError(
                f"orthogonally_resize: axis {axis} grows from {d1} to {d2} but {d1} is "
                f"not a multiple of window={window}"
            )
        k = -(-d2 // d1)
        shape = a.shape
        # (..., d1 // window, window, ...): repeat whole windows along the axis.
        a = a.reshape(shape[:axis] + (d1 // window, window) + shape[axis + 1 :])
        a = np.repeat(a, k, axis=axis)
        # (..., d1 * k, ...)
        a = a.reshape(shape[:axis] + (d1 * k,) + shape[axis + 1 :])
    a = a[tuple(slice(0, d) for d in new_shape)]
    new_norm = np.linalg.norm(a)
    return a if new_norm == 0 else a / new_norm * norm
