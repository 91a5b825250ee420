"""The torch CPU fast path of `kerasformers.backend.dense` (packed oneDNN linear): taken in
inference, and when one of its private ops fails, one warning and the plain path's numbers."""

import warnings

import keras
import numpy as np
import pytest

from kerasformers.backend import dense, gelu_erf, set_packed_linear, tied_dense
from kerasformers.backend import ops as kf_ops

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="the packed oneDNN linear fast path exists only on the torch backend",
)


@pytest.fixture
def fast_path(monkeypatch):
    """The fast path on, at every size, with a clean cache; the module's state restored."""
    monkeypatch.setitem(kf_ops._PACKED_LINEAR, "min_rows", 0)
    monkeypatch.setitem(kf_ops._PACKED_LINEAR, "calls", 0)
    monkeypatch.setitem(kf_ops._PACKED_LINEAR, "failure", None)
    enabled = kf_ops._PACKED_LINEAR["enabled"]
    set_packed_linear(True)
    yield kf_ops._PACKED_LINEAR
    set_packed_linear(enabled)


def _layer(rng, activation=None, units=24, features=16):
    layer = keras.layers.Dense(units, activation=activation)
    layer.build((None, features))
    layer.kernel.assign(rng.normal(size=(features, units)).astype("float32"))
    layer.bias.assign(rng.normal(size=(units,)).astype("float32"))
    return layer


def _reference(layer, x):
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    bias = keras.ops.convert_to_numpy(layer.bias)
    return x @ kernel + bias


def _run(layer, x):
    import torch

    with torch.no_grad():
        return keras.ops.convert_to_numpy(dense(layer, torch.from_numpy(x)))


@pytest.mark.parametrize("rows", [1, 7])
def test_inference_takes_the_fast_path(fast_path, rng, rows):
    layer = _layer(rng)
    x = rng.normal(size=(2, rows, 16)).astype("float32")
    out = _run(layer, x)
    assert fast_path["calls"] == 1 and fast_path["failure"] is None
    np.testing.assert_allclose(out, _reference(layer, x), rtol=1e-5, atol=1e-5)


def test_fused_gelu_and_tied_head_take_the_fast_path(fast_path, rng):
    import torch

    layer = _layer(rng, activation=gelu_erf)
    x = rng.normal(size=(3, 16)).astype("float32")
    expected = keras.ops.convert_to_numpy(gelu_erf(_reference(layer, x)))
    np.testing.assert_allclose(_run(layer, x), expected, rtol=1e-5, atol=1e-5)
    table = rng.normal(size=(30, 16)).astype("float32")
    with torch.no_grad():
        logits = tied_dense(torch.from_numpy(x), torch.from_numpy(table))
    np.testing.assert_allclose(logits.numpy(), x @ table.T, rtol=1e-5, atol=1e-5)
    assert fast_path["calls"] == 2


def test_training_does_not_take_the_fast_path(fast_path, rng):
    import torch

    layer = _layer(rng)
    x = torch.from_numpy(rng.normal(size=(4, 16)).astype("float32"))
    out = dense(layer, x)  # autograd on
    assert out.requires_grad and fast_path["calls"] == 0


@pytest.mark.parametrize(
    "op", ["_linear_pointwise", "_reorder_linear_weight", "_is_mkldnn_bf16_supported"]
)
def test_planted_failure_warns_once_and_keeps_the_numbers(fast_path, rng, monkeypatch, op):
    import torch

    def broken(*args, **kwargs):
        raise RuntimeError("planted oneDNN failure")

    monkeypatch.setattr(torch.ops.mkldnn, op, broken)
    dtype = "bfloat16" if op == "_is_mkldnn_bf16_supported" else "float32"
    layer = _layer(rng)
    x = rng.normal(size=(5, 16)).astype("float32")
    expected = _reference(layer, x)
    if dtype == "bfloat16":  # the bf16 support check only runs for bf16 input
        layer = keras.layers.Dense(24, dtype="bfloat16")
        layer.build((None, 16))
        kernel, bias = rng.normal(size=(16, 24)), rng.normal(size=(24,))
        layer.kernel.assign(kernel.astype("float32"))
        layer.bias.assign(bias.astype("float32"))
        kernel = keras.ops.convert_to_numpy(keras.ops.cast(layer.kernel, "float32"))
        bias = keras.ops.convert_to_numpy(keras.ops.cast(layer.bias, "float32"))
        expected = x @ kernel + bias
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outs = []
        for _ in range(3):
            with torch.no_grad():
                xt = torch.from_numpy(x).to(getattr(torch, dtype))
                outs.append(dense(layer, xt).float().numpy())
    fallbacks = [w for w in caught if "fast path" in str(w.message)]
    assert len(fallbacks) == 1, [str(w.message) for w in caught]
    message = str(fallbacks[0].message)
    assert f"torch.ops.mkldnn.{op}" in message and "planted oneDNN failure" in message
    assert "RuntimeError" in message and fallbacks[0].category is RuntimeWarning
    assert fallbacks[0].filename == __file__  # points at the caller, not at ops.py
    assert fast_path["enabled"] is False and fast_path["calls"] == 0
    assert op in fast_path["failure"]
    tol = 5e-2 if dtype == "bfloat16" else 1e-5
    for out in outs:
        np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * 10)
