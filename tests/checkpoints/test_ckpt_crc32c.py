"""CRC-32C: the numpy implementation against a bit-by-bit reference."""

import numpy as np
import pytest

from kerasformers.checkpoints import crc as crc_module
from kerasformers.checkpoints.crc import (
    crc32c,
    crc32c_reference,
    mask,
    masked_crc32c,
    unmask,
)


def _table_crc(data: bytes) -> int:
    # Byte-table CRC in plain Python: exact, and fast enough for the megabyte-size cases that
    # the bit-by-bit reference would take too long on.
    reg = 0xFFFFFFFF
    table = crc_module._TABLE
    for byte in data:
        reg = table[(reg ^ byte) & 0xFF] ^ (reg >> 8)
    return reg ^ 0xFFFFFFFF


def test_check_value():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c_reference(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


def test_table_matches_bitwise_reference():
    data = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    assert _table_crc(data) == crc32c_reference(data)


@pytest.mark.parametrize(
    "n",
    [
        0,
        1,
        2,
        3,
        4,
        7,
        8,
        63,
        64,
        65,
        127,
        128,
        129,
        1000,
        4095,
        4096,
        16383,
        32367,
        32368,
        32369,
        100003,
    ],
)
def test_random_buffers_match_reference(n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    assert crc32c(data) == crc32c_reference(data)


@pytest.mark.parametrize("n", [2 * 262157 - 1, 2 * 262157, 2 * 262157 + 5, 1_000_001])
def test_folding_path_matches_table_crc(n):
    # These sizes go through both folding stages; the byte-table loop is the reference.
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    assert crc32c(data) == _table_crc(data)


def test_fold_polynomials_are_multiples_of_crc_polynomial():
    for a, b, c in crc_module._FOLDS:
        assert 2 * b <= a and c < b
        x8 = crc_module._x8n
        assert x8(a) ^ x8(b) ^ x8(c) ^ crc_module._ONE == 0


def test_accepts_arrays_and_buffers():
    array = np.arange(1000, dtype=np.float32).reshape(10, 100)
    raw = array.tobytes()
    expected = crc32c_reference(raw)
    assert crc32c(array) == expected
    assert crc32c(memoryview(raw)) == expected
    assert crc32c(bytearray(raw)) == expected
    assert crc32c(np.asfortranarray(array).T.T) == expected  # copied to C order
    with pytest.raises(TypeError):
        crc32c(np.array(["x"], dtype=object))


def test_extend():
    data = np.random.default_rng(5).integers(0, 256, 70000, dtype=np.uint8).tobytes()
    for cut in (0, 1, 100, 65536, 70000):
        assert crc32c(data[cut:], crc32c(data[:cut])) == crc32c(data)


def test_mask_roundtrip_and_value():
    for value in (0, 1, 0xE3069283, 0xFFFFFFFF, 0x12345678):
        assert unmask(mask(value)) == value
    # LevelDB: mask(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8
    crc = crc32c(b"foo")
    assert mask(crc) == ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    assert masked_crc32c(b"foo") == mask(crc)
    assert mask(0) == 0xA282EAD8
