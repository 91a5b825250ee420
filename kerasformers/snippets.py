"""Data and utility helpers of `bert4keras.snippets`, with the same names and arguments.

Padding and truncation, text splitting, string helpers, longest common
subsequence/substring, `orthogonally_resize`, bert4keras' indexable `open`, the
`DataGenerator` batch template (with a `keras.utils.PyDataset` bridge) and
`parallel_apply` (processes or threads, errors raised instead of hanging).
"""

import builtins
import functools
import json
import os
import re
import unicodedata
from typing import TYPE_CHECKING

import numpy as np

from kerasformers._parallel import ParallelApplyError, parallel_apply, parallel_apply_generator
from kerasformers._viterbi import ViterbiDecoder
from kerasformers.generation.autoregressive import AutoRegressiveDecoder

if TYPE_CHECKING:  # imported lazily by __getattr__ below
    from kerasformers._data_generator import DataGenerator, DataGeneratorDataset

__all__ = [
    "AutoRegressiveDecoder",
    "DataGenerator",
    "DataGeneratorDataset",
    "ParallelApplyError",
    "ViterbiDecoder",
    "convert_to_str",
    "convert_to_unicode",
    "delete_arguments",
    "insert_arguments",
    "is_one_of",
    "is_string",
    "longest_common_subsequence",
    "longest_common_substring",
    "lowercase_and_normalize",
    "orthogonally_resize",
    "parallel_apply",
    "parallel_apply_generator",
    "sequence_padding",
    "softmax",
    "strQ2B",
    "string_matching",
    "text_segmentate",
    "to_array",
    "truncate_sequences",
]  # `open` is importable by name but kept out of `*` so it never shadows the builtin.

# bert4keras ran on Python 2 as well; ported code sometimes checks this flag.
is_py2 = False


def __getattr__(name):
    # DataGenerator's module imports keras: load it on first use, so that the tokenizers
    # (which import truncate_sequences from here) work without a Keras backend.
    if name in ("DataGenerator", "DataGeneratorDataset"):
        from kerasformers import _data_generator

        return getattr(_data_generator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def to_array(*args):
    """Converts each argument with `np.array`; one argument gives one array, else a list."""
    results = [np.array(a) for a in args]
    return results[0] if len(args) == 1 else results


def is_string(s):
    """Whether `s` is a `str`."""
    return isinstance(s, str)


# Full-width forms U+FF01..U+FF5E sit exactly 0xFEE0 above ASCII 0x21..0x7E; U+3000 is
# the ideographic (full-width) space.
_Q2B_TABLE = {0x3000: 0x20, **{code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}}


def strQ2B(ustring):
    """Converts full-width ASCII forms and the ideographic space to half-width.

    Example:
        >>> strQ2B("ＡＢＣ，１２３　ok")
        'ABC,123 ok'
    """
    return ustring.translate(_Q2B_TABLE)


def string_matching(s, keywords):
    """Whether any of the regular expressions `keywords` is found in `s`."""
    return any(re.search(k, s) for k in keywords)


def convert_to_unicode(text, encoding="utf-8", errors="ignore"):
    """Decodes bytes to str (str passes through)."""
    if isinstance(text, bytes):
        text = text.decode(encoding, errors=errors)
    return text


def convert_to_str(text, encoding="utf-8", errors="ignore"):
    """bert4keras' Python 2/3 shim; on Python 3 the same as `convert_to_unicode`."""
    return convert_to_unicode(text, encoding, errors)


def lowercase_and_normalize(text):
    """Lower-cases, NFD-decomposes and drops non-spacing marks (accents).

    Example:
        >>> lowercase_and_normalize("Café")
        'cafe'
    """
    text = unicodedata.normalize("NFD", text.lower())
    return "".join(ch for ch in text if unicodedata.category(ch) != "Mn")


def is_one_of(x, ys):
    """Whether `x` is (by identity) one of `ys`; unlike `in`, never calls `__eq__`."""
    return any(x is y for y in ys)


def softmax(x, axis=-1):
    """Numerically stable numpy softmax."""
    x = np.asarray(x)
    x = np.exp(x - x.max(axis=axis, keepdims=True))
    return x / x.sum(axis=axis, keepdims=True)


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
    if isinstance(indices, (list, tuple)):
        if len(indices) != len(sequences):
            raise ValueError(
                f"truncate_sequences: got {len(indices)} indices for {len(sequences)} sequences"
            )
        # Keep each index with its own sequence when None/empty ones are skipped.
        indices = [i for i, s in zip(indices, sequences, strict=True) if s]
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


def text_segmentate(text, maxlen, seps="\n", strips=None):
    """Splits a text into pieces of at most `maxlen` characters at separators.

    The text is split at `seps[0]` and the parts are packed greedily into pieces
    (each part keeps its separator); a piece still longer than `maxlen` is split
    again with `seps[1:]`. Pieces are stripped of whitespace and of the characters
    in `strips`. A piece can exceed `maxlen` only where no separator allows a cut,
    or (as in bert4keras) through a run of consecutive separators, which always
    stays with the piece before it.

    Args:
        text: the text.
        maxlen: the largest piece length wanted.
        seps: separators in order of preference (a string of characters or a list
            of strings), e.g. "\\n。！？；，".
        strips: characters to strip from both ends of each piece.

    Returns:
        The list of pieces.

    Example:
        >>> text_segmentate("今天天气很好。我们去公园吧！好的", 8, "。！")
        ['今天天气很好。', '我们去公园吧！', '好的']
    """
    if not isinstance(text, str):
        raise TypeError(f"text_segmentate: text must be a str, got {type(text).__name__}")
    text = text.strip().strip(strips)
    if not seps or len(text) <= maxlen:
        return [text]
    sep, finer = seps[0], seps[1:]
    parts = text.split(sep)
    pieces, current = [], ""
    for i, part in enumerate(parts):
        # Close the current piece when this part and its separator would overflow it.
        if current and part and len(current) + len(part) > maxlen - 1:
            pieces.extend(text_segmentate(current, maxlen, finer, strips))
            current = ""
        current += part if i + 1 == len(parts) else part + sep
    if current:
        pieces.extend(text_segmentate(current, maxlen, finer, strips))
    return pieces


def longest_common_substring(source, target):
    """Longest common contiguous run of two sequences.

    Returns:
        `(length, (i0, i1, j0, j1))` with `source[i0:i1] == target[j0:j1]`; the first
        such run (scanning source, then target) when several are longest.
    """
    best, span = 0, (0, 0, 0, 0)
    previous = [0] * (len(target) + 1)
    for i, s in enumerate(source, 1):
        # current[j]: length of the common run ending at source[i - 1], target[j - 1].
        current = [0] * (len(target) + 1)
        for j, t in enumerate(target, 1):
            if s == t:
                current[j] = previous[j - 1] + 1
                if current[j] > best:
                    best = current[j]
                    span = (i - best, i, j - best, j)
        previous = current
    return best, span


def longest_common_subsequence(source, target):
    """Longest common (not necessarily contiguous) subsequence of two sequences.

    Returns:
        `(length, mapping)` where mapping lists the matched `(i, j)` index pairs,
        increasing in both, with `source[i] == target[j]`.

    Example:
        >>> longest_common_subsequence("abcde", "ace")
        (3, [(0, 0), (2, 1), (4, 2)])
    """
    n, m = len(source), len(target)
    # table[i][j]: LCS length of source[:i] and target[:j].
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            if source[i - 1] == target[j - 1]:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i][j - 1], table[i - 1][j])
    length, mapping = table[n][m], []
    # Walk back from the end; on a tie drop the source item (bert4keras' choice).
    i, j = n - 1, m - 1
    while len(mapping) < length:
        if source[i] == target[j]:
            mapping.append((i, j))
            i, j = i - 1, j - 1
        elif table[i + 1][j] > table[i][j + 1]:
            j -= 1
        else:
            i -= 1
    return length, mapping[::-1]


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


