"""Writing safetensors: one file, or a Hugging Face sharded set with its index.

A set too large for one file of `max_shard_size` bytes is split, tensors kept in the order
given (a layer's tensors stay together), into ``model-00001-of-0000N.safetensors`` ... plus
``model.safetensors.index.json`` (``{"metadata": {"total_size": data bytes},
"weight_map": {tensor: shard}}``), the layout `transformers`' ``from_pretrained`` reads.
The limit counts a file's whole size, header included; only a single tensor larger than
the limit makes a larger file (holding that tensor alone). A set that fits in one file is
written as ``model.safetensors`` with no index, as ``save_pretrained`` does.

Tensors are written one at a time straight from their arrays (no copy of a whole file in
memory), and a value may be computed only when it is written: anything with ``shape`` and
``dtype`` attributes that `np.asarray` turns into the array.

Crash safety follows `atomic`: a single file is written under a temporary name and renamed
into place. A sharded set (like a TensorFlow checkpoint, several files that no rename swaps
at once) keeps the invariant *an index is only present with the shards it lists*: the new
shards and index are written under temporary names; the old set, if any, is kept complete as
``*.bak`` (shards hard-linked, an index listing the links) before the old index goes; then
the new shards and the new index move into place; the backup and any stale file of the old
set are deleted last. `detect_format` loads the backup when the index is missing.
"""

from __future__ import annotations

import json
import os
import re
import sys

import numpy as np

from .atomic import BACKUP_SUFFIX, fsync_directory, fsync_file, link_or_copy
from .base import CheckpointError
from .safetensors_format import _DTYPES

__all__ = ["DEFAULT_MAX_SHARD_SIZE", "parse_size", "sharded_names", "write_safetensors"]

# The Hub's long-standing shard size (transformers 4's default): a 7B model in bfloat16 is
# three files; anything up to ~2.5B parameters in bfloat16 stays one file.
DEFAULT_MAX_SHARD_SIZE = "5GB"
_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B|B)?\s*$", re.IGNORECASE)
_CODES = {dtype.newbyteorder("="): code for code, dtype in _DTYPES.items()}
_INDEX_SUFFIX = ".safetensors.index.json"


def parse_size(size) -> int:
    """Bytes from an int or a string such as ``"2GB"`` (10**9) or ``"500MiB"`` (2**20).

    Units are B, KB, MB, GB, TB (powers of 1000, as transformers counts) and KiB, MiB, GiB,
    TiB (powers of 1024), in any case.
    """
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        value = int(size)
    else:
        match = _SIZE.match(size) if isinstance(size, str) else None
        if match is None:
            raise ValueError(
                f"max_shard_size must be a number of bytes or a string like '5GB' or '500MiB' "
                f"(units {', '.join(u.replace('I', 'i') for u in _UNITS)}), got {size!r}"
            )
        value = int(float(match.group(1)) * _UNITS[(match.group(2) or "B").upper()])
    if value <= 0:
        raise ValueError(f"max_shard_size must be positive, got {size!r}")
    return value


