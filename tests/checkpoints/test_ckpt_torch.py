"""PyTorch state dicts: weights_only loading, dtype conversion, refusal of pickled code."""

import builtins
import os
import sys

import ml_dtypes
import numpy as np
import pytest

from kerasformers.checkpoints import CheckpointError, open_checkpoint

torch = pytest.importorskip("torch")


class _Payload:
    """Unpickling this would create a marker file (it must never be unpickled)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_roundtrip_dtypes(tmp_path):
    state = {
        "w": torch.randn(3, 4),
        "b": torch.randn(4, dtype=torch.float64),
        "h": torch.randn(5, dtype=torch.float16),
        "bf": torch.randn(2, 3, dtype=torch.bfloat16),
        "i": torch.arange(6).reshape(2, 3),
        "flag": torch.tensor([True, False]),
        "scalar": torch.tensor(1.5),
        "empty": torch.zeros(0, 2),
        "view": torch.arange(12.0).reshape(3, 4).t(),
        "f8": torch.tensor([0.5, -1.0]).to(torch.float8_e4m3fn),
        "meta": 7,
    }
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path)
    with open_checkpoint(path) as reader:
        assert reader.format == "torch" and reader.path == str(path)
        assert reader.names() == sorted(k for k in state if k != "meta")
        assert "not a tensor" in reader.skipped["meta"]
        assert reader.dtype("bf") == ml_dtypes.bfloat16
        assert reader.shape("view") == (4, 3)
        for name in reader.names():
            got, want = reader.get(name), state[name]
            assert got.shape == tuple(want.shape)
            if want.dtype in (torch.bfloat16, torch.float8_e4m3fn):
                # Exact: same bits, reinterpreted.
                np.testing.assert_array_equal(got.astype(np.float32), want.float().numpy())
            else:
                np.testing.assert_array_equal(got, want.numpy())


def test_nested_state_dict_and_legacy_format(tmp_path):
    weights = {"layer.weight": torch.ones(2, 2)}
    torch.save({"epoch": 3, "state_dict": weights}, tmp_path / "a.pt")
    torch.save({"model": weights}, tmp_path / "b.pth", _use_new_zipfile_serialization=False)
    for name in ("a.pt", "b.pth"):
        with open_checkpoint(tmp_path / name) as reader:
            assert reader.names() == ["layer.weight"]
            np.testing.assert_array_equal(reader.get("layer.weight"), np.ones((2, 2), np.float32))


def test_pickled_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    torch.save({"w": torch.ones(1), "x": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match=r"refused to load .*evil\.bin"):
        open_checkpoint(path)
    assert not marker.exists()


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "garbage.bin"
    path.write_bytes(b"this is not a pickle")
    with pytest.raises(CheckpointError, match=r"garbage\.bin is not a readable PyTorch checkpoint"):
        open_checkpoint(path)
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"list\.pt does not hold a state dict"):
        open_checkpoint(tmp_path / "list.pt")


def test_sharded_bin(tmp_path):
    torch.save({"a": torch.ones(1)}, tmp_path / "pytorch_model-00001-of-00002.bin")
    torch.save({"b": torch.zeros(2)}, tmp_path / "pytorch_model-00002-of-00002.bin")
    index = (
        '{"weight_map": {"a": "pytorch_model-00001-of-00002.bin",'
        ' "b": "pytorch_model-00002-of-00002.bin"}}'
    )
    (tmp_path / "pytorch_model.bin.index.json").write_text(index)
    with open_checkpoint(tmp_path) as reader:
        assert reader.format == "torch" and reader.names() == ["a", "b"]
        np.testing.assert_array_equal(reader.get("b"), np.zeros(2, np.float32))


def test_missing_torch_gives_install_hint(tmp_path, monkeypatch):
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(1)}, path)
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setattr(builtins, "__import__", no_torch)
    with pytest.raises(CheckpointError, match=r"reading .*pytorch_model\.bin needs PyTorch: pip"):
        open_checkpoint(path)