def insert_arguments(**arguments):
    """Decorator adding keyword arguments (with defaults) to a method, stored on `self`.

    Example:
        >>> class Layer:
        ...     @insert_arguments(scale=1.0)
        ...     def __init__(self, units):
        ...         self.units = units
        >>> Layer(3, scale=2.0).scale
        2.0
    """

    def decorator(func):
        @functools.wraps(func)
        def new_func(self, *args, **kwargs):
            for key, default in arguments.items():
                setattr(self, key, kwargs.pop(key, default))
            return func(self, *args, **kwargs)

        return new_func

    return decorator


def delete_arguments(*arguments):
    """Decorator making a method reject the named keyword arguments with a TypeError."""

    def decorator(func):
        @functools.wraps(func)
        def new_func(self, *args, **kwargs):
            for key in arguments:
                if key in kwargs:
                    raise TypeError(
                        f"{type(self).__name__} got an unexpected keyword argument {key!r}"
                    )
            return func(self, *args, **kwargs)

        return new_func

    return decorator


class open:  # bert4keras' name: a drop-in for the builtin
    """bert4keras' `open`: the builtin file, optionally indexable by line.

    With `indexable=True` the line offsets are scanned once, then `f[i]` reads line
    `i` (with its newline) and `len(f)` is the number of lines, so a large file can
    be a `DataGenerator`'s data without loading it. `indexable` may also be a path:
    the offsets are cached there as JSON and reused when the file exists.

    Args:
        name, mode, encoding, errors: as the builtin `open`.
        indexable: False, True, or the path of the offsets cache.

    Example:
        >>> with open("train.txt", encoding="utf-8", indexable=True) as f:  # doctest: +SKIP
        ...     line = f[100]
    """

    def __init__(self, name, mode="r", encoding=None, errors="strict", indexable=False):
        self.name = name
        # The builtin refuses an `errors` argument in binary mode.
        text_errors = None if "b" in mode else errors
        self.file = builtins.open(name, mode, encoding=encoding, errors=text_errors)
        self.encoding = encoding
        self.errors = errors
        self.iterator = None
        if indexable:
            if isinstance(indexable, str) and os.path.exists(indexable):
                with builtins.open(indexable) as cache:
                    self.offsets = json.load(cache)
            else:
                self.create_indexes()
                if isinstance(indexable, str):
                    with builtins.open(indexable, "w") as cache:
                        json.dump(self.offsets, cache)

    def create_indexes(self):
        """Scans the file once for the offset of every line."""
        self.offsets, offset = [], 0
        while self.file.readline():
            self.offsets.append(offset)
            offset = self.file.tell()
        self.file.seek(0)

    def __getitem__(self, key):
        self.file.seek(self.offsets[key])
        return self.file.readline()

    def __len__(self):
        if not hasattr(self, "offsets"):
            raise TypeError("open: len() needs indexable=True")
        return len(self.offsets)

    def __iter__(self):
        if hasattr(self, "offsets"):
            for i in range(len(self)):
                yield self[i]
        else:
            yield from self.file

    def __next__(self):
        if self.iterator is None:
            self.iterator = self.__iter__()
        return next(self.iterator)

    next = __next__

    def read(self, *args):
        return self.file.read(*args)

    def readline(self):
        return self.file.readline()

    def readlines(self):
        return self.file.readlines()

    def write(self, text):
        return self.file.write(text)

    def flush(self):
        self.file.flush()

    def close(self):
        self.file.close()

    def tell(self):
        return self.file.tell()

    def seek(self, offset=0):
        return self.file.seek(offset)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
