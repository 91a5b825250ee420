"""CRC-32C (Castagnoli) in numpy, fast enough to verify checkpoints of hundreds of megabytes.

TensorFlow checksums every tensor and every table block with CRC-32C, "masked". No C extension
may be required at run time, and a byte-at-a-time table CRC is ~1000x too slow in Python, so
this module relies on the algebra of CRCs instead:

* Without the initial/final inversion, a CRC is linear over GF(2): ``raw(m) = M(x) * x^32 mod
  P(x)`` where ``M(x)`` is the message read as a polynomial (bytes in order, low bit first).
  Leading zero bytes leave it unchanged, and ``crc32c(m) = raw(m) ^ shift_n(~0) ^ ~0`` where
  ``shift_n`` runs ``n`` zero bytes through the register (multiplication by ``x^(8n) mod P``).
* **Folding.** If ``Q(x)`` is a multiple of ``P(x)``, then ``M mod Q`` has the same CRC as ``M``.
  With ``X = x^8`` (one byte) and a sparse multiple ``Q = X^a + X^b + X^c + 1`` (found by a
  birthday search, see `_FOLDS`), reducing ``M`` modulo ``Q`` only needs XORs of whole byte
  ranges: a chunk ``S`` of ``a`` bytes followed by a chunk ``C`` becomes
  ``C ^ S ^ S*X^b ^ S*X^c (mod Q)``, i.e. a handful of vectorised XORs of shifted slices per
  ``a`` bytes and no table lookups at all. This runs at several GB/s; ``P`` has the factor
  ``x + 1`` so no multiple of it has three terms, hence four.
* The folded remainder (under 32 kB) is finished with byte tables: 64-byte blocks through
  64 per-position tables (one gather over all blocks at once), then blocks of block-CRCs are
  combined the same way with "shift by n zero bytes" tables, 16 at a time.

`crc32c_reference` is the textbook bit-by-bit version that the tests compare against.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["crc32c", "masked_crc32c", "mask", "unmask", "crc32c_reference"]

_POLY = 0x82F63B78  # CRC-32C polynomial 0x1EDC6F41, bit-reversed
_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_ONE = 1 << 31  # the polynomial "1" in the reflected register representation

# Sparse multiples X^a + X^b + X^c + 1 of P (X = x^8), with 2b <= a so that one reduction
# step never overflows twice. The tests check that P divides each of them.
_FOLDS = ((262157, 3657, 1719), (16184, 1905, 281))
_SMALL = 128  # below this many bytes a plain Python loop is cheapest
_BLOCK = 64  # block width of the table stage
_GROUP = 16  # block CRCs combined per gather in the table stage


def _make_byte_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ (_POLY if crc & 1 else 0)
        table.append(crc)
    return table


_TABLE = _make_byte_table()


def _mulmod(a: int, b: int) -> int:
    """Multiplies two polynomials modulo P (reflected representation, as zlib's multmodp)."""
    m = _ONE
    p = 0
    while True:
        if a & m:
            p ^= b
            if not a & (m - 1):
                return p
        m >>= 1
        if not m:
            return p
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _make_x2n() -> list[int]:
    # x^(2^k) mod P for k = 0..69: enough for lengths up to 2^64 bytes (x^(8n)).
    table = [_ONE >> 1]  # x^1
    for _ in range(69):
        table.append(_mulmod(table[-1], table[-1]))
    return table


_X2N = _make_x2n()


@functools.lru_cache(maxsize=4096)
def _x8n(n: int) -> int:
    """Returns x^(8n) mod P: the operator "feed n zero bytes" as a polynomial."""
    p = _ONE
    k = 3
    while n:
        if n & 1:
            p = _mulmod(_X2N[k], p)
        n >>= 1
        k += 1
    return p


def _shift(crc: int, n: int) -> int:
    """Returns the register after feeding `n` zero bytes to register `crc`."""
    return _mulmod(_x8n(n), crc) if n else crc


def _mulmod_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Vectorised `_mulmod` over uint64 arrays (used only to build tables)."""
    p = np.zeros_like(b)
    b = b.copy()
    for i in range(31, -1, -1):
        p ^= b * ((a >> np.uint64(i)) & np.uint64(1))
        b = (b >> np.uint64(1)) ^ (np.uint64(_POLY) * (b & np.uint64(1)))
    return p


def _shift_tables(shifts: list[int], byte_positions: list[int]) -> np.ndarray:
    """Builds flat lookup tables: column i maps a byte v to shift_{shifts[i]}(v << 8*pos[i])."""
    consts = np.array([_x8n(n) for n in shifts], dtype=np.uint64)
    values = np.arange(256, dtype=np.uint64)[None, :] << (
        np.uint64(8) * np.array(byte_positions, dtype=np.uint64)[:, None]
    )
    table = _mulmod_np(np.repeat(consts[:, None], 256, axis=1), values)
    return table.astype(np.uint32).ravel()


@functools.cache
def _block_table() -> np.ndarray:
    # A byte at position j of a 64-byte block contributes shift_{64-j}(byte).
    return _shift_tables([_BLOCK - j for j in range(_BLOCK)], [0] * _BLOCK)


@functools.lru_cache(maxsize=16)
def _group_table(unit: int) -> np.ndarray:
    # 16 consecutive CRCs of `unit`-byte pieces, read as 64 bytes: byte k of CRC g contributes
    # shift_{unit * (15 - g)}(byte << 8k).
    shifts = [unit * (_GROUP - 1 - g) for g in range(_GROUP) for _ in range(4)]
    return _shift_tables(shifts, [k for _ in range(_GROUP) for k in range(4)])


_OFFSETS = np.arange(_BLOCK, dtype=np.intp) * 256


def _gather_xor(rows: np.ndarray, table: np.ndarray) -> np.ndarray:
    """For each row of 64 bytes, XORs table[column][byte] over the columns."""
    out = np.empty(rows.shape[0], dtype=np.uint32)
    step = 4096  # keeps the index scratch array small for big inputs
    for start in range(0, rows.shape[0], step):
        idx = np.add(rows[start : start + step], _OFFSETS, dtype=np.intp)
        np.bitwise_xor.reduce(table.take(idx, mode="wrap"), axis=1, out=out[start : start + step])
    return out


def _front_pad(data: np.ndarray, multiple: int) -> np.ndarray:
    pad = -data.shape[0] % multiple
    if not pad:
        return data
    out = np.zeros(data.shape[0] + pad, dtype=data.dtype)
    out[pad:] = data
    return out


def _raw_tables(data: np.ndarray) -> int:
    """Raw CRC (zero init, no final inversion) with the table method; for small inputs."""
    if not data.shape[0]:
        return 0
    values = _gather_xor(_front_pad(data, _BLOCK).reshape(-1, _BLOCK), _block_table())
    unit = _BLOCK
    while values.shape[0] > 1:
        # Leading zero CRCs stand for leading zero bytes, which do not change the result.
        grouped = _front_pad(values, _GROUP).astype("<u4").view(np.uint8)
        values = _gather_xor(grouped.reshape(-1, _BLOCK), _group_table(unit))
        unit *= _GROUP
    return int(values[0])


def _fold(data: np.ndarray, a: int, b: int, c: int) -> np.ndarray:
    """Returns `a` bytes whose polynomial is data's modulo X^a + X^b + X^c + 1."""
    n = data.shape[0]
    first = n % a or a
    state = np.zeros(a, dtype=np.uint8)
    state[a - first :] = data[:first]
    nxt = np.empty(a, dtype=np.uint8)
    xor = np.bitwise_xor
    for start in range(first, n, a):
        # nxt = chunk + state * X^a  with  X^a = X^b + X^c + 1 (mod Q); the parts of
        # state * X^b and state * X^c that reach X^a and beyond are folded back once more.
        xor(data[start : start + a], state, out=nxt)
        xor(nxt[: a - b], state[b:], out=nxt[: a - b])
        xor(nxt[: a - c], state[c:], out=nxt[: a - c])
        for hi in (state[:b], state[:c]):
            k = hi.shape[0]
            xor(nxt[a - k :], hi, out=nxt[a - k :])
            xor(nxt[a - k - c : a - c], hi, out=nxt[a - k - c : a - c])
            xor(nxt[a - k - b : a - b], hi, out=nxt[a - k - b : a - b])
        state, nxt = nxt, state
    return state


def _raw(data: np.ndarray) -> int:
    for a, b, c in _FOLDS:
        if data.shape[0] >= 2 * a:
            data = _fold(data, a, b, c)
    return _raw_tables(data)


def _as_bytes(data) -> np.ndarray:
    if isinstance(data, np.ndarray):
        if data.dtype.hasobject:
            raise TypeError("crc32c needs a numeric array or a bytes-like object")
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    view = memoryview(data)
    if not view.c_contiguous:
        raise TypeError("crc32c needs a contiguous buffer")
    return np.frombuffer(view.cast("B"), dtype=np.uint8)


def crc32c(data, crc: int = 0) -> int:
    """Computes the CRC-32C of `data`, optionally continuing from an earlier result.

    Args:
        data: bytes, bytearray, memoryview or numpy array (its raw bytes are used).
        crc: The CRC-32C of the bytes that precede `data`, to extend it (0 to start afresh):
            ``crc32c(a + b) == crc32c(b, crc32c(a))``.

    Returns:
        The CRC as an int in [0, 2**32).
    """
    buf = _as_bytes(data)
    n = buf.shape[0]
    if n < _SMALL:
        reg = crc ^ _U32
        table = _TABLE
        for byte in buf.tobytes():
            reg = table[(reg ^ byte) & 0xFF] ^ (reg >> 8)
        return reg ^ _U32
    return _raw(buf) ^ _shift(crc ^ _U32, n) ^ _U32


def mask(crc: int) -> int:
    """Masks a CRC the way TensorFlow/LevelDB store it (a rotation plus a constant)."""
    return ((((crc >> 15) | (crc << 17)) & _U32) + _MASK_DELTA) & _U32


def unmask(masked: int) -> int:
    """Inverts `mask`."""
    rot = (masked - _MASK_DELTA) & _U32
    return ((rot >> 17) | (rot << 15)) & _U32


def masked_crc32c(data) -> int:
    """Returns mask(crc32c(data)): the form stored in TensorFlow checkpoints.

    Args:
        data: bytes, bytearray, memoryview or numpy array.
    """
    return mask(crc32c(data))


def crc32c_reference(data: bytes, crc: int = 0) -> int:
    """Bit-by-bit CRC-32C, slow and obviously correct; only for tests.

    Args:
        data: The bytes to checksum.
        crc: CRC of preceding bytes to continue from.
    """
    reg = crc ^ _U32
    for byte in bytes(data):
        reg ^= byte
        for _ in range(8):
            reg = (reg >> 1) ^ (_POLY if reg & 1 else 0)
    return reg ^ _U32
