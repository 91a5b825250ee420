"""LevelDB-style sorted string tables (the `.index` file of a TensorFlow checkpoint), plus the
varint / protocol-buffer wire helpers that the table and its values need.

Layout of a table file (TensorFlow's `tensorflow/core/lib/io/table_builder.cc`, LevelDB's
`table/format.cc`)::

    data block 0 | trailer | ... | data block n | trailer | metaindex block | trailer
    | index block | trailer | footer (48 bytes)

* A block is a run of entries ``varint32 shared, varint32 non_shared, varint32 value_len,
  key[shared:], value`` (keys prefix-compressed against the previous key, except at the
  "restart points"), then the restart offsets (uint32 each) and their count (uint32).
* The 5-byte trailer is the compression type (0 = none) and the masked CRC-32C of the block
  contents plus that type byte.
* The index block maps a separator key (>= the last key of a data block, < the first key of
  the next) to that block's handle (varint64 offset, varint64 size).
* The footer holds the metaindex and index handles, zero padding up to 40 bytes, then the
  magic number 0xdb4775248b80fb57 as 8 little-endian bytes.

Parsing raises `FormatError` with a plain description; the caller adds the file name.
Everything is bounds-checked before use, so a damaged file cannot cause an IndexError or a
huge allocation.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from .crc import crc32c, mask, unmask

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
# TensorFlow's table::Options defaults, with compression off as tensor_bundle.cc sets it.
BLOCK_SIZE = 262144
BLOCK_RESTART_INTERVAL = 16

_WIRE_VARINT, _WIRE_FIXED64, _WIRE_BYTES, _WIRE_FIXED32 = 0, 1, 2, 5


class FormatError(Exception):
    """Malformed bytes; the message describes what is wrong, without the file name."""


# -- varints and protocol buffers ----------------------------------------------------------------
def decode_varint(buf: bytes, pos: int, end: int | None = None, limit_bits: int = 64):
    """Decodes a base-128 varint at `pos`; returns (value, next position).

    Args:
        buf: The bytes.
        pos: Where the varint starts.
        end: Where the readable region ends (defaults to len(buf)).
        limit_bits: 32 or 64: the widest value allowed.
    """
    end = len(buf) if end is None else end
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise FormatError("varint runs past the end of its region")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift >= 7 * ((limit_bits + 6) // 7):
            raise FormatError("varint is too long")
    if result >> limit_bits:
        raise FormatError(f"varint does not fit in {limit_bits} bits")
    return result, pos


def encode_varint(value: int) -> bytes:
    """Encodes a non-negative int (or a negative int64, two's complement) as a varint."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def to_int64(value: int) -> int:
    """Reinterprets an unsigned 64-bit varint as a signed int64 (proto int64 fields)."""
    return value - (1 << 64) if value >> 63 else value


def parse_message(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """Splits a serialized protocol-buffer message into (field number, wire type, value).

    Varints come back as ints, fixed32/fixed64 as ints, length-delimited fields as bytes.
    """
    fields = []
    pos = 0
    end = len(buf)
    while pos < end:
        tag, pos = decode_varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise FormatError("protobuf field number 0")
        if wire == _WIRE_VARINT:
            value, pos = decode_varint(buf, pos, end)
        elif wire == _WIRE_FIXED32:
            if pos + 4 > end:
                raise FormatError("fixed32 field runs past the end of its message")
            (value,) = struct.unpack_from("<I", buf, pos)
            pos += 4
        elif wire == _WIRE_FIXED64:
            if pos + 8 > end:
                raise FormatError("fixed64 field runs past the end of its message")
            (value,) = struct.unpack_from("<Q", buf, pos)
            pos += 8
        elif wire == _WIRE_BYTES:
            length, pos = decode_varint(buf, pos, end)
            if length > end - pos:
                raise FormatError("length-delimited field runs past the end of its message")
            value = bytes(buf[pos : pos + length])
            pos += length
        else:
            raise FormatError(f"unsupported protobuf wire type {wire}")
        fields.append((number, wire, value))
    return fields


def field_varint(number: int, value: int) -> bytes:
    """Serializes a varint field (proto3: the caller omits zero values)."""
    return encode_varint(number << 3 | _WIRE_VARINT) + encode_varint(value)


def field_bytes(number: int, payload: bytes) -> bytes:
    """Serializes a length-delimited field (bytes, string or sub-message)."""
    return encode_varint(number << 3 | _WIRE_BYTES) + encode_varint(len(payload)) + payload


def field_fixed32(number: int, value: int) -> bytes:
    """Serializes a fixed32 field."""
    return encode_varint(number << 3 | _WIRE_FIXED32) + struct.pack("<I", value)


# -- reading tables ------------------------------------------------------------------------------
def _decode_handle(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    offset, pos = decode_varint(buf, pos, end)
    size, pos = decode_varint(buf, pos, end)
    return offset, size, pos


def _read_block(data: bytes, offset: int, size: int, what: str) -> bytes:
    limit = len(data) - FOOTER_SIZE
    if offset > limit or size > limit - offset or offset + size + BLOCK_TRAILER_SIZE > limit:
        raise FormatError(
            f"{what} (offset {offset}, size {size}) lies outside the file ({len(data)} bytes)"
        )
    end = offset + size
    compression = data[end]
    (stored,) = struct.unpack_from("<I", data, end + 1)
    if unmask(stored) != crc32c(data[offset : end + 1]):
        raise FormatError(f"checksum mismatch in {what} at offset {offset}")
    if compression != 0:
        kind = "snappy" if compression == 1 else f"type {compression}"
        raise FormatError(f"{what} is compressed ({kind}); only uncompressed tables are supported")
    return data[offset:end]


def iter_block(block: bytes, what: str) -> Iterator[tuple[bytes, bytes]]:
    """Yields the (key, value) entries of one block, in order."""
    size = len(block)
    if size < 4:
        raise FormatError(f"{what} is too small ({size} bytes)")
    (num_restarts,) = struct.unpack_from("<I", block, size - 4)
    if num_restarts > (size - 4) // 4:
        raise FormatError(f"{what} claims {num_restarts} restart points in {size} bytes")
    limit = size - 4 - 4 * num_restarts
    pos = 0
    key = b""
    while pos < limit:
        shared, pos = decode_varint(block, pos, limit, 32)
        non_shared, pos = decode_varint(block, pos, limit, 32)
        value_len, pos = decode_varint(block, pos, limit, 32)
        if shared > len(key):
            raise FormatError(f"{what}: entry shares {shared} bytes of a {len(key)}-byte key")
        if non_shared > limit - pos or value_len > limit - pos - non_shared:
            raise FormatError(f"{what}: entry runs past the end of the block")
        key = key[:shared] + block[pos : pos + non_shared]
        pos += non_shared
        yield key, block[pos : pos + value_len]
        pos += value_len


def read_table(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yields every (key, value) of a table file held in memory, in order.

    Args:
        data: The whole file.

    Raises:
        FormatError: the bytes are not a valid, uncompressed table.
    """
    if len(data) < FOOTER_SIZE:
        raise FormatError(f"file is too short ({len(data)} bytes) to hold a table footer")
    footer_at = len(data) - FOOTER_SIZE
    (magic,) = struct.unpack_from("<Q", data, len(data) - 8)
    if magic != TABLE_MAGIC:
        raise FormatError(f"bad magic number 0x{magic:016x} (not a TensorFlow checkpoint index)")
    meta_offset, meta_size, pos = _decode_handle(data, footer_at, footer_at + 40)
    index_offset, index_size, _ = _decode_handle(data, pos, footer_at + 40)
    _read_block(data, meta_offset, meta_size, "metaindex block")
    index = _read_block(data, index_offset, index_size, "index block")
    for n, (_, handle) in enumerate(iter_block(index, "index block")):
        offset, size, end = _decode_handle(handle, 0, len(handle))
        if end != len(handle):
            raise FormatError("index block entry is not a block handle")
        what = f"data block {n}"
        yield from iter_block(_read_block(data, offset, size, what), what)


# -- writing tables ------------------------------------------------------------------------------
def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _shortest_separator(start: bytes, limit: bytes) -> bytes:
    # LevelDB's BytewiseComparator::FindShortestSeparator.
    i = _common_prefix(start, limit)
    if i < min(len(start), len(limit)):
        byte = start[i]
        if byte < 0xFF and byte + 1 < limit[i]:
            return start[:i] + bytes([byte + 1])
    return start


def _short_successor(key: bytes) -> bytes:
    # LevelDB's BytewiseComparator::FindShortSuccessor.
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


class _BlockBuilder:
    def __init__(self, restart_interval: int):
        self.restart_interval = restart_interval
        self.reset()

    def reset(self) -> None:
        self.buffer = bytearray()
        self.restarts = [0]
        self.counter = 0
        self.last_key = b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.counter < self.restart_interval:
            shared = _common_prefix(self.last_key, key)
        else:
            self.restarts.append(len(self.buffer))
            self.counter = 0
        self.buffer += encode_varint(shared)
        self.buffer += encode_varint(len(key) - shared)
        self.buffer += encode_varint(len(value))
        self.buffer += key[shared:]
        self.buffer += value
        self.last_key = key
        self.counter += 1

    def size_estimate(self) -> int:
        return len(self.buffer) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        tail = struct.pack(f"<{len(self.restarts)}I", *self.restarts)
        return bytes(self.buffer) + tail + struct.pack("<I", len(self.restarts))


class TableWriter:
    """Writes a table exactly as TensorFlow's TableBuilder does with compression off.

    Args:
        file: A binary file object opened for writing.
        block_size: Target size of a data block before it is cut.
        restart_interval: Keys between restart points in data blocks.
    """

    def __init__(
        self, file, block_size: int = BLOCK_SIZE, restart_interval: int = BLOCK_RESTART_INTERVAL
    ):
        self.file = file
        self.block_size = block_size
        self.offset = 0
        self.data_block = _BlockBuilder(restart_interval)
        self.index_block = _BlockBuilder(1)
        self.last_key = b""
        self.pending_handle: tuple[int, int] | None = None
        self.count = 0

    def _write_block(self, block: _BlockBuilder) -> tuple[int, int]:
        contents = block.finish()
        block.reset()
        trailer = b"\x00" + struct.pack("<I", mask(crc32c(contents + b"\x00")))
        self.file.write(contents)
        self.file.write(trailer)
        handle = (self.offset, len(contents))
        self.offset += len(contents) + len(trailer)
        return handle

    def _add_index_entry(self, key: bytes) -> None:
        offset, size = self.pending_handle
        self.index_block.add(key, encode_varint(offset) + encode_varint(size))
        self.pending_handle = None

    def add(self, key: bytes, value: bytes) -> None:
        """Appends one entry; keys must come in strictly increasing bytewise order."""
        if self.count and key <= self.last_key:
            raise ValueError(f"table keys out of order: {key!r} after {self.last_key!r}")
        if self.pending_handle is not None:
            self._add_index_entry(_shortest_separator(self.last_key, key))
        self.last_key = key
        self.count += 1
        self.data_block.add(key, value)
        if self.data_block.size_estimate() >= self.block_size:
            self._flush()

    def _flush(self) -> None:
        if self.data_block.buffer:
            self.pending_handle = self._write_block(self.data_block)

    def finish(self) -> None:
        """Writes the remaining data block, the metaindex and index blocks and the footer."""
        self._flush()
        meta_offset, meta_size = self._write_block(_BlockBuilder(BLOCK_RESTART_INTERVAL))
        if self.pending_handle is not None:
            self._add_index_entry(_short_successor(self.last_key))
        index_offset, index_size = self._write_block(self.index_block)
        handles = b"".join(
            encode_varint(v) for v in (meta_offset, meta_size, index_offset, index_size)
        )
        footer = handles.ljust(40, b"\x00") + struct.pack("<Q", TABLE_MAGIC)
        self.file.write(footer)
        self.offset += len(footer)
