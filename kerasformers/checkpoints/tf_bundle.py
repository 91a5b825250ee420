"""TensorFlow checkpoints (the "TensorBundle" V2 format), read and written without TensorFlow.

A checkpoint with prefix ``P`` is ``P.index`` (a sorted table, see `sstable`) plus the data
files ``P.data-00000-of-0000N``. In the table, key ``""`` holds a ``BundleHeaderProto`` and every
other key is a tensor name holding a ``BundleEntryProto``::

    BundleHeaderProto { int32 num_shards = 1; Endianness endianness = 2; VersionDef version = 3; }
    BundleEntryProto  { DataType dtype = 1; TensorShapeProto shape = 2; int32 shard_id = 3;
                        int64 offset = 4; int64 size = 5; fixed32 crc32c = 6;
                        repeated TensorSliceProto slices = 7; }

The tensor's raw bytes sit at ``offset`` in data file ``shard_id`` and ``crc32c`` is the masked
CRC-32C of them. Strings are stored as varint64 lengths, a 4-byte masked CRC-32C of the lengths,
then the string bytes; but both checksums see each length as a little-endian uint32 (uint64 if
it does not fit), not as its varint bytes, so the entry checksum of a string tensor is not the
CRC of its bytes on disk (``WriteStringTensor`` in ``tensor_bundle.cc``).
(`tensorflow/core/util/tensor_bundle/tensor_bundle.{h,cc}`, `tensor_bundle.proto`.)
"""

from __future__ import annotations

import glob
import math
import os
import struct
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from .atomic import BACKUP_SUFFIX, fsync_directory, fsync_file, link_or_copy, replace_file
from .base import CheckpointError, CheckpointReader, shape_problem
from .crc import crc32c, mask, masked_crc32c
from .sstable import (
    FormatError,
    TableWriter,
    decode_varint,
    encode_varint,
    field_bytes,
    field_fixed32,
    field_varint,
    parse_message,
    read_table,
    to_int64,
)

__all__ = ["TFCheckpointReader", "write_tf_checkpoint", "data_file_path"]

# TensorFlow DataType enum values (tensorflow/core/framework/types.proto) that we can read.
_NUMERIC_DTYPES = {
    1: np.dtype(np.float32),
    2: np.dtype(np.float64),
    3: np.dtype(np.int32),
    4: np.dtype(np.uint8),
    5: np.dtype(np.int16),
    6: np.dtype(np.int8),
    8: np.dtype(np.complex64),
    9: np.dtype(np.int64),
    10: np.dtype(np.bool_),
    14: np.dtype(ml_dtypes.bfloat16),
    17: np.dtype(np.uint16),
    18: np.dtype(np.complex128),
    19: np.dtype(np.float16),
    22: np.dtype(np.uint32),
    23: np.dtype(np.uint64),
    24: np.dtype(ml_dtypes.float8_e5m2),
    25: np.dtype(ml_dtypes.float8_e4m3fn),
    26: np.dtype(ml_dtypes.float8_e4m3fnuz),
    27: np.dtype(ml_dtypes.float8_e4m3b11fnuz),
    28: np.dtype(ml_dtypes.float8_e5m2fnuz),
}
_DT_STRING = 7
_UNREADABLE_DTYPES = {
    11: "qint8",
    12: "quint8",
    13: "qint32",
    15: "qint16",
    16: "quint16",
    20: "resource",
    21: "variant",
}
_TF_ENUM = {dtype: enum for enum, dtype in _NUMERIC_DTYPES.items()}
_STRING_DTYPE = np.dtype(object)
_TENSOR_BUNDLE_VERSION = 1  # kTensorBundleVersion: the consumer version we implement


def data_file_path(prefix: str, shard: int, num_shards: int) -> str:
    """Returns the name TensorFlow gives to data shard `shard` of `num_shards`."""
    return f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"


@dataclass(frozen=True)
class _Entry:
    dtype: np.dtype
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc: int


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for number, _, value in parse_message(buf):
        if number == 3 and value:
            raise FormatError("shape has unknown rank")
        if number != 2:
            continue
        if not isinstance(value, bytes):
            raise FormatError("malformed shape dimension")
        size = 0
        for sub_number, _, sub_value in parse_message(value):
            if sub_number == 1:
                size = to_int64(sub_value) if isinstance(sub_value, int) else -1
        if size < 0:
            raise FormatError(f"shape has a negative or unknown dimension ({size})")
        dims.append(size)
    return tuple(dims)