def sharded_names(path: str, count: int) -> tuple[str, str, list[str]]:
    """(single file, index, shard files) that a set saved at `path` is written under.

    ``out/model.safetensors`` (or ``out/model.safetensors.index.json``) gives
    ``out/model.safetensors``, ``out/model.safetensors.index.json`` and
    ``out/model-00001-of-00003.safetensors`` ...
    """
    if path.endswith(_INDEX_SUFFIX):
        base = path[: -len(_INDEX_SUFFIX)]
        single = base + ".safetensors"
    elif path.endswith(".safetensors"):
        base, single = path[: -len(".safetensors")], path
    else:
        base, single = path, path
    shards = [f"{base}-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
    return single, base + _INDEX_SUFFIX, shards


def _spec(path: str, name, value):
    """(value, shape, dtype) of one tensor to write, refusing names and dtypes of no use."""
    if not isinstance(name, str) or not name or name == "__metadata__":
        raise CheckpointError(f"cannot write {path}: invalid tensor name {name!r}")
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        value = np.asarray(value)
    dtype = np.dtype(value.dtype)
    if dtype.newbyteorder("=") not in _CODES:
        raise CheckpointError(
            f"cannot write tensor {name!r} of dtype {dtype} to {path}: "
            "safetensors holds only numeric tensors"
        )
    shape = tuple(int(d) for d in value.shape)
    return value, shape, dtype


def _header_entry(name, shape, dtype, begin, end) -> dict:
    code = _CODES[dtype.newbyteorder("=")]
    return {name: {"dtype": code, "shape": list(shape), "data_offsets": [begin, end]}}


def _plan(specs, metadata, limit):
    """Splits [(name, value, shape, dtype, nbytes)] into shards of at most `limit` bytes.

    A file's size is bounded from above (its header counted with offsets of the largest
    width possible), so every shard holding more than one tensor is within the limit.
    """
    digits = len(str(max(limit, sum(s[4] for s in specs))))
    fixed = len(json.dumps({"__metadata__": metadata})) + 8 + 8  # length field, padding
    shards, current, size = [], [], fixed
    for spec in specs:
        name, _, shape, dtype, nbytes = spec
        entry = json.dumps(_header_entry(name, shape, dtype, 10**digits, 10**digits))
        cost = len(entry) + nbytes  # "{...}" of the entry stands in for its ", " separator
        if current and size + cost > limit:
            shards.append(current)
            current, size = [], fixed
        current.append(spec)
        size += cost
    if current or not shards:
        shards.append(current)
    return shards


def _little_endian(array: np.ndarray) -> np.ndarray:
    order = array.dtype.byteorder
    if order == ">" or (order == "=" and sys.byteorder == "big"):
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array) if array.ndim else array.reshape(1)


def _write_file(path: str, specs, metadata: dict) -> int:
    """Writes one safetensors file (not atomically: `path` is a temporary name).

    Tensors go in order of decreasing item size, so that every tensor's data starts at a
    multiple of its item size, as the safetensors library lays them out. Returns the data
    bytes written.
    """
    ordered = sorted(specs, key=lambda s: -s[3].itemsize)  # stable: given order otherwise
    header, offset = {"__metadata__": metadata}, 0
    for name, _, shape, dtype, nbytes in ordered:
        header.update(_header_entry(name, shape, dtype, offset, offset + nbytes))
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format pads the header with spaces to 8 bytes
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for name, value, shape, dtype, nbytes in ordered:
            array = np.asarray(value)
            if tuple(array.shape) != shape or array.dtype != dtype:
                raise CheckpointError(
                    f"cannot write {path}: tensor {name!r} was announced as {dtype.name} "
                    f"{list(shape)} but is {array.dtype.name} {list(array.shape)}"
                )
            if nbytes:
                f.write(memoryview(_little_endian(array).reshape(-1).view(np.uint8)))
            del array
    return offset


def _old_shards(index: str) -> list[str]:
    """The shard files an existing index lists (in its folder), or [] if unreadable."""
    try:
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f).get("weight_map") or {}
    except (OSError, ValueError, AttributeError):
        return []
    directory = os.path.dirname(index)
    shards = []
    for shard in sorted({s for s in weight_map.values() if isinstance(s, str)}):
        if os.path.basename(shard) == shard and shard not in (".", ".."):
            shards.append(os.path.join(directory, shard))
    return shards


def _remove(path: str) -> None:
    if os.path.lexists(path):
        os.remove(path)


def _remove_set(index: str, keep=()) -> None:
    """Deletes a sharded set: its index first (never an index without its shards)."""
    shards = _old_shards(index)
    _remove(index)
    for shard in shards:
        if shard not in keep:
            _remove(shard)


