"""Grouped-query attention (`key_value_heads`): equals multi-head attention whose
key/value heads are repeated per group, and caches keys/values at their own size."""

import numpy as np
from keras import ops

from kerasformers.generation.cached import Decoding
from kerasformers.layers import MultiHeadAttention
from kerasformers.models.masks import lm_mask


def _layers(rng):
    gqa = MultiHeadAttention(heads=4, head_size=8, key_value_heads=2, name="gqa")
    mha = MultiHeadAttention(heads=4, head_size=8, name="mha")
    x = rng.standard_normal((2, 5, 16)).astype("float32")
    gqa([x, x, x])
    mha([x, x, x])
    for variable in gqa.weights:
        variable.assign(rng.standard_normal(variable.shape).astype("float32") * 0.3)
    # Query head h reads key/value head h // 2: repeat each kv head's columns twice.
    for name in ("q_dense", "o_dense"):
        for a, b in zip(getattr(gqa, name).weights, getattr(mha, name).weights, strict=True):
            b.assign(a)
    for name in ("k_dense", "v_dense"):
        for a, b in zip(getattr(gqa, name).weights, getattr(mha, name).weights, strict=True):
            value = ops.convert_to_numpy(a)
            heads = value.reshape(value.shape[:-1] + (2, 8))
            b.assign(np.repeat(heads, 2, axis=-2).reshape(value.shape[:-1] + (32,)))
    return gqa, mha, x


def test_grouped_query_attention_equals_repeated_heads(rng):
    gqa, mha, x = _layers(rng)
    assert tuple(gqa.k_dense.kernel.shape) == (16, 16)  # 2 kv heads x 8
    bias = lm_mask(5)
    expected = ops.convert_to_numpy(mha([x, x, x], attention_bias=bias))
    ours = ops.convert_to_numpy(gqa([x, x, x], attention_bias=bias))
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    config = gqa.get_config()
    assert config["key_value_heads"] == 2
    assert MultiHeadAttention.from_config(config).key_value_heads == 2


def test_grouped_query_cache_keeps_key_value_heads(rng):
    gqa, mha, x = _layers(rng)
    expected = ops.convert_to_numpy(mha([x, x, x], attention_bias=lm_mask(5)))
    pad = ops.zeros((2,), "int32")
    caches, outputs = {}, []
    for t in range(5):
        decoding = Decoding(t, 1, 5, pad, caches, {})
        decoding._key = "layer"
        bias = ops.where(decoding.key_slots[None, None, None, :] <= t, 0.0, -1e12)
        step = ops.convert_to_tensor(x[:, t : t + 1])
        outputs.append(
            ops.convert_to_numpy(gqa.decode_call(decoding, [step, step, step], attention_bias=bias))
        )
        caches = decoding.caches
    keys, values = caches["layer"]
    assert tuple(keys.shape) == (2, 5, 2, 8) and tuple(values.shape) == (2, 5, 2, 8)
    np.testing.assert_allclose(np.concatenate(outputs, 1), expected, atol=1e-5)
