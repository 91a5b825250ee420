"""Sharded safetensors: reading through model.safetensors.index.json, writing shards."""

import json
import os

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open

from kerasformers.checkpoints import CheckpointError, detect_format, open_checkpoint
from kerasformers.checkpoints import save_checkpoint as save
from kerasformers.checkpoints.safetensors_writer import parse_size


def _tensors(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "embed.weight": rng.standard_normal((64, 16)).astype(ml_dtypes.bfloat16),
        "h.0.weight": rng.standard_normal((16, 32)).astype(np.float32),
        "h.0.bias": rng.standard_normal(48).astype(np.float16),
        "h.1.weight": rng.standard_normal((16, 32)).astype(np.float32),
        "h.1.bias": rng.standard_normal(3).astype(ml_dtypes.bfloat16),  # odd byte count
        "steps": np.arange(5, dtype=np.int64),
        "big": rng.standard_normal((40, 40)).astype(np.float32),  # 6400 bytes, over the limit
    }


def _library_read(index_path):
    """Every tensor of a sharded set, read by the safetensors package itself."""
    with open(index_path) as f:
        weight_map = json.load(f)["weight_map"]
    out = {}
    for name, shard in weight_map.items():
        with safe_open(os.path.join(os.path.dirname(index_path), shard), "numpy") as f:
            if name in ("embed.weight", "h.1.bias"):  # bfloat16: as bits through torch
                torch = pytest.importorskip("torch")
                with safe_open(os.path.join(os.path.dirname(index_path), shard), "pt") as g:
                    out[name] = g.get_tensor(name).view(torch.int16).numpy()
                continue
            out[name] = f.get_tensor(name)
    return out


