"""Every layer: numerics against numpy, get_config, and a .keras save/load round trip."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from kerasformers import backend as K
from kerasformers.layers import (
    BiasAdd,
    Embedding,
    FeedForward,
    LayerNormalization,
    MultiHeadAttention,
    PositionEmbedding,
    TakePosition,
)


def np_gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def np_layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def roundtrip(model, inputs, tmp_path):
    """Saves `model` as .keras, reloads it, and checks identical outputs and configs."""
    expected = model.predict(inputs, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    got = restored.predict(inputs, verbose=0)
    for a, b in zip(keras.tree.flatten(expected), keras.tree.flatten(got), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    for layer in model.layers:
        assert restored.get_layer(layer.name).get_config() == layer.get_config()
    return restored


def test_embedding_dense_mode_is_tied_projection(rng, tmp_path):
    ids = keras.Input((None,), dtype="int32")
    emb = Embedding(17, 6, name="Embedding-Token")
    h = emb(ids)
    logits = emb(h, mode="dense")
    model = keras.Model(ids, logits)
    x = rng.integers(0, 17, (2, 5)).astype("int32")
    table = keras.ops.convert_to_numpy(emb.embeddings)
    expected = table[x] @ table.T
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-5)
    roundtrip(model, x, tmp_path)
    with pytest.raises(ValueError, match="mode must be 'embedding' or 'dense'"):
        emb(h, mode="transpose")


@pytest.mark.parametrize("merge_mode", ["add", "mul", "zero", "concat"])
def test_position_embedding_modes(rng, tmp_path, merge_mode):
    x_in = keras.Input((None, 4))
    layer = PositionEmbedding(10, 4, merge_mode=merge_mode, embeddings_initializer="normal")
    model = keras.Model(x_in, layer(x_in))
    x = rng.normal(size=(2, 6, 4)).astype("float32")
    table = keras.ops.convert_to_numpy(layer.embeddings)[:6][None]
    expected = {
        "add": x + table,
        "mul": x * (table + 1),
        "zero": np.broadcast_to(table, x.shape),
        "concat": np.concatenate([x, np.broadcast_to(table, x.shape)], -1),
    }[merge_mode]
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-6)
    roundtrip(model, x, tmp_path)


def test_position_embedding_custom_ids_and_hierarchical(rng):
    layer = PositionEmbedding(5, 3, custom_position_ids=True, embeddings_initializer="normal")
    x = np.zeros((1, 3, 3), "float32")
    pos = np.array([[4, 0, 2]], "int32")
    out = keras.ops.convert_to_numpy(layer([x, pos]))
    table = keras.ops.convert_to_numpy(layer.embeddings)
    np.testing.assert_allclose(out[0], table[[4, 0, 2]], atol=1e-6)

    # Hierarchical decomposition (kexue.fm/archives/7947): position i*n + j gets
    # alpha*u_i + (1-alpha)*u_j with u = (p - alpha*p_0) / (1 - alpha); the first n
    # positions stay the trained ones.
    hier = PositionEmbedding(4, 2, hierarchical=True, embeddings_initializer="normal")
    y = keras.ops.convert_to_numpy(hier(np.zeros((1, 11, 2), "float32")))[0]
    p = keras.ops.convert_to_numpy(hier.embeddings)
    u = (p - 0.4 * p[:1]) / 0.6
    expected = np.stack([0.4 * u[i // 4] + 0.6 * u[i % 4] for i in range(11)])
    np.testing.assert_allclose(y, expected, atol=1e-5)
    np.testing.assert_allclose(y[:4], p, atol=1e-5)


def test_position_embedding_too_long_input_is_a_clear_error():
    layer = PositionEmbedding(4, 2, name="Embedding-Position")
    with pytest.raises(ValueError, match="input length 6 exceeds the 4 positions"):
        layer(np.zeros((1, 6, 2), "float32"))


def test_layer_normalization_matches_numpy(rng, tmp_path):
    x_in = keras.Input((None, 8))
    layer = LayerNormalization(epsilon=1e-5)
    model = keras.Model(x_in, layer(x_in))
    layer.gamma.assign(rng.uniform(0.5, 1.5, 8))
    layer.beta.assign(rng.normal(size=8))
    x = rng.normal(size=(3, 4, 8)).astype("float32")
    expected = np_layer_norm(
        x, keras.ops.convert_to_numpy(layer.gamma), keras.ops.convert_to_numpy(layer.beta), 1e-5
    )
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-5)
    assert [w.name for w in layer.weights] == ["beta", "gamma"]
    roundtrip(model, x, tmp_path)


def test_conditional_layer_normalization(rng, tmp_path):
    x_in, c_in = keras.Input((None, 6)), keras.Input((5,))
    layer = LayerNormalization(conditional=True, hidden_units=4, hidden_activation="relu")
    model = keras.Model([x_in, c_in], layer([x_in, c_in]))
    x = rng.normal(size=(2, 3, 6)).astype("float32")
    c = rng.normal(size=(2, 5)).astype("float32")
    plain = np_layer_norm(x, 1.0, 0.0, 1e-12)
    # Zero-initialised condition projections: starts as the plain LayerNorm.
    np.testing.assert_allclose(model.predict([x, c], verbose=0), plain, atol=1e-5)
    # With non-zero projections gamma/beta move with the condition.
    layer.gamma_dense.kernel.assign(rng.normal(size=(4, 6)))
    layer.beta_dense.kernel.assign(rng.normal(size=(4, 6)))
    hidden = np.maximum(c @ keras.ops.convert_to_numpy(layer.hidden_dense.kernel), 0)
    gamma = 1 + hidden @ keras.ops.convert_to_numpy(layer.gamma_dense.kernel)
    beta = hidden @ keras.ops.convert_to_numpy(layer.beta_dense.kernel)
    expected = np_layer_norm(x, gamma[:, None], beta[:, None], 1e-12)
    np.testing.assert_allclose(model.predict([x, c], verbose=0), expected, atol=1e-4)
    roundtrip(model, [x, c], tmp_path)


def np_attention(layer, q, k, v, mask=None, bias=None):
    def dense(d, x):
        kernel = keras.ops.convert_to_numpy(d.kernel)
        out = x @ kernel
        if d.use_bias:
            out = out + keras.ops.convert_to_numpy(d.bias)
        return out

    b, h, ks, hs = q.shape[0], layer.heads, layer.key_size, layer.head_size
    qw = dense(layer.q_dense, q).reshape(b, q.shape[1], h, ks).transpose(0, 2, 1, 3)
    kw = dense(layer.k_dense, k).reshape(b, k.shape[1], h, ks).transpose(0, 2, 1, 3)
    vw = dense(layer.v_dense, v).reshape(b, v.shape[1], h, hs).transpose(0, 2, 1, 3)
    logits = qw @ kw.transpose(0, 1, 3, 2) / np.sqrt(ks)  # (batch, heads, q, k)
    if mask is not None:
        logits = np.where(mask[:, None, None, :] > 0, logits, -1e30)
    if bias is not None:
        logits = logits + bias
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = (probs @ vw).transpose(0, 2, 1, 3).reshape(b, q.shape[1], h * hs)
    return dense(layer.o_dense, out), probs


@pytest.mark.parametrize("key_size", [None, 3])
def test_multi_head_attention_matches_numpy(rng, tmp_path, key_size):
    q_in, kv_in = keras.Input((None, 10)), keras.Input((None, 12))
    m_in, b_in = keras.Input((None,)), keras.Input((None, None))
    layer = MultiHeadAttention(heads=2, head_size=5, out_dim=7, key_size=key_size)
    bias_4d = keras.ops.expand_dims(b_in, 1)
    out = layer([q_in, kv_in, kv_in], attention_mask=m_in, attention_bias=bias_4d)
    model = keras.Model([q_in, kv_in, m_in, b_in], out)
    q = rng.normal(size=(2, 4, 10)).astype("float32")
    kv = rng.normal(size=(2, 6, 12)).astype("float32")
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], "float32")
    bias = rng.normal(size=(2, 4, 6)).astype("float32")
    expected, _ = np_attention(layer, q, kv, kv, mask, bias[:, None])
    got = model.predict([q, kv, mask, bias], verbose=0)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    roundtrip(model, [q, kv, mask, bias], tmp_path)


def test_multi_head_attention_scores_and_masked_keys_ignored(rng):
    layer = MultiHeadAttention(heads=3, head_size=4, return_attention_scores=True)
    x = rng.normal(size=(1, 5, 12)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0]], "float32")
    out, probs = layer([x, x, x], attention_mask=mask)
    probs = keras.ops.convert_to_numpy(probs)
    assert probs.shape == (1, 3, 5, 5)
    np.testing.assert_allclose(probs[..., 3:], 0, atol=1e-7)
    expected, expected_probs = np_attention(layer, x, x, x, mask)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, atol=1e-5)
    np.testing.assert_allclose(probs, expected_probs, atol=1e-6)
    # Changing a masked key changes nothing.
    x2 = x.copy()
    x2[0, 4] += 10
    out2, _ = layer([x2, x2, x2], attention_mask=mask)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(out2)[0, :3], keras.ops.convert_to_numpy(out)[0, :3], atol=1e-5
    )


@pytest.mark.parametrize("activation", ["gelu", "relu", ["gelu", "linear"]])
def test_feed_forward(rng, tmp_path, activation):
    x_in = keras.Input((None, 6))
    layer = FeedForward(9, activation=activation)
    model = keras.Model(x_in, layer(x_in))
    x = rng.normal(size=(2, 3, 6)).astype("float32")
    dense = [
        (keras.ops.convert_to_numpy(d.kernel), keras.ops.convert_to_numpy(d.bias))
        for d in layer.input_denses
    ]
    acts = {"gelu": np_gelu, "relu": lambda v: np.maximum(v, 0), "linear": lambda v: v}
    names = activation if isinstance(activation, list) else [activation]
    hidden = 1.0
    for (kernel, bias), name in zip(dense, names, strict=True):
        hidden = hidden * acts[name](x @ kernel + bias)
    o_kernel = keras.ops.convert_to_numpy(layer.o_dense.kernel)
    expected = hidden @ o_kernel + keras.ops.convert_to_numpy(layer.o_dense.bias)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-5)
    roundtrip(model, x, tmp_path)


def test_bias_add_and_take_position(rng, tmp_path):
    x_in = keras.Input((None, 4))
    bias_layer = BiasAdd()
    y = TakePosition(index=-1)(bias_layer(x_in))
    model = keras.Model(x_in, y)
    bias_layer.bias.assign(np.arange(4, dtype="float32"))
    x = rng.normal(size=(2, 3, 4)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), x[:, -1] + np.arange(4), atol=1e-6)
    roundtrip(model, x, tmp_path)


def test_backend_helpers(rng):
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]])
    out = keras.ops.convert_to_numpy(K.sequence_masking(x, mask, "-inf"))
    assert np.all(out[0, 2:] <= -1e11) and np.allclose(out[0, :2], x[0, :2])
    out = keras.ops.convert_to_numpy(K.sequence_masking(ops.transpose(x, (0, 2, 1)), mask, 0, -1))
    assert np.all(out[0, :, 2:] == 0)
    v = np.linspace(-4, 4, 33).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(K.gelu_erf(v)), np_gelu(v), atol=1e-6)
    tanh_ref = 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v**3)))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(K.gelu_tanh(v)), tanh_ref, atol=1e-6)
    try:
        K.set_gelu("tanh")
        assert K.get_activation("gelu") is K.gelu_tanh
    finally:
        K.set_gelu("erf")
    assert K.get_activation("gelu") is K.gelu_erf
    with pytest.raises(ValueError, match="set_gelu: version must be"):
        K.set_gelu("fast")
    with pytest.raises(ValueError, match="Unknown activation 'gelu_fancy'"):
        K.get_activation("gelu_fancy")


def test_dense_fast_path_follows_weight_updates(rng):
    """backend.dense (packed oneDNN weights on torch) sees assigns and optimizer steps."""
    x_in = keras.Input((None, 6))
    layer = FeedForward(10, activation="gelu")
    model = keras.Model(x_in, layer(x_in))
    x = rng.normal(size=(2, 3, 6)).astype("float32")

    def reference():
        out = x
        for dense in (layer.input_denses[0], layer.o_dense):
            kernel = keras.ops.convert_to_numpy(dense.kernel)
            out = out @ kernel + keras.ops.convert_to_numpy(dense.bias)
            if dense is layer.input_denses[0]:
                out = np_gelu(out)
        return out

    np.testing.assert_allclose(model.predict(x, verbose=0), reference(), atol=1e-5)
    layer.o_dense.kernel.assign(rng.normal(size=(10, 6)))
    np.testing.assert_allclose(model.predict(x, verbose=0), reference(), atol=1e-5)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    model.fit(x, np.zeros_like(x), epochs=2, verbose=0)
    np.testing.assert_allclose(model.predict(x, verbose=0), reference(), atol=1e-5)
    try:
        K.set_packed_linear(False)
        np.testing.assert_allclose(model.predict(x, verbose=0), reference(), atol=1e-5)
    finally:
        K.set_packed_linear(True)
