"""The error type and the reader interface shared by every checkpoint format."""

from __future__ import annotations

import difflib
import os

import numpy as np

# numpy's limits: at most 64 axes (32 before numpy 2), and the byte size of an array,
# zero-length axes aside, must fit in a signed 64-bit integer.
MAX_RANK = 64 if int(np.__version__.split(".")[0]) >= 2 else 32
_MAX_BYTES = 2**63 - 1


def shape_problem(shape: tuple[int, ...], itemsize: int) -> str | None:
    """Says why numpy could not hold an array of this shape, or None if it can.

    Checked before any array is made, so a hostile header (a zero-length axis times
    2**62, a hundred axes) is an error naming the file, not numpy's "array is too big"
    later. numpy multiplies the non-zero dimensions and the item size with overflow
    checks; so do we.
    """
    if len(shape) > MAX_RANK:
        return f"has {len(shape)} dimensions (numpy holds at most {MAX_RANK})"
    nbytes = max(itemsize, 1)
    for dim in shape:
        if dim < 0:
            return f"has a negative dimension in shape {list(shape)}"
        if dim:
            nbytes *= dim
            if nbytes > _MAX_BYTES:
                return f"has shape {list(shape)}, too large for any array (over 2**63 bytes)"
    return None


class CheckpointError(ValueError):
    """A checkpoint file is missing, of an unknown format, damaged, or unsupported.

    The message always names the file involved (and the tensor, where one is concerned).
    """


class MissingTensorError(CheckpointError, KeyError):
    """A tensor name was asked for that the checkpoint does not hold.

    It is both a `CheckpointError` and a `KeyError`, so mapping-style code can catch either.
    """

    def __str__(self) -> str:
        # KeyError would show the message through repr(), quotes and escapes included.
        return str(self.args[0]) if self.args else ""


class CheckpointReader:
    """Read-only, lazy access to the tensors of one checkpoint.

    Subclasses fill `_entries` (tensor name -> whatever the format needs to find the tensor)
    and implement `_shape`, `_dtype`, `_get` and `_close`. Tensors are read one at a time,
    only when `get` asks for them.

    Attributes:
        format: Short format name: "tf", "safetensors" or "torch".
        path: The resolved path of the checkpoint (for TensorFlow: the prefix).
        skipped: Entries present in the file that this reader cannot return, mapped to the
            reason (for example partitioned TensorFlow variables). They are not in `names()`.
    """

    format: str = ""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.skipped: dict[str, str] = {}
        self._entries: dict[str, object] = {}
        self._closed = False

    # -- to implement -------------------------------------------------------------------------
    def _shape(self, name: str) -> tuple[int, ...]:
        raise NotImplementedError

    def _dtype(self, name: str) -> np.dtype:
        raise NotImplementedError

    def _get(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def _read_into(self, name: str, out: np.ndarray) -> None:
        # Formats that can read bytes straight into memory override this.
        value = self._get(name)
        out.reshape(-1).view(np.uint8)[:] = np.ascontiguousarray(value).reshape(-1).view(np.uint8)

    def _close(self) -> None:
        pass

    # -- public interface ---------------------------------------------------------------------
    def names(self) -> list[str]:
        """Returns the sorted names of the readable tensors."""
        return sorted(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        """Returns the shape of tensor `name` without reading its data.

        Args:
            name: A tensor name from `names()`.
        """
        self._check(name)
        return tuple(self._shape(name))

    def dtype(self, name: str) -> np.dtype:
        """Returns the numpy dtype of tensor `name` without reading its data.

        Args:
            name: A tensor name from `names()`.
        """
        self._check(name)
        return np.dtype(self._dtype(name))

    def get(self, name: str) -> np.ndarray:
        """Reads tensor `name` from the file and returns it as a new numpy array.

        Args:
            name: A tensor name from `names()`.

        Raises:
            MissingTensorError: `name` is not in the checkpoint.
            CheckpointError: the tensor's bytes are unreadable or fail their checksum.
        """
        self._check(name)
        return self._get(name)

    def read_into(self, name: str, out: np.ndarray) -> np.ndarray:
        """Reads tensor `name` into the caller's array `out` instead of a new one.

        No other copy of the tensor is made where the format allows (safetensors reads the
        file's bytes straight into `out`): a reader filling a model's own memory this way
        adds nothing to the peak.

        Args:
            name: A tensor name from `names()`.
            out: A writable, C-contiguous array of the tensor's dtype and shape.

        Returns:
            `out`.

        Raises:
            MissingTensorError: `name` is not in the checkpoint.
            CheckpointError: the tensor's bytes are unreadable, or `out` does not fit.
        """
        self._check(name)
        shape, dtype = tuple(self._shape(name)), np.dtype(self._dtype(name))
        if (
            tuple(out.shape) != shape
            or out.dtype != dtype
            or not out.flags.c_contiguous
            or not out.flags.writeable
        ):
            raise CheckpointError(
                f"cannot read tensor {name!r} of {self.path} ({dtype.name} {list(shape)}) into "
                f"a{' read-only' if not out.flags.writeable else ''} "
                f"{'' if out.flags.c_contiguous else 'non-contiguous '}"
                f"{out.dtype.name} array of shape {list(out.shape)}"
            )
        self._read_into(name, out)
        return out

    def close(self) -> None:
        """Releases the open files. Further reads raise CheckpointError."""
        if not self._closed:
            self._closed = True
            self._close()

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        return iter(self.names())

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self)} tensors"
        return f"<{type(self).__name__} format={self.format!r} path={self.path!r} ({state})>"

    # -- helpers ------------------------------------------------------------------------------
    def _check(self, name: str) -> None:
        if self._closed:
            raise CheckpointError(f"checkpoint {self.path} is closed")
        if isinstance(name, str) and name in self._entries:
            return
        if name in self.skipped:
            raise MissingTensorError(
                f"tensor {name!r} in {self.path} cannot be read: {self.skipped[name]}"
            )
        close = difflib.get_close_matches(str(name), list(self._entries), n=3)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise MissingTensorError(
            f"tensor {name!r} not found in {self.path} ({len(self)} tensors){hint}"
        )
