"""Position layers and position-aware attention: numpy references and .keras round trips."""

import math

import keras
import numpy as np

from kerasformers.layers import (
    LayerNormalization,
    MultiHeadAttention,
    RelativePositionEmbedding,
    RotaryAttention,
    SinusoidalPositionEmbedding,
    TypicalRelativeAttention,
)
from tests.layers.test_layers import np_attention, roundtrip


def np_sinusoid(positions, dim):
    """Vaswani et al.'s table, interleaved: (2i, 2i+1) = sin, cos of p / 10000^(2i/d)."""
    out = np.zeros((len(positions), dim))
    for row, p in enumerate(positions):
        for i in range(dim // 2):
            out[row, 2 * i] = math.sin(p / 10000 ** (2 * i / dim))
            out[row, 2 * i + 1] = math.cos(p / 10000 ** (2 * i / dim))
    return out


def np_rope(x, table):
    """(len, heads, d) rotated pairwise by the table's angles."""
    sin, cos = table[:, None, 0::2], table[:, None, 1::2]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def test_sinusoidal_position_embedding_modes(rng, tmp_path):
    x_in = keras.Input((None, 6))
    zero = SinusoidalPositionEmbedding(6, merge_mode="zero")(x_in)
    add = SinusoidalPositionEmbedding(6, merge_mode="add")(x_in)
    model = keras.Model(x_in, [zero, add])
    x = rng.normal(size=(2, 7, 6)).astype("float32")
    got_zero, got_add = model.predict(x, verbose=0)
    table = np_sinusoid(range(7), 6)
    np.testing.assert_allclose(got_zero, np.broadcast_to(table, (2, 7, 6)), atol=1e-5)
    np.testing.assert_allclose(got_add, x + table, atol=1e-5)
    roundtrip(model, x, tmp_path)
    # custom position ids
    custom = SinusoidalPositionEmbedding(6, merge_mode="zero", custom_position_ids=True)
    ids = np.array([[3, 1, 4]], "int32")
    got = keras.ops.convert_to_numpy(custom([x[:1, :3], ids]))
    np.testing.assert_allclose(got[0], np_sinusoid([3, 1, 4], 6), atol=1e-5)


def test_rotary_attention_matches_numpy(rng, tmp_path):
    x_in = keras.Input((None, 12))
    layer = RotaryAttention(heads=2, head_size=4, out_dim=12)
    table_in = SinusoidalPositionEmbedding(4, merge_mode="zero")(x_in)
    model = keras.Model(x_in, layer([x_in, x_in, x_in], position_inputs=table_in))
    x = rng.normal(size=(2, 5, 12)).astype("float32")
    got = model.predict(x, verbose=0)

    def dense(d, v):
        return v @ keras.ops.convert_to_numpy(d.kernel) + keras.ops.convert_to_numpy(d.bias)

    table = np_sinusoid(range(5), 4)
    expected = []
    for row in x:
        q = np_rope(dense(layer.q_dense, row).reshape(5, 2, 4), table)
        k = np_rope(dense(layer.k_dense, row).reshape(5, 2, 4), table)
        v = dense(layer.v_dense, row).reshape(5, 2, 4)
        logits = np.einsum("qhd,khd->hqk", q, k) / 2.0
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        expected.append(dense(layer.o_dense, np.einsum("hqk,khd->qhd", probs, v).reshape(5, 8)))
    np.testing.assert_allclose(got, np.stack(expected), atol=1e-5)
    roundtrip(model, x, tmp_path)


def test_typical_relative_attention_matches_numpy(rng, tmp_path):
    x_in, m_in = keras.Input((None, 8)), keras.Input((None,))
    layer = TypicalRelativeAttention(heads=2, head_size=4)
    rel = RelativePositionEmbedding(2 * 2 + 1, 4)([x_in, x_in])
    out = layer([x_in, x_in, x_in], attention_mask=m_in, position_inputs=rel)
    model = keras.Model([x_in, m_in], out)
    x = rng.normal(size=(2, 6, 8)).astype("float32")
    mask = np.array([[1, 1, 1, 1, 1, 0], [1] * 6], "float32")
    got = model.predict([x, mask], verbose=0)
    # Reference: Shaw et al. eq. 3-5 with the clipped table r_ij (rows clip(j-i,-2,2)+2).
    rows = np.clip(np.arange(6)[None, :] - np.arange(6)[:, None], -2, 2) + 2
    r = np_sinusoid(range(5), 4)[rows]  # (q, k, d)

    def dense(d, v):
        return v @ keras.ops.convert_to_numpy(d.kernel) + keras.ops.convert_to_numpy(d.bias)

    expected = []
    for row, keep in zip(x, mask, strict=True):
        q = dense(layer.q_dense, row).reshape(6, 2, 4)
        k = dense(layer.k_dense, row).reshape(6, 2, 4)
        v = dense(layer.v_dense, row).reshape(6, 2, 4)
        logits = (np.einsum("qhd,khd->hqk", q, k) + np.einsum("qhd,qkd->hqk", q, r)) / 2.0
        logits = np.where(keep[None, None] > 0, logits, -np.inf)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        z = np.einsum("hqk,khd->qhd", probs, v) + np.einsum("hqk,qkd->qhd", probs, r)
        expected.append(dense(layer.o_dense, z.reshape(6, 8)))
    np.testing.assert_allclose(got, np.stack(expected), atol=1e-5)
    roundtrip(model, [x, mask], tmp_path)


def test_attention_logits_output(rng):
    layer = MultiHeadAttention(heads=2, head_size=3, return_attention_logits=True)
    x = rng.normal(size=(1, 4, 6)).astype("float32")
    bias = rng.normal(size=(1, 1, 4, 4)).astype("float32")
    out, logits = layer([x, x, x], attention_bias=bias)
    expected, probs = np_attention(layer, x, x, x, bias=bias)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, atol=1e-5)
    logits = keras.ops.convert_to_numpy(logits)
    softmax = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(softmax / softmax.sum(-1, keepdims=True), probs, atol=1e-6)


def test_rms_normalization(rng, tmp_path):
    x_in = keras.Input((None, 5))
    plain = LayerNormalization(zero_mean=False, center=False, scale=False)(x_in)
    scaled = LayerNormalization(zero_mean=False, epsilon=1e-6)(x_in)
    model = keras.Model(x_in, [plain, scaled])
    x = rng.normal(size=(2, 3, 5)).astype("float32") + 2.0
    got_plain, got_scaled = model.predict(x, verbose=0)
    rms = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-12)
    np.testing.assert_allclose(got_plain, rms, atol=1e-5)
    np.testing.assert_allclose(
        got_scaled, x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6), atol=1e-5
    )
    assert len(model.layers[1].weights) == 0
    roundtrip(model, x, tmp_path)
