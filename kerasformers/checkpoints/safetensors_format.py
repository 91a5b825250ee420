"""Safetensors checkpoints: single files and Hugging Face sharded sets (``*.index.json``).

A safetensors file is an 8-byte little-endian header length, a JSON header mapping each tensor
name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the end of the
header) plus an optional ``"__metadata__"`` dict of strings, then the raw little-endian bytes.

Each file is validated by the `safetensors` package itself (`safe_open`) when it is opened.
Tensor bytes are then read straight into a fresh, 64-byte aligned numpy array at the offsets
from the header (or into a caller's array: `read_into`): that is ~4x faster than
`safe_open(...).get_tensor` with numpy (which copies twice), and it handles bfloat16 and
float8 (through `ml_dtypes`), which not every safetensors release returns for numpy.
Writing is `safetensors_writer`'s.
"""

from __future__ import annotations

import json
import math
import os
import struct

import ml_dtypes
import numpy as np

from .atomic import BACKUP_SUFFIX
from .base import CheckpointError, CheckpointReader, shape_problem

__all__ = ["SafetensorsReader", "aligned_empty", "is_index_path"]

_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
    "C64": np.dtype("<c8"),
}
_MAX_HEADER = 100_000_000  # the limit the safetensors library itself enforces
# A valid header nests three levels ({name: {"shape": [...]}}); json.loads recurses
# once per level and a hostile header of nested brackets ends in RecursionError.
_MAX_DEPTH = 64
_ALIGNMENT = 64  # bytes; what jax needs to use a host buffer without copying it
_QUOTE, _BACKSLASH = ord('"'), ord("\\")


def _parse_json(raw, path, what, usual):
    """JSON bytes of `path` -> object, refusing deep nesting (RecursionError) and bad JSON.

    `what` names the part in the nesting error ("index: it" -> "... is not a valid
    index: it nests 70 levels deep").
    """
    kind, part = what.split(": ")
    depth = _nesting_depth(raw)
    if depth > _MAX_DEPTH:
        raise CheckpointError(
            f"{path} is not a valid {kind}: {part} nests {depth} levels deep ({usual}, at "
            f"most {_MAX_DEPTH} are read)"
        )
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise CheckpointError(
            f"{path} is not a valid {kind}: {part} is not valid JSON ({exc})"
        ) from None


def _nesting_depth(raw: bytes, chunk: int = 1 << 20) -> int:
    """How deep the brackets of a JSON text nest, brackets inside strings not counted.

    Linear in the size, in numpy, a chunk at a time: a regular expression skipping the
    strings takes quadratic time on a header of many escaped quotes.
    """
    data = np.frombuffer(raw, np.uint8)
    depth = deepest = 0
    backslashes = 0  # the run of backslashes that ended the previous chunk
    in_string = 0
    for start in range(0, len(data), chunk):
        part = data[start : start + chunk]
        index = np.arange(len(part))
        is_backslash = part == _BACKSLASH
        # Index of the last non-backslash at or before each position (-1: none in this chunk).
        last_other = np.maximum.accumulate(np.where(is_backslash, -1, index))
        # Backslashes right before each position: an odd run escapes a quote.
        run = np.empty(len(part), np.int64)
        run[0] = backslashes
        run[1:] = index[:-1] - last_other[:-1] + np.where(last_other[:-1] < 0, backslashes, 0)
        quotes = (part == _QUOTE) & (run % 2 == 0)
        outside = (np.cumsum(quotes) + in_string) % 2 == 0
        opening = ((part == ord("[")) | (part == ord("{"))) & outside
        closing = ((part == ord("]")) | (part == ord("}"))) & outside
        levels = depth + np.cumsum(opening.astype(np.int64) - closing)
        deepest = max(deepest, int(levels.max()))
        depth = int(levels[-1])
        in_string = int(np.count_nonzero(quotes) + in_string) % 2
        tail = len(part) - 1 - last_other[-1]
        backslashes = int(tail + (backslashes if last_other[-1] < 0 else 0))
    return deepest