def test_sharded_read_equals_unsharded_read_and_the_library(tmp_path):
    tensors = _tensors()
    single = save(tensors, tmp_path / "one" / "model.safetensors")
    index = save(tensors, tmp_path / "many" / "model.safetensors", max_shard_size=3000)
    assert index == str(tmp_path / "many" / "model.safetensors.index.json")
    files = sorted(os.listdir(tmp_path / "many"))
    count = len(files) - 1
    assert count >= 3 and files[-1] == "model.safetensors.index.json"
    assert files[:-1] == [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
    library = _library_read(index)
    with open_checkpoint(single) as one, open_checkpoint(tmp_path / "many") as many:
        assert many.path == index and many.names() == one.names() == sorted(tensors)
        for name, value in tensors.items():
            got = many.get(name)
            assert got.dtype == value.dtype == one.dtype(name) and got.shape == value.shape
            assert got.tobytes() == one.get(name).tobytes() == value.tobytes(), name
            bits = got.view(np.int16) if got.dtype == ml_dtypes.bfloat16 else got
            np.testing.assert_array_equal(bits, library[name], err_msg=name)
            out = np.empty_like(value)
            assert many.read_into(name, out) is out and out.tobytes() == value.tobytes()


def test_max_shard_size_is_respected_and_the_index_is_hf_s(tmp_path):
    tensors = _tensors()
    limit = 3000
    index = save(tensors, tmp_path / "model.safetensors", max_shard_size=limit)
    with open(index) as f:
        meta = json.load(f)
    nbytes = {name: np.asarray(v).nbytes for name, v in tensors.items()}
    assert meta["metadata"] == {"total_size": sum(nbytes.values())}
    assert sorted(meta["weight_map"]) == sorted(tensors)
    shards = {}
    for name, shard in meta["weight_map"].items():
        shards.setdefault(shard, []).append(name)
    for shard, names in shards.items():
        size = os.path.getsize(tmp_path / shard)
        assert size <= limit or names == ["big"], (shard, size, names)
        assert len(names) == 1 or size + min(nbytes[n] for n in names) > 0
        with safe_open(str(tmp_path / shard), "numpy") as f:
            assert sorted(f.keys()) == sorted(names) and f.metadata() == {"format": "pt"}
    # The given order is kept: the tensors of one layer stay in one shard.
    assert meta["weight_map"]["h.0.weight"] == meta["weight_map"]["h.0.bias"]
    # The headers count: two 960-byte tensors do not share a 2000-byte file.
    pair = {"a": np.zeros(240, np.float32), "b": np.ones(240, np.float32)}
    index = save(pair, tmp_path / "pair" / "model.safetensors", max_shard_size=2000)
    with open(index) as f:
        assert len(set(json.load(f)["weight_map"].values())) == 2
    assert all(os.path.getsize(p) <= 2000 for p in (tmp_path / "pair").glob("*.safetensors"))
    # Under the limit: one file with no index, as save_pretrained writes.
    path = save(tensors, tmp_path / "small" / "model.safetensors", max_shard_size="1MB")
    assert os.listdir(tmp_path / "small") == ["model.safetensors"]
    assert path == str(tmp_path / "small" / "model.safetensors")


def test_sizes():
    assert parse_size("2GB") == 2 * 10**9 and parse_size("500MiB") == 500 * 2**20
    assert parse_size(" 1.5 kb ") == 1500 and parse_size(123) == 123
    for bad in ("2 parsecs", "-1GB", 0, True, None):
        with pytest.raises(ValueError, match="max_shard_size"):
            parse_size(bad)


def _sharded_set(tmp_path):
    index = save(_tensors(), tmp_path / "model.safetensors", max_shard_size=3000)
    with open(index) as f:
        return index, json.load(f)


def test_missing_shard_is_an_error_at_open_naming_shard_and_index(tmp_path):
    index, meta = _sharded_set(tmp_path)
    shard = meta["weight_map"]["h.0.weight"]
    os.remove(tmp_path / shard)
    with pytest.raises(
        CheckpointError,
        match=rf"model\.safetensors\.index\.json lists \d shard\(s\), of which 1 is missing "
        rf"from .*: {shard} \(holding 2 tensor\(s\), e.g. 'h\.0\.",
    ):
        open_checkpoint(tmp_path)


def test_tensor_mapped_to_a_shard_that_lacks_it(tmp_path):
    index, meta = _sharded_set(tmp_path)
    right = meta["weight_map"]["h.1.weight"]
    wrong = next(s for s in meta["weight_map"].values() if s != right)
    meta["weight_map"]["h.1.weight"] = wrong
    with open(index, "w") as f:
        json.dump(meta, f)
    with pytest.raises(
        CheckpointError,
        match=rf"maps tensor 'h\.1\.weight' to .*{wrong}, which does not hold it "
        rf"\(it is in {right}\)",
    ):
        open_checkpoint(index)


def test_directory_with_both_reads_model_safetensors_as_transformers_does(tmp_path):
    _sharded_set(tmp_path)
    other = {"x": np.ones(3, np.float32)}
    # Not through save(): it removes the set it would shadow (checked below).
    from safetensors.numpy import save_file

    save_file(other, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.warns(RuntimeWarning, match="holds both model.safetensors and model"):
        assert detect_format(tmp_path) == ("safetensors", str(tmp_path / "model.safetensors"))
    # Saving a single file here removes the stale set; saving a set removes the single file.
    save(other, tmp_path, format="safetensors")
    assert os.listdir(tmp_path) == ["model.safetensors"]
    save(_tensors(), tmp_path, "safetensors", max_shard_size=3000)
    assert "model.safetensors" not in os.listdir(tmp_path)
    assert detect_format(tmp_path)[1].endswith("model.safetensors.index.json")


def test_resaving_a_set_is_crash_safe(tmp_path, monkeypatch):
    old, new = _tensors(0), _tensors(1)
    save(old, tmp_path, "safetensors", max_shard_size=3000)
    real_replace = os.replace

    def crash_on_shards(src, dst):
        if str(dst).endswith("-of-00005.safetensors") or "-of-0000" in str(dst):
            raise OSError("disk gone")
        real_replace(src, dst)

    # The old index is gone and the new shards not in place: the backup loads, old values.
    monkeypatch.setattr(os, "replace", crash_on_shards)
    with pytest.raises(CheckpointError, match="disk gone"):
        save(new, tmp_path, "safetensors", max_shard_size=3000)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))
    with pytest.warns(RuntimeWarning, match="interrupted"):
        with open_checkpoint(tmp_path) as reader:
            assert reader.get("big").tobytes() == old["big"].tobytes()
    # A save that completes leaves only the new set, no backup.
    save(new, tmp_path, "safetensors", max_shard_size=3000)
    assert not any(name.endswith(".bak") for name in os.listdir(tmp_path))
    with open_checkpoint(tmp_path) as reader:
        assert reader.get("big").tobytes() == new["big"].tobytes()
