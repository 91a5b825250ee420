"""Data helpers of bert4keras' `bert4keras.snippets` (padding and truncation so far)."""

import numpy as np


def sequence_padding(inputs, length=None, value=0, seq_dims=1, mode="post"):
    """Pads (or cuts) a batch of sequences to one length and stacks them.

    Args:
        inputs: list of sequences (lists or arrays; nested for seq_dims > 1).
        length: target length (an int, or one per seq dim); default the longest.
        value: fill value.
        seq_dims: how many leading axes of each item are sequence axes.
        mode: "post" pads/cuts at the end, "pre" at the start.

    Returns:
        np.ndarray of shape (batch, *lengths, *item_shape).

    Example:
        >>> sequence_padding([[1, 2, 3], [4]])
        array([[1, 2, 3],
               [4, 0, 0]])
    """
    if mode not in ("post", "pre"):
        raise ValueError(f"sequence_padding: mode must be 'post' or 'pre', got {mode!r}")
    if len(inputs) == 0:
        raise ValueError("sequence_padding: got an empty batch")
    arrays = [np.asarray(x) for x in inputs]
    if length is None:
        length = np.max([x.shape[:seq_dims] for x in arrays], axis=0)
    elif not hasattr(length, "__getitem__"):
        length = [length]
    length = [int(n) for n in length][:seq_dims]
    item_shape = arrays[0].shape[seq_dims:]
    dtype = np.result_type(*[x.dtype for x in arrays]) if arrays[0].size else np.int64
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
            if mode == "post":
                src.append(slice(0, n))
                dst.append(slice(0, n))
            else:
                src.append(slice(x.shape[axis] - n, x.shape[axis]))
                dst.append(slice(length[axis] - n, length[axis]))
        out[tuple(dst)] = x[tuple(src)]
    return out


def truncate_sequences(maxlen, indices, *sequences):
    """Pops from the longest sequence (the first on ties) until the total fits.

    Args:
        maxlen: the largest total length allowed.
        indices: the position to pop from, one for all or one per sequence
            (bert4keras pops at -2 to keep a trailing [SEP]).
        *sequences: lists, truncated in place; None or empty ones are skipped.

    Returns:
        The non-empty sequences.
    """
    sequences = [s for s in sequences if s]
    if not isinstance(indices, (list, tuple)):
        indices = [indices] * len(sequences)
    lengths = [len(s) for s in sequences]
    total = sum(lengths)
    while total > maxlen:
        i = lengths.index(max(lengths))
        index = indices[i]
        if not -lengths[i] <= index < lengths[i]:
            raise ValueError(
                f"maxlen={maxlen} is too small: cannot pop index {index} from a "
                f"sequence of {lengths[i]} tokens"
            )
        sequences[i].pop(index)
        lengths[i] -= 1
        total -= 1
    return sequences