def _parse_header(buf: bytes) -> tuple[int, str]:
    num_shards, endianness = 0, 0
    min_consumer, bad_consumers = 0, []
    for number, _, value in parse_message(buf):
        if number == 1 and isinstance(value, int):
            num_shards = to_int64(value)
        elif number == 2 and isinstance(value, int):
            endianness = value
        elif number == 3 and isinstance(value, bytes):
            for sub_number, _, sub_value in parse_message(value):
                if sub_number == 2 and isinstance(sub_value, int):
                    min_consumer = sub_value
                elif sub_number == 3 and isinstance(sub_value, int):
                    bad_consumers.append(sub_value)
                elif sub_number == 3:  # packed repeated int32
                    pos = 0
                    while pos < len(sub_value):
                        item, pos = decode_varint(sub_value, pos)
                        bad_consumers.append(item)
    if num_shards < 1:
        raise FormatError(f"header has an invalid number of shards ({num_shards})")
    if endianness not in (0, 1):
        raise FormatError(f"header has an unknown endianness ({endianness})")
    if min_consumer > _TENSOR_BUNDLE_VERSION or _TENSOR_BUNDLE_VERSION in bad_consumers:
        raise FormatError(
            f"written by a newer TensorFlow (needs a reader of version >= {min_consumer})"
        )
    return num_shards, "<" if endianness == 0 else ">"


