"""Batch shaping: `sequence_padding` (and `truncate_sequences`, from the tokenizers).

`truncate_sequences` is defined in `kerasformers.tokenizers.base`, which must not
depend on this package; it is re-exported here and from `kerasformers.snippets`.
"""

import numpy as np

from kerasformers.tokenizers.base import truncate_sequences

__all__ = ["sequence_padding", "truncate_sequences"]


def sequence_padding(inputs, length=None, value=0, seq_dims=1, mode="post"):
    """Pads (or cuts) a batch of sequences to one length and stacks them.

    As in bert4keras, a sequence longer than `length` keeps its first `length` items
    in both modes; `mode` only says on which side the padding goes.

    Args:
        inputs: list of sequences (lists or arrays; nested for seq_dims > 1).
        length: target length: an int (for every sequence axis) or one per axis;
            default the longest along each axis.
        value: fill value.
        seq_dims: how many leading axes of each item are sequence axes.
        mode: "post" pads at the end, "pre" at the start.

    Returns:
        np.ndarray of shape (batch, *lengths, *item_shape).

    Example:
        >>> sequence_padding([[1, 2, 3], [4]])
        array([[1, 2, 3],
               [4, 0, 0]])
    """
    if mode not in ("post", "pre"):
        raise ValueError(f"sequence_padding: mode must be 'post' or 'pre', got {mode!r}")
    if isinstance(seq_dims, bool) or not isinstance(seq_dims, int) or seq_dims < 1:
        raise ValueError(f"sequence_padding: seq_dims must be an int >= 1, got {seq_dims!r}")
    if len(inputs) == 0:
        raise ValueError("sequence_padding: got an empty batch")
    arrays = [np.asarray(x) for x in inputs]
    for row, x in enumerate(arrays):
        if x.ndim < seq_dims:
            raise ValueError(
                f"sequence_padding: item {row} has {x.ndim} axes, fewer than seq_dims={seq_dims}"
            )
    if length is None:
        length = np.max([x.shape[:seq_dims] for x in arrays], axis=0)
    elif np.ndim(length) == 0:
        length = [length] * seq_dims
    if len(length) < seq_dims:
        raise ValueError(
            f"sequence_padding: length {list(length)} gives fewer lengths than seq_dims={seq_dims}"
        )
    length = [int(n) for n in length][:seq_dims]
    item_shape = arrays[0].shape[seq_dims:]
    filled = [x.dtype for x in arrays if x.size]
    dtype = np.result_type(*filled) if filled else np.int64
    out = np.full((len(arrays), *length, *item_shape), value, dtype=dtype)
    for row, x in enumerate(arrays):
        if x.shape[seq_dims:] != item_shape:
            raise ValueError(
                f"sequence_padding: item {row} has trailing shape {x.shape[seq_dims:]}, "
                f"item 0 has {item_shape}"
            )
        src, dst = [], [row]
        for axis in range(seq_dims):
            n = min(length[axis], x.shape[axis])
            src.append(slice(0, n))
            if mode == "post":
                dst.append(slice(0, n))
            else:
                dst.append(slice(length[axis] - n, length[axis]))
        out[tuple(dst)] = x[tuple(src)]
    return out