def _parse_header(f, path: str) -> tuple[dict, dict, int, int]:
    """Reads and validates the header of the open file `f` (named `path`).

    Returns (header, metadata, data start, file size).
    """
    try:
        size = os.fstat(f.fileno()).st_size
        f.seek(0)
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is too short ({size} bytes) to be a safetensors file")
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            raise CheckpointError(
                f"{path} is not a valid safetensors file: header length {length} does not "
                f"fit in the file ({size} bytes)"
            )
        if length > _MAX_HEADER:
            raise CheckpointError(
                f"{path} is not a valid safetensors file: its header of {length} bytes is "
                f"over the {_MAX_HEADER}-byte limit of the format"
            )
        raw = _read_exactly(f, length, path, "its header")
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    header = _parse_json(raw, path, "safetensors file: its header", "a safetensors header nests 3")
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a valid safetensors file: header is not an object")
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata, 8 + length, size


def _read_exactly(f, nbytes: int, path: str, what: str) -> bytes:
    chunks, got = [], 0
    while got < nbytes:
        chunk = f.read(nbytes - got)
        if not chunk:
            raise CheckpointError(f"{path} is truncated: {what} is cut short")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _validate_with_library(path: str) -> None:
    try:
        from safetensors import safe_open

        with safe_open(path, framework="numpy"):
            pass
    except ImportError:  # pragma: no cover - safetensors is a hard dependency
        return
    except Exception as exc:  # SafetensorError derives from Exception only
        raise CheckpointError(f"{path} is not a valid safetensors file: {exc}") from None


def aligned_empty(nbytes: int, alignment: int = _ALIGNMENT) -> np.ndarray:
    """An uninitialised uint8 array of `nbytes` whose data starts on an `alignment` boundary.

    Aligned buffers can become backend arrays without a copy (jax aliases 64-byte aligned
    host memory on the CPU).
    """
    raw = np.empty(nbytes + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start : start + nbytes]


def is_index_path(path: str) -> bool:
    """True for a sharded set's index (``*.index.json``, or its backup ``*.index.json.bak``)."""
    return path.endswith((".json", ".json" + BACKUP_SUFFIX))


