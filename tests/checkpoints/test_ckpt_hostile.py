"""Hostile checkpoint files: crafted by hand, each must end in a CheckpointError naming the
file, without allocating what the file claims (numpy's "array is too big", RecursionError
and MemoryError are bugs)."""

import json
import struct
import tracemalloc

import numpy as np
import pytest

from kerasformers.checkpoints import CheckpointError, open_checkpoint
from kerasformers.checkpoints.base import MAX_RANK, shape_problem
from kerasformers.checkpoints.crc import crc32c, mask
from kerasformers.checkpoints.sstable import TableWriter, field_bytes, field_varint
from kerasformers.checkpoints.tf_bundle import _entry_proto


# -- safetensors: 8-byte little-endian header length, JSON header, data --------------------------
def _safetensors(path, header, data=b""):
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


HOSTILE_SHAPES = [
    ([0, 2**62], "too large for any array"),  # 0 elements, but numpy overflows the byte count
    ([0, 2**62, 2**62], "too large for any array"),
    ([2**61, 0], "too large for any array"),
    ([2**63 - 1], "too large for any array"),
    ([1] * (MAX_RANK + 1), f"{MAX_RANK + 1} dimensions"),
    ([1] * 1000, "1000 dimensions"),
]


@pytest.mark.parametrize("shape, message", HOSTILE_SHAPES)
def test_safetensors_hostile_shapes(tmp_path, shape, message):
    count = 0 if 0 in shape else int(np.prod(shape, dtype=object))
    nbytes = 4 * count if count < 2**20 else 0
    header = {"t": {"dtype": "F32", "shape": shape, "data_offsets": [0, nbytes]}}
    path = _safetensors(tmp_path / "evil.safetensors", header, b"\0" * nbytes)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=rf"evil\.safetensors.*tensor 't'.*{message}"):
            open_checkpoint(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**22


def test_safetensors_negative_dims(tmp_path):
    header = {"t": {"dtype": "F32", "shape": [2, -2], "data_offsets": [0, 0]}}
    path = _safetensors(tmp_path / "neg.safetensors", header)
    with pytest.raises(CheckpointError, match=r"neg\.safetensors.*'t'.*invalid shape \[2, -2\]"):
        open_checkpoint(path)


def test_safetensors_largest_legal_rank_still_loads(tmp_path):
    header = {"t": {"dtype": "F32", "shape": [1] * MAX_RANK, "data_offsets": [0, 4]}}
    path = _safetensors(tmp_path / "deep.safetensors", header, np.float32(7).tobytes())
    with open_checkpoint(path) as reader:
        assert reader.get("t").shape == (1,) * MAX_RANK
        assert reader.get("t").reshape(-1)[0] == 7
    header = {"t": {"dtype": "F32", "shape": [0, 5], "data_offsets": [0, 0]}}
    with open_checkpoint(_safetensors(tmp_path / "empty.safetensors", header)) as reader:
        assert reader.get("t").shape == (0, 5)


@pytest.mark.parametrize("depth", [65, 1000, 100_000])
def test_safetensors_deeply_nested_header(tmp_path, depth):
    # Nested arrays as a tensor's description: RecursionError in json.loads before.
    blob = b'{"t": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    path = _safetensors(tmp_path / "nest.safetensors", blob)
    with pytest.raises(CheckpointError, match=rf"nest\.safetensors.*nests {depth} levels deep"):
        open_checkpoint(path)
    objects = b'{"a": ' * depth + b"1" + b"}" * depth
    path = _safetensors(tmp_path / "objs.safetensors", objects)
    with pytest.raises(CheckpointError, match=rf"objs\.safetensors.*nests {depth} levels deep"):
        open_checkpoint(path)


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path):
    header = {
        "__metadata__": {"note": '[[[{"' * 500 + '\\"]]]' * 500, "format": "pt"},
        "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    }
    path = _safetensors(tmp_path / "ok.safetensors", header, np.ones(2, np.float32).tobytes())
    with open_checkpoint(path) as reader:
        np.testing.assert_array_equal(reader.get("w"), [1, 1])
        assert reader.metadata["note"].startswith('[[[{"')


def test_safetensors_oversized_header(tmp_path):
    path = tmp_path / "huge.safetensors"
    length = 100_000_001  # one byte over the format's limit, and the file is that big
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", length) + b"{")
        f.truncate(8 + length + 16)  # sparse: nothing is written or read
    with pytest.raises(CheckpointError, match=r"huge\.safetensors.*header of 100000001 bytes"):
        open_checkpoint(path)
    path.write_bytes(struct.pack("<Q", 2**63) + b"{}")
    with pytest.raises(CheckpointError, match=r"huge\.safetensors.*does not fit in the file"):
        open_checkpoint(path)


# -- TensorFlow bundles: forged .index entries (block checksums valid) -------------------------
def _tf_bundle(tmp_path, entries, data_size=16):
    prefix = str(tmp_path / "evil.ckpt")
    with open(prefix + ".data-00000-of-00001", "wb") as f:
        f.write(b"\0" * data_size)
    with open(prefix + ".index", "wb") as f:
        table = TableWriter(f)
        table.add(b"", field_varint(1, 1) + field_bytes(3, field_varint(1, 1)))
        for key, value in sorted(entries):
            table.add(key, value)
        table.finish()
    return prefix


@pytest.mark.parametrize("dtype_enum", [1, 7])  # float32, string
@pytest.mark.parametrize("shape, message", HOSTILE_SHAPES)
def test_tf_hostile_shapes(tmp_path, shape, message, dtype_enum):
    crc = mask(crc32c(b"\0" * 16))
    prefix = _tf_bundle(tmp_path, [(b"t", _entry_proto(dtype_enum, tuple(shape), 0, 0, 16, crc))])
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=rf"evil\.ckpt\.index.*tensor 't'.*{message}"):
            open_checkpoint(prefix)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**22


def test_tf_zero_dim_times_huge_with_matching_size(tmp_path):
    # Size 0 agrees with 0 elements: only the byte-count overflow gives it away.
    prefix = _tf_bundle(tmp_path, [(b"t", _entry_proto(1, (0, 2**62), 0, 0, 0, 0))])
    with pytest.raises(CheckpointError, match=r"evil\.ckpt\.index.*'t'.*too large"):
        open_checkpoint(prefix)


@pytest.mark.parametrize("dims", [(-1,), (4, -3), (-(2**63),)])
def test_tf_negative_dims(tmp_path, dims):
    prefix = _tf_bundle(tmp_path, [(b"t", _entry_proto(1, dims, 0, 0, 16, 0))])
    with pytest.raises(CheckpointError, match=r"evil\.ckpt\.index.*'t'.*negative"):
        open_checkpoint(prefix)


def test_tf_largest_legal_rank_still_loads(tmp_path):
    raw = np.float32(3).tobytes()
    entry = _entry_proto(1, (1,) * MAX_RANK, 0, 0, 4, mask(crc32c(raw)))
    prefix = _tf_bundle(tmp_path, [(b"t", entry)], data_size=0)
    with open(prefix + ".data-00000-of-00001", "wb") as f:
        f.write(raw)
    with open_checkpoint(prefix) as reader:
        assert reader.get("t").shape == (1,) * MAX_RANK


def test_shape_problem_matches_numpy():
    # Every shape here either has no elements or is refused before numpy allocates.
    for shape in [(0, 2**61), (0, 2**59), (2**60,), (3, 0, 2**59), (1,) * MAX_RANK, (0,) * 65]:
        problem = shape_problem(shape, 8)
        try:
            np.empty(shape, np.float64)
            numpy_ok = True
        except ValueError:
            numpy_ok = False
        assert (problem is None) == numpy_ok, (shape, problem)


def _depth_reference(raw):
    depth = deepest = 0
    in_string = escaped = False
    for c in raw:
        if in_string:
            if escaped:
                escaped = False
            elif c == ord("\\"):
                escaped = True
            elif c == ord('"'):
                in_string = False
        elif c == ord('"'):
            in_string = True
        elif c in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in b"]}":
            depth -= 1
    return deepest


def test_nesting_depth_matches_a_reference_across_chunk_boundaries():
    import random

    from kerasformers.checkpoints.safetensors_format import _nesting_depth

    rng = random.Random(0)
    atoms = ["a\\", '"', "[{", '\\\\"x', "]]", "\\\\\\", '\\"}', 1, 2.5, None]

    def value(depth=0):
        r = rng.random()
        if depth > 6 or r < 0.3:
            return rng.choice(atoms)
        if r < 0.65:
            return [value(depth + 1) for _ in range(rng.randint(0, 4))]
        keys = ["k", "[", '\\"{', "\\"]
        return {rng.choice(keys) + str(i): value(depth + 1) for i in range(rng.randint(0, 4))}

    for case in range(100):
        raw = json.dumps(value()).encode()
        expected = _depth_reference(raw)
        for chunk in (1, 2, 3, 7, 1 << 20) if case < 10 else (3, 7, 1 << 20):
            assert _nesting_depth(raw, chunk) == expected, (raw, chunk)


def test_sharded_index_deeply_nested(tmp_path):
    path = tmp_path / "model.safetensors.index.json"
    path.write_bytes(b'{"weight_map": ' + b"[" * 50_000 + b"]" * 50_000 + b"}")
    with pytest.raises(CheckpointError, match=r"index\.json .*nests 50001 levels deep"):
        open_checkpoint(path)
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(
        CheckpointError, match=r"index\.json is not a valid index: it is not valid JSON"
    ):
        open_checkpoint(path)
