"""Checkpoint dtypes: bfloat16 kept bit-exact, float32 cast per tensor, sharded HF saves.

The reference is what HF transformers wrote and reads back, read through the safetensors
package itself (bfloat16 as its 16-bit patterns, via torch).
"""

import json
import os
import shutil

import keras
import ml_dtypes
import numpy as np
import pytest

from kerasformers.models import build_transformer_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors import safe_open  # noqa: E402

SIZES = dict(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=16, n_inner=48)


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """A random GPT-2 saved by HF as float32 (one file) and bfloat16 (shards)."""
    root = tmp_path_factory.mktemp("hf_gpt2")
    config = transformers.GPT2Config(
        **SIZES, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
        # Beyond float16's range and precision: a cast through float16 would show.
        model.transformer.wpe.weight[0, :4] = torch.tensor([1e5, -3e6, 1e-7, 3.3e-6])
    model.save_pretrained(root / "f32")
    ids = np.random.default_rng(0).integers(0, SIZES["vocab_size"], (2, 9))
    with torch.no_grad():
        logits = model(torch.tensor(ids)).logits.numpy()
    model.to(torch.bfloat16).save_pretrained(root / "bf16", max_shard_size="20KB")
    return {"root": root, "ids": ids, "logits": logits}


@pytest.fixture
def bfloat16_policy():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("bfloat16")
    yield
    keras.config.set_dtype_policy(previous)


def _file_tensors(directory):
    """{name: array} of every tensor in a folder's safetensors, as the library reads them;
    bfloat16 as ml_dtypes arrays holding the same bits."""
    out = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".safetensors"):
            continue
        with safe_open(str(directory / name), "pt") as f:
            for key in f.keys():
                tensor = f.get_tensor(key)
                if tensor.dtype == torch.bfloat16:
                    out[key] = tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
                else:
                    out[key] = tensor.numpy()
    return out


def _same_bits(got, expected, name):
    assert got.dtype == expected.dtype and got.shape == expected.shape, name
    assert got.tobytes() == expected.tobytes(), f"{name}: values differ"


def _build(path, **kwargs):
    return build_transformer_model(
        str(path / "config.json"), str(path), model="gpt2", return_keras_model=False, **kwargs
    )


def test_bf16_checkpoint_loads_as_bf16_bit_exact(hf, bfloat16_policy, tmp_path):
    source = hf["root"] / "bf16"
    assert len([n for n in os.listdir(source) if n.endswith(".safetensors")]) >= 2
    builder = _build(source)
    assert {w.dtype for w in builder.model.weights} == {"bfloat16"}
    expected = _file_tensors(source)
    wte = builder.layers["Embedding-Token"].weights[0]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(keras.ops.cast(wte, "float32")),
        expected["transformer.wte.weight"].astype(np.float32),
    )
    # Saved back (c_attn fused again), every tensor has the bits HF wrote.
    builder.save_weights_as_checkpoint(str(tmp_path / "model.safetensors"))
    saved = _file_tensors(tmp_path)
    assert sorted(saved) == sorted(expected)
    for name, value in expected.items():
        _same_bits(saved[name], value, name)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="keras' float32 detour is torch's")
def test_bf16_reaches_torch_variables_without_a_float32_copy(hf, bfloat16_policy, monkeypatch):
    from keras.src.backend.torch import core

    widened = []
    real = core.convert_to_tensor

    def spy(x, dtype=None, **kwargs):
        if isinstance(x, np.ndarray) and x.dtype == ml_dtypes.bfloat16:
            widened.append(x.shape)  # keras casts these through float32
        return real(x, dtype=dtype, **kwargs)

    monkeypatch.setattr(core, "convert_to_tensor", spy)
    builder = _build(hf["root"] / "bf16")
    assert {w.dtype for w in builder.model.weights} == {"bfloat16"}
    assert widened == []


def test_f32_checkpoint_into_bf16_policy_rounds_each_tensor_to_nearest(
    hf, bfloat16_policy, tmp_path
):
    builder = _build(hf["root"] / "f32")
    assert {w.dtype for w in builder.model.weights} == {"bfloat16"}
    builder.save_weights_as_checkpoint(str(tmp_path / "model.safetensors"))
    saved = _file_tensors(tmp_path)
    for name, value in _file_tensors(hf["root"] / "f32").items():
        assert value.dtype == np.float32
        _same_bits(saved[name], value.astype(ml_dtypes.bfloat16), name)  # round to nearest even


def test_sharded_save_loads_in_transformers_with_equal_logits(hf, tmp_path):
    builder = _build(hf["root"] / "f32")
    limit = 20_000
    out = tmp_path / "ours"
    index = builder.save_weights_as_checkpoint(str(out / "model.safetensors"), max_shard_size=limit)
    assert index == str(out / "model.safetensors.index.json")
    with open(index) as f:
        meta = json.load(f)
    shards = {}
    for name, shard in meta["weight_map"].items():
        shards.setdefault(shard, []).append(name)
    assert len(shards) >= 3
    for shard, names in shards.items():
        assert os.path.getsize(out / shard) <= limit or len(names) == 1, shard
    expected = _file_tensors(hf["root"] / "f32")
    assert meta["metadata"]["total_size"] == sum(v.nbytes for v in expected.values())
    shutil.copy(hf["root"] / "f32" / "config.json", out)
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(str(out)).eval()
    with torch.no_grad():
        logits = reloaded(torch.tensor(hf["ids"])).logits.numpy()
    np.testing.assert_array_equal(logits, hf["logits"])


def test_save_as_bf16_out_of_f32_variables(hf, tmp_path):
    builder = _build(hf["root"] / "f32")
    assert {w.dtype for w in builder.model.weights} == {"float32"}
    builder.save_weights_as_checkpoint(
        str(tmp_path / "model.safetensors"), dtype="bfloat16", max_shard_size="1MB"
    )
    assert os.listdir(tmp_path) == ["model.safetensors"]
    saved = _file_tensors(tmp_path)
    for name, value in _file_tensors(hf["root"] / "f32").items():
        _same_bits(saved[name], value.astype(ml_dtypes.bfloat16), name)
    with pytest.raises(ValueError, match="max_shard_size applies to format='safetensors'"):
        builder.save_weights_as_checkpoint(str(tmp_path / "model.ckpt"), max_shard_size="1GB")