def write_safetensors(
    tensors: dict,
    path: str | os.PathLike,
    metadata: dict | None = None,
    max_shard_size=None,
) -> str:
    """Writes tensors as safetensors that Hugging Face transformers accepts, sharded if large.

    Args:
        tensors: Mapping of tensor name to array (anything `np.asarray` accepts; or an
            object with ``shape`` and ``dtype`` whose array is computed when written).
        path: The ``.safetensors`` file to write (missing directories are created); a set
            of several shards is named after it (``model.safetensors`` ->
            ``model-00001-of-00002.safetensors`` + ``model.safetensors.index.json``).
        metadata: Extra string metadata of every file; ``{"format": "pt"}`` is always
            included.
        max_shard_size: Largest file to write, in bytes or as a string (``"2GB"``,
            ``"500MiB"``; see `parse_size`); default ``DEFAULT_MAX_SHARD_SIZE`` ("5GB").

    Returns:
        The path written: the single file, or the index of a sharded set.

    Raises:
        CheckpointError: a tensor name or dtype safetensors cannot hold, or a failed write
            (the previous checkpoint at `path` is then left as it was).
    """
    path = os.fspath(path)
    limit = parse_size(DEFAULT_MAX_SHARD_SIZE if max_shard_size is None else max_shard_size)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta["format"] = "pt"
    specs = []
    for name, value in tensors.items():
        value, shape, dtype = _spec(path, name, value)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        specs.append((name, value, shape, dtype, nbytes))
    shards = _plan(specs, meta, limit)
    single, index, shard_paths = sharded_names(path, len(shards))
    os.makedirs(os.path.dirname(os.path.abspath(single)), exist_ok=True)
    written = []
    try:
        if len(shards) == 1:
            tmp = single + ".tmp"
            written.append(tmp)
            _write_file(tmp, shards[0], meta)
            fsync_file(tmp)
            os.replace(tmp, single)  # the old file or the new one, whenever a crash comes
            fsync_directory(os.path.dirname(os.path.abspath(single)))
            if os.path.exists(index) and index != single:
                # A set saved here before would shadow nothing (the single file is read
                # first) but would leave two checkpoints in one place.
                _remove_set(index, keep=(single,))
            return single
        return _write_sharded(shards, shard_paths, single, index, meta, written)
    except Exception as exc:
        for tmp in written:
            if tmp.endswith(".tmp") and os.path.exists(tmp):
                os.remove(tmp)
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"cannot write {path}: {exc}") from exc


def _write_sharded(shards, shard_paths, single, index, meta, written) -> str:
    directory = os.path.dirname(os.path.abspath(index))
    weight_map, total = {}, 0
    for specs, shard in zip(shards, shard_paths, strict=True):
        tmp = shard + ".tmp"
        written.append(tmp)
        total += _write_file(tmp, specs, meta)
        fsync_file(tmp)
        weight_map.update({spec[0]: os.path.basename(shard) for spec in specs})
    tmp_index = index + ".tmp"
    written.append(tmp_index)
    with open(tmp_index, "w", encoding="utf-8") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")
    fsync_file(tmp_index)

    # The old set is kept complete under *.bak while its files are replaced (or, after an
    # interrupted save, already is: then the backup stays until the new index is in).
    backup = index + BACKUP_SUFFIX
    if os.path.exists(index):
        old = _old_shards(index)
        with open(index, encoding="utf-8") as f:
            try:
                old_index = json.load(f)
            except ValueError:
                old_index = None
        if isinstance(old_index, dict) and isinstance(old_index.get("weight_map"), dict):
            for shard in old:
                if os.path.isfile(shard):
                    link_or_copy(shard, shard + BACKUP_SUFFIX)
            old_index["weight_map"] = {
                k: (v + BACKUP_SUFFIX if isinstance(v, str) else v)
                for k, v in old_index["weight_map"].items()
            }
            with open(backup + ".tmp", "w", encoding="utf-8") as f:
                json.dump(old_index, f)
            fsync_file(backup + ".tmp")
            os.replace(backup + ".tmp", backup)
        os.remove(index)
        fsync_directory(directory)
    for shard in shard_paths:
        os.replace(shard + ".tmp", shard)
    fsync_directory(directory)
    os.replace(tmp_index, index)  # from here on the new set is the one that loads
    fsync_directory(directory)
    # Stale files last: a single file written here before (it would be read first), the old
    # set's shards the new one does not reuse, the backup.
    if single != index and os.path.exists(single):
        os.remove(single)
    kept = _old_shards(backup) if os.path.exists(backup) else []
    _remove(backup)
    for shard in kept:
        _remove(shard)
        original = shard[: -len(BACKUP_SUFFIX)]
        if shard.endswith(BACKUP_SUFFIX) and original not in shard_paths:
            _remove(original)
    return index
