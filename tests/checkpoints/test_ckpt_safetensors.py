"""Safetensors: single files, sharded sets, bfloat16, damaged headers."""

import json
import re
import struct

import ml_dtypes
import numpy as np
import pytest

from kerasformers.checkpoints import CheckpointError, open_checkpoint, save_checkpoint
from kerasformers.checkpoints.safetensors_format import SafetensorsReader


def _tensors():
    rng = np.random.default_rng(0)
    return {
        "emb/weight": rng.standard_normal((7, 5)).astype(np.float32),
        "bf16": rng.standard_normal((3, 4)).astype(ml_dtypes.bfloat16),
        "half": rng.standard_normal(6).astype(np.float16),
        "ids": np.arange(10, dtype=np.int64),
        "mask": np.array([True, False, True]),
        "scalar": np.float64(2.5),
        "empty": np.zeros((0, 3), np.float32),
        "strided": np.arange(20, dtype=np.int32).reshape(4, 5)[:, 1::2],
        "fp8": np.linspace(-1, 1, 4).astype(ml_dtypes.float8_e5m2),
    }


def test_roundtrip(tmp_path):
    tensors = _tensors()
    path = save_checkpoint(tensors, tmp_path / "model.safetensors", format="safetensors")
    assert path == str(tmp_path / "model.safetensors")
    with open_checkpoint(path) as reader:
        assert reader.format == "safetensors" and reader.path == path
        assert reader.metadata == {"format": "pt"}
        assert reader.names() == sorted(tensors) and not reader.skipped
        for name, value in tensors.items():
            value = np.asarray(value)
            assert reader.shape(name) == value.shape
            assert reader.dtype(name) == value.dtype
            got = reader.get(name)
            assert got.dtype == value.dtype and got.flags.writeable
            np.testing.assert_array_equal(got, value)


def test_written_file_is_what_safetensors_and_transformers_expect(tmp_path):
    from safetensors import safe_open

    path = save_checkpoint({"w": np.ones((2, 2), np.float32)}, tmp_path / "x.safetensors")
    with safe_open(path, framework="numpy") as f:
        assert f.metadata() == {"format": "pt"}
        np.testing.assert_array_equal(f.get_tensor("w"), np.ones((2, 2), np.float32))


def test_bf16_file_written_by_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    value = torch.randn(4, 3, dtype=torch.bfloat16)
    save_file({"x": value}, str(tmp_path / "t.safetensors"))
    with open_checkpoint(tmp_path / "t.safetensors") as reader:
        got = reader.get("x")
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(got.astype(np.float32), value.float().numpy())


def test_sharded(tmp_path):
    tensors = _tensors()
    names = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((names[:4], names[4:])):
        shard = f"model-0000{i + 1}-of-00002.safetensors"
        save_checkpoint({n: tensors[n] for n in part}, tmp_path / shard)
        weight_map.update({n: shard for n in part})
    index = {"metadata": {"total_size": 123}, "weight_map": weight_map}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    for path in (tmp_path, tmp_path / "model.safetensors.index.json"):
        with open_checkpoint(path) as reader:
            assert reader.path == str(tmp_path / "model.safetensors.index.json")
            assert reader.names() == names
            assert reader.metadata == {"total_size": 123}
            for name in names:
                np.testing.assert_array_equal(reader.get(name), np.asarray(tensors[name]))
    # A missing shard, a shard that lacks a mapped tensor, a path escaping the folder.
    for bad_map, message in (
        ({"a": "gone.safetensors"}, r"of which 1 is missing from .*: gone\.safetensors"),
        ({"nope": "model-00001-of-00002.safetensors"}, "which does not hold it"),
        ({"a": "../x.safetensors"}, "points outside its directory"),
    ):
        (tmp_path / "bad.safetensors.index.json").write_text(json.dumps({"weight_map": bad_map}))
        with pytest.raises(CheckpointError, match=message):
            open_checkpoint(tmp_path / "bad.safetensors.index.json")
    (tmp_path / "bad.safetensors.index.json").write_text("{not json")
    with pytest.raises(
        CheckpointError,
        match=r"bad\.safetensors\.index\.json is not a valid index: it is not valid JSON",
    ):
        open_checkpoint(tmp_path / "bad.safetensors.index.json")


def _raw_file(path, header: dict, data: bytes = b""):
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


@pytest.mark.parametrize(
    "header, data, message",
    [
        ({"t": {"dtype": "F32", "shape": [2**40], "data_offsets": [0, 2**42]}}, b"", "outside"),
        ({"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "8 bytes"),
        ({"t": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "shape"),
        ({"t": [1, 2]}, b"", "no description"),
    ],
)
def test_bad_headers(tmp_path, header, data, message):
    path = _raw_file(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(CheckpointError, match=rf"bad\.safetensors.*{message}"):
        SafetensorsReader(path)


def test_damaged_files(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match=r"x\.safetensors is too short"):
        open_checkpoint(path)
    path.write_bytes(struct.pack("<Q", 2**60) + b"{}")
    with pytest.raises(CheckpointError, match=r"x\.safetensors .*header length"):
        open_checkpoint(path)
    path.write_bytes(struct.pack("<Q", 5) + b"{oops")
    with pytest.raises(CheckpointError, match=r"x\.safetensors is not a valid safetensors file"):
        open_checkpoint(path)
    good = save_checkpoint({"w": np.ones(1000, np.float32)}, tmp_path / "y.safetensors")
    raw = open(good, "rb").read()
    open(good, "wb").write(raw[:-100])
    with pytest.raises(CheckpointError, match=r"y\.safetensors"):
        open_checkpoint(good)


@pytest.mark.parametrize("dtype", ["F8_E8M0", "F4", "Q4_0", "f32", 7, None])
def test_unsupported_dtype_is_an_error_naming_file_tensor_and_dtype(tmp_path, dtype):
    header = {
        "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
        "b": {"dtype": dtype, "shape": [4], "data_offsets": [4, 8]},
    }
    path = _raw_file(tmp_path / "u.safetensors", header, b"\0" * 8)
    with pytest.raises(
        CheckpointError,
        match=rf"u\.safetensors: tensor 'b' has dtype {re.escape(repr(dtype))}, which is not "
        r"supported \(supported: BF16, .*F32.*U8\)",
    ):
        open_checkpoint(path)


def test_writer_rejects_non_numeric(tmp_path):
    with pytest.raises(CheckpointError, match=r"tensor 's' of dtype <U1 to .*z\.safetensors"):
        save_checkpoint({"s": np.array(["a"])}, tmp_path / "z.safetensors")
    assert not (tmp_path / "z.safetensors").exists()


def test_transformers_loads_our_safetensors(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
    )
    config.save_pretrained(tmp_path)
    model = transformers.BertModel(config)
    state = {k: v.detach().numpy() + 1 for k, v in model.state_dict().items()}
    save_checkpoint(state, tmp_path / "model.safetensors")
    loaded = transformers.BertModel.from_pretrained(tmp_path)
    for name, value in loaded.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), state[name], err_msg=name)