class SafetensorsReader(CheckpointReader):
    """Reads a ``.safetensors`` file, or a sharded set through its ``.index.json``, lazily.

    Each file is opened once, when the reader is made, and read tensor by tensor by seeking
    to the tensor's bytes: no file is ever read (or memory-mapped) whole. A sharded set is
    checked completely up front: a shard the index lists but the folder lacks, or a tensor
    the index puts in a shard that does not hold it, is an error naming the index, the
    shard and the tensor before anything is read.

    Args:
        path: A ``*.safetensors`` file, or a ``*.safetensors.index.json`` (Hugging Face's
            ``{"metadata": {...}, "weight_map": {tensor: shard file}}``, shards in the
            index's folder).
    """

    format = "safetensors"

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self.metadata: dict = {}
        self._files: dict[str, object] = {}
        try:
            if is_index_path(self.path):
                self._open_sharded()
            else:
                header, metadata, start, size = self._open_file(self.path)
                self.metadata = metadata
                for name, info in header.items():
                    self._add_entry(self.path, name, info, start, size)
                _validate_with_library(self.path)
        except BaseException:
            self._close()
            raise

    def _open_file(self, path: str):
        try:
            f = open(path, "rb", buffering=0)
        except OSError as exc:
            raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
        self._files[path] = f
        return _parse_header(f, path)

    def _open_sharded(self) -> None:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise CheckpointError(f"cannot read {self.path}: {exc.strerror}") from None
        index = _parse_json(raw, self.path, "index: it", "an index nests 2")
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) for v in weight_map.values()
        ):
            raise CheckpointError(f"{self.path} has no valid 'weight_map' of tensor -> file")
        self.metadata = index.get("metadata") or {}
        directory = os.path.dirname(self.path)
        wanted: dict[str, list] = {}
        for name, shard in weight_map.items():
            if os.path.isabs(shard) or ".." in shard.replace("\\", "/").split("/"):
                raise CheckpointError(f"{self.path} points outside its directory: {shard!r}")
            wanted.setdefault(shard, []).append(name)
        # Every shard must be there before any is parsed: the error lists all that are not.
        missing = [s for s in sorted(wanted) if not os.path.isfile(os.path.join(directory, s))]
        if missing:
            listed = ", ".join(
                f"{s} (holding {len(wanted[s])} tensor(s), e.g. {wanted[s][0]!r})"
                for s in missing[:5]
            )
            raise CheckpointError(
                f"{self.path} lists {len(wanted)} shard(s), of which {len(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} missing from {directory}: {listed}"
            )
        headers = {}
        for shard in sorted(wanted):
            shard_path = os.path.join(directory, shard)
            headers[shard] = (shard_path, *self._open_file(shard_path))
        for shard, names in sorted(wanted.items()):
            shard_path, header, _, start, size = headers[shard]
            for name in names:
                if name not in header:
                    holders = [s for s, h in headers.items() if name in h[1]]
                    where = f"it is in {', '.join(holders)}" if holders else "no shard holds it"
                    raise CheckpointError(
                        f"{self.path} maps tensor {name!r} to {shard_path}, which does not "
                        f"hold it ({where})"
                    )
                self._add_entry(shard_path, name, header[name], start, size)
        # Our checks above give the precise messages; the library then checks the rest
        # (overlapping or non-contiguous data ranges, for instance).
        for shard_path, *_ in headers.values():
            _validate_with_library(shard_path)

    def _add_entry(self, path: str, name: str, info, start: int, size: int) -> None:
        def bad(why: str) -> CheckpointError:
            return CheckpointError(f"{path} is not a valid safetensors file: tensor {name!r} {why}")

        if not isinstance(info, dict):
            raise bad("has no description")
        dtype = _DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise CheckpointError(
                f"{path}: tensor {name!r} has dtype {info.get('dtype')!r}, which is not "
                f"supported (supported: {', '.join(sorted(_DTYPES))})"
            )
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise bad(f"has an invalid shape {shape!r}")
        problem = shape_problem(tuple(shape), dtype.itemsize)
        if problem:
            raise bad(problem)
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(v) is int for v in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= size - start
        ):
            raise bad(f"has data offsets {offsets!r} outside the file")
        nbytes = offsets[1] - offsets[0]
        if nbytes != math.prod(shape) * dtype.itemsize:
            raise bad(f"has {nbytes} bytes for shape {shape} of {dtype.name}")
        self._entries[name] = (path, dtype, tuple(shape), start + offsets[0], nbytes)

    def _shape(self, name):
        return self._entries[name][2]

    def _dtype(self, name):
        return self._entries[name][1].newbyteorder("=")

    def _get(self, name):
        path, dtype, shape, offset, nbytes = self._entries[name]
        buf = aligned_empty(nbytes)
        self._read_bytes(name, buf)
        array = buf.view(dtype).reshape(shape)
        return array if array.dtype.isnative else array.astype(dtype.newbyteorder("="))

    def _read_into(self, name, out):
        if not self._entries[name][1].isnative:  # pragma: no cover - big-endian hosts only
            return super()._read_into(name, out)
        self._read_bytes(name, out.reshape(-1).view(np.uint8))

    def _read_bytes(self, name: str, buf: np.ndarray) -> None:
        """Fills the uint8 array `buf` with the bytes of tensor `name`."""
        path, _, _, offset, nbytes = self._entries[name]
        if not nbytes:
            return
        try:
            f = self._files[path]
            f.seek(offset)
            view, got = memoryview(buf), 0
            while got < nbytes:
                n = f.readinto(view[got:])
                if not n:
                    raise CheckpointError(f"{path} is truncated: tensor {name!r} is cut short")
                got += n
        except OSError as exc:
            raise CheckpointError(f"cannot read tensor {name!r} from {path}: {exc}") from None

    def _close(self):
        for f in self._files.values():
            f.close()
        self._files.clear()