class TFCheckpointReader(CheckpointReader):
    """Reads a TensorFlow (TensorBundle V2) checkpoint lazily, checking every checksum.

    The index is parsed and every entry validated when the reader is created; a tensor's
    bytes are read, and their CRC-32C verified, only when `get` asks for it.

    Args:
        prefix: The checkpoint prefix (``.../model.ckpt``, with ``.index`` next to it).
        verify_checksums: Verify each tensor's CRC-32C when reading it (on by default).
    """

    format = "tf"

    def __init__(self, prefix: str | os.PathLike, verify_checksums: bool = True):
        super().__init__(prefix)
        self.index_path = self.path + ".index"
        self.verify_checksums = verify_checksums
        self._files: dict[int, object] = {}
        try:
            with open(self.index_path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise CheckpointError(f"cannot read {self.index_path}: {exc.strerror}") from None
        try:
            self._parse(data)
        except FormatError as exc:
            raise CheckpointError(
                f"{self.index_path} is not a valid checkpoint index: {exc}"
            ) from None

    def _parse(self, data: bytes) -> None:
        header = None
        raw = []
        previous = None
        for key, value in read_table(data):
            if previous is not None and key <= previous:
                raise FormatError(f"keys out of order or duplicated at {key!r}")
            previous = key
            if key == b"":
                header = value
            else:
                raw.append((key, value))
        if header is None:
            raise FormatError("no header entry")
        self.num_shards, self.byte_order = _parse_header(header)
        shard_sizes: dict[int, int] = {}
        for key, value in raw:
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                self.skipped[key.decode("utf-8", "backslashreplace")] = "name is not UTF-8"
                continue
            if name.startswith("\x00"):
                self.skipped[repr(name)] = "internal slice entry of a partitioned variable"
                continue
            try:
                entry = self._parse_entry(value, shard_sizes)
            except FormatError as exc:
                raise FormatError(f"entry for tensor {name!r}: {exc}") from None
            if isinstance(entry, str):
                self.skipped[name] = entry
            else:
                self._entries[name] = entry

    def _shard_size(self, shard: int, sizes: dict[int, int]) -> int:
        if shard not in sizes:
            path = data_file_path(self.path, shard, self.num_shards)
            try:
                sizes[shard] = os.path.getsize(path)
            except OSError:
                raise FormatError(f"its data file {path} is missing") from None
        return sizes[shard]

    def _parse_entry(self, value: bytes, shard_sizes: dict[int, int]) -> _Entry | str:
        dtype_enum, shape, shard, offset, size, crc, slices = 0, None, 0, 0, 0, 0, 0
        for number, _, field in parse_message(value):
            if number == 1 and isinstance(field, int):
                dtype_enum = field
            elif number == 2 and isinstance(field, bytes):
                shape = _parse_shape(field)
            elif number == 3 and isinstance(field, int):
                shard = to_int64(field)
            elif number == 4 and isinstance(field, int):
                offset = to_int64(field)
            elif number == 5 and isinstance(field, int):
                size = to_int64(field)
            elif number == 6 and isinstance(field, int):
                crc = field
            elif number == 7:
                slices += 1
        if slices:
            return f"partitioned variable stored as {slices} slices; slices are not supported"
        if dtype_enum == 0 or dtype_enum >= 100:
            raise FormatError(f"invalid dtype enum {dtype_enum}")
        if dtype_enum in _UNREADABLE_DTYPES:
            return f"TensorFlow dtype {_UNREADABLE_DTYPES[dtype_enum]} is not supported"
        if dtype_enum != _DT_STRING and dtype_enum not in _NUMERIC_DTYPES:
            return f"unknown TensorFlow dtype enum {dtype_enum}"
        shape = () if shape is None else shape
        if not 0 <= shard < self.num_shards:
            raise FormatError(f"shard id {shard} is not below the number of shards")
        if offset < 0 or size < 0:
            raise FormatError(f"negative offset or size ({offset}, {size})")
        dtype = _STRING_DTYPE if dtype_enum == _DT_STRING else _NUMERIC_DTYPES[dtype_enum]
        problem = shape_problem(shape, dtype.itemsize)
        if problem:
            raise FormatError(f"the tensor {problem}")
        count = math.prod(shape)
        if dtype_enum == _DT_STRING:
            # Each string costs at least a one-byte length, and the lengths carry a checksum.
            if size < count + 4:
                raise FormatError(f"{size} bytes cannot hold {count} strings")
        elif count * dtype.itemsize != size:
            raise FormatError(
                f"shape {list(shape)} of {dtype.name} needs {count * dtype.itemsize} bytes "
                f"but the entry says {size}"
            )
        file_size = self._shard_size(shard, shard_sizes)
        if offset + size > file_size:
            path = data_file_path(self.path, shard, self.num_shards)
            raise FormatError(
                f"bytes {offset}..{offset + size} lie beyond the end of {path} ({file_size} bytes)"
                " - the data file is truncated or does not belong to this index"
            )
        return _Entry(dtype, shape, shard, offset, size, crc)

    def _shape(self, name):
        return self._entries[name].shape

    def _dtype(self, name):
        return self._entries[name].dtype

    def _read(self, name: str, entry: _Entry) -> np.ndarray:
        path = data_file_path(self.path, entry.shard, self.num_shards)
        buf = np.empty(entry.size, dtype=np.uint8)
        if entry.size:
            f = self._files.get(entry.shard)
            try:
                if f is None:
                    f = self._files[entry.shard] = open(path, "rb", buffering=0)
                f.seek(entry.offset)
                view = memoryview(buf)
                got = 0
                while got < entry.size:
                    n = f.readinto(view[got:])
                    if not n:
                        break
                    got += n
            except OSError as exc:
                raise CheckpointError(f"cannot read tensor {name!r} from {path}: {exc}") from None
            if got < entry.size:
                raise CheckpointError(
                    f"{path} is truncated: tensor {name!r} needs bytes {entry.offset}.."
                    f"{entry.offset + entry.size} but the file ends at {entry.offset + got}"
                )
        strings = entry.dtype == _STRING_DTYPE  # checked in _decode_strings instead
        if self.verify_checksums and not strings and masked_crc32c(buf) != entry.crc:
            raise CheckpointError(
                f"checksum mismatch for tensor {name!r} in {path} (bytes {entry.offset}.."
                f"{entry.offset + entry.size}): the file is damaged"
            )
        return buf

    def _get(self, name):
        entry = self._entries[name]
        buf = self._read(name, entry)
        if entry.dtype == _STRING_DTYPE:
            return self._decode_strings(name, entry, buf)
        array = buf.view(entry.dtype.newbyteorder(self.byte_order)).reshape(entry.shape)
        if not array.dtype.isnative:
            array = array.astype(entry.dtype)
        return array

    def _decode_strings(self, name: str, entry: _Entry, buf: np.ndarray) -> np.ndarray:
        data = buf.tobytes()
        count = math.prod(entry.shape)
        path = data_file_path(self.path, entry.shard, self.num_shards)
        try:
            lengths, pos = [], 0
            for _ in range(count):
                length, pos = decode_varint(data, pos)
                lengths.append(length)
            if pos + 4 > len(data):
                raise FormatError("no room for the checksum of the lengths")
            crc = crc32c(_length_words(lengths))
            if data[pos : pos + 4] != struct.pack("<I", mask(crc)):
                raise FormatError("checksum mismatch in the string lengths: the file is damaged")
            pos += 4
            if sum(lengths) != len(data) - pos:
                raise FormatError("string lengths do not add up to the stored bytes")
            crc = crc32c(data[pos:], crc32c(data[pos - 4 : pos], crc))
            if self.verify_checksums and mask(crc) != entry.crc:
                raise FormatError("checksum mismatch: the file is damaged")
        except FormatError as exc:
            raise CheckpointError(f"string tensor {name!r} in {path}: {exc}") from None
        out = np.empty(count, dtype=object)
        for i, length in enumerate(lengths):
            out[i] = data[pos : pos + length]
            pos += length
        return out.reshape(entry.shape)

    def _close(self):
        for f in self._files.values():
            f.close()
        self._files.clear()


# -- writing -------------------------------------------------------------------------------------
def _prepare(name: str, value, path: str) -> tuple[int, np.ndarray | list[bytes], tuple]:
    array = np.asarray(value)
    if array.dtype.kind in "OSU":
        items = []
        for item in array.reshape(-1):
            if isinstance(item, str):
                item = item.encode("utf-8")
            if not isinstance(item, (bytes, np.bytes_)):
                raise CheckpointError(
                    f"cannot write tensor {name!r} to {path}: object arrays must hold bytes or str"
                )
            items.append(bytes(item))
        return _DT_STRING, items, array.shape
    enum = _TF_ENUM.get(array.dtype.newbyteorder("="))
    if enum is None:
        supported = ", ".join(sorted({d.name for d in _NUMERIC_DTYPES.values()}))
        raise CheckpointError(
            f"cannot write tensor {name!r} of dtype {array.dtype} to {path}; "
            f"supported: {supported}, and strings"
        )
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return enum, little.reshape(-1), array.shape


def _length_words(lengths: list[int]) -> bytes:
    # What TensorFlow checksums for string lengths: uint32 each, uint64 when too big.
    return b"".join(struct.pack("<I" if n <= 0xFFFFFFFF else "<Q", n) for n in lengths)


def _string_bytes(items: list[bytes]) -> tuple[bytes, int]:
    """Serializes strings as TensorFlow does; returns (bytes, masked entry checksum)."""
    lengths = [len(item) for item in items]
    crc = crc32c(_length_words(lengths))
    length_checksum = struct.pack("<I", mask(crc))
    crc = crc32c(length_checksum, crc)
    payload = b"".join(items)
    crc = crc32c(payload, crc)
    varints = b"".join(encode_varint(n) for n in lengths)
    return varints + length_checksum + payload, mask(crc)


def _entry_proto(enum: int, shape: tuple, shard: int, offset: int, size: int, crc: int) -> bytes:
    # Fields in number order and proto3 defaults (zeros) left out, as protobuf serializes them.
    dims = b"".join(field_bytes(2, field_varint(1, d) if d else b"") for d in shape)
    out = field_varint(1, enum) + field_bytes(2, dims)
    for number, value in ((3, shard), (4, offset), (5, size)):
        if value:
            out += field_varint(number, value)
    if crc:
        out += field_fixed32(6, crc)
    return out


def _write_state_file(prefix: str) -> None:
    directory, base = os.path.split(os.path.abspath(prefix))
    quoted = '"' + base.replace("\\", "\\\\").replace('"', '\\"') + '"'
    text = f"model_checkpoint_path: {quoted}\nall_model_checkpoint_paths: {quoted}\n"
    tmp = os.path.join(directory, ".checkpoint.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    replace_file(tmp, os.path.join(directory, "checkpoint"))


def write_tf_checkpoint(
    tensors: dict, prefix: str | os.PathLike, num_shards: int = 1, write_state: bool = True
) -> str:
    """Writes tensors as a TensorFlow checkpoint, the way TensorFlow's BundleWriter does.

    Tensors go to the data files in sorted-name order; the index uses TensorFlow's table
    settings, so a checkpoint read from TensorFlow and written back is byte-identical.

    Args:
        tensors: Mapping of tensor name to array (anything `np.asarray` accepts; arrays of
            bytes/str are written as string tensors).
        prefix: Checkpoint prefix such as ``out/model.ckpt``; ``.index`` and
            ``.data-00000-of-00001`` are appended. Missing directories are created.
        num_shards: Spread the tensors over this many data files (round-robin by name).
        write_state: Also write the ``checkpoint`` state file next to it, pointing at it.

    Returns:
        The prefix written.
    """
    prefix = os.fspath(prefix)
    index_path = prefix + ".index"
    if num_shards < 1:
        raise CheckpointError(f"cannot write {index_path}: num_shards must be >= 1")
    for name in tensors:
        if not isinstance(name, str) or not name or name.startswith("\x00"):
            raise CheckpointError(f"cannot write {index_path}: invalid tensor name {name!r}")
    names = sorted(tensors)  # code-point order == UTF-8 byte order == TensorFlow's key order
    prepared = {name: _prepare(name, tensors[name], index_path) for name in names}
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    protos: dict[str, bytes] = {}
    written = []
    try:
        for shard in range(num_shards):
            path = data_file_path(prefix, shard, num_shards)
            written.append(path + ".tmp")
            with open(path + ".tmp", "wb") as f:
                offset = 0
                for name in names[shard::num_shards]:
                    enum, payload, shape = prepared[name]
                    if enum == _DT_STRING:
                        raw, crc = _string_bytes(payload)
                        raw = np.frombuffer(raw, np.uint8)
                    else:
                        raw = payload.view(np.uint8)
                        crc = masked_crc32c(raw)
                    f.write(raw.data)
                    size = raw.shape[0]
                    protos[name] = _entry_proto(enum, shape, shard, offset, size, crc)
                    offset += size
        written.append(index_path + ".tmp")
        with open(index_path + ".tmp", "wb") as f:
            table = TableWriter(f)
            version = field_bytes(3, field_varint(1, _TENSOR_BUNDLE_VERSION))
            table.add(b"", field_varint(1, num_shards) + version)
            for name in names:
                table.add(name.encode("utf-8"), protos[name])
            table.finish()
        for tmp in written:
            fsync_file(tmp)
    except BaseException:
        for tmp in written:
            if os.path.exists(tmp):
                os.remove(tmp)
        raise
    _commit_pair(prefix, [tmp[: -len(".tmp")] for tmp in written[:-1]])
    if write_state:
        _write_state_file(prefix)
    return prefix


def _data_files(prefix: str) -> list[str]:
    """The data files of any shard count that exist for `prefix`."""
    pattern = glob.escape(prefix) + ".data-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9]"
    return sorted(glob.glob(pattern))


def _remove_pair(prefix: str) -> None:
    # The index first: data without an index is ignored, an index without data is not.
    if os.path.lexists(prefix + ".index"):
        os.remove(prefix + ".index")
    for path in _data_files(prefix):
        os.remove(path)


def _commit_pair(prefix: str, data_paths: list[str]) -> None:
    """Moves the written ``<name>.tmp`` files in over the old checkpoint, crash-safely.

    At every step a complete checkpoint, old or new, is where `detect_format` looks: the
    old one is kept as ``prefix + BACKUP_SUFFIX`` until the new index is in (see `atomic`).
    """
    index_path = prefix + ".index"
    backup = prefix + BACKUP_SUFFIX
    directory = os.path.dirname(os.path.abspath(prefix))
    old_data = _data_files(prefix)
    if os.path.isfile(index_path):
        # The old pair is complete (an index never exists without its data): a backup
        # left by an interrupted save is out of date.
        _remove_pair(backup)
        for path in old_data:
            link_or_copy(path, backup + path[len(prefix) :])
        fsync_directory(directory)
        os.replace(index_path, backup + ".index")
        fsync_directory(directory)
    for path in data_paths:
        os.replace(path + ".tmp", path)
    fsync_directory(directory)  # the data is in place before the index pointing into it
    os.replace(index_path + ".tmp", index_path)
    fsync_directory(directory)
    _remove_pair(backup)
    for path in old_data:
        if path not in data_paths:  # shards of an old checkpoint with another shard count
            os.remove(path)
