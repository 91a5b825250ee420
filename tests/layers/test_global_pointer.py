"""GlobalPointer / EfficientGlobalPointer against a direct numpy implementation."""

import keras
import numpy as np
import pytest
from keras import ops

from kerasformers.layers import EfficientGlobalPointer, GlobalPointer


def to_numpy(x):
    return ops.convert_to_numpy(x)


def np_rope(x):
    """RoPE on (batch, seq, [heads,] size): pair (2i, 2i+1) at position p turned by
    p * 10000^(-2i/size) (arXiv 2104.09864, eq. 34), independently of the library."""
    size, seq_len = x.shape[-1], x.shape[1]
    theta = 10000.0 ** (-2 * np.arange(size // 2) / size)
    angle = np.arange(seq_len)[:, None] * theta[None, :]  # (seq, size/2)
    cos, sin = np.cos(angle), np.sin(angle)
    if x.ndim == 4:
        cos, sin = cos[:, None], sin[:, None]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = odd * cos + even * sin
    return out


def dense_np(layer, x):
    out = x @ to_numpy(layer.kernel).astype("float64")
    return out + to_numpy(layer.bias) if layer.use_bias else out


def np_global_pointer(layer, x):
    """(batch, heads, start, end) scores of kexue.fm/archives/8373."""
    b, n, hs = x.shape[0], x.shape[1], layer.head_size
    h = dense_np(layer.dense, x).reshape(b, n, layer.heads, 2 * hs)
    q, k = h[..., :hs], h[..., hs:]
    if layer.RoPE:
        q, k = np_rope(q), np_rope(k)
    return np.einsum("bmhd,bnhd->bhmn", q, k) / np.sqrt(hs)


def np_efficient_global_pointer(layer, x):
    """Shared q.k plus per-head start/end biases (kexue.fm/archives/8877)."""
    h = dense_np(layer.p_dense, x)  # (batch, seq, 2 * head_size)
    q, k = h[..., 0::2], h[..., 1::2]
    if layer.RoPE:
        q, k = np_rope(q), np_rope(k)
    shared = np.einsum("bmd,bnd->bmn", q, k) / np.sqrt(layer.head_size)
    bias = dense_np(layer.q_dense, h) / 2  # (batch, seq, 2 * heads)
    end_bias = bias[..., 0::2].transpose(0, 2, 1)[:, :, None, :]  # (batch, heads, 1, end)
    start_bias = bias[..., 1::2].transpose(0, 2, 1)[:, :, :, None]  # (batch, heads, start, 1)
    return shared[:, None] + end_bias + start_bias


def valid_spans(mask, tril_mask):
    """(batch, 1, start, end) True where both ends are real (and end >= start)."""
    n = mask.shape[1]
    valid = (mask[:, :, None] > 0) & (mask[:, None, :] > 0)
    if tril_mask:
        valid = valid & np.triu(np.ones((n, n), bool))[None]
    return valid[:, None]


CASES = [
    (GlobalPointer, dict(RoPE=True, tril_mask=True)),
    (GlobalPointer, dict(RoPE=False, tril_mask=False, use_bias=False)),
    (EfficientGlobalPointer, dict(RoPE=True, tril_mask=True)),
    (EfficientGlobalPointer, dict(RoPE=False, tril_mask=False)),
]


@pytest.mark.parametrize("layer_cls, kwargs", CASES)
def test_scores_match_numpy(rng, layer_cls, kwargs):
    reference = {
        GlobalPointer: np_global_pointer,
        EfficientGlobalPointer: np_efficient_global_pointer,
    }[layer_cls]
    layer = layer_cls(heads=3, head_size=4, kernel_initializer="glorot_normal", **kwargs)
    x = rng.normal(size=(2, 5, 6)).astype("float32")
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], "float32")
    got = to_numpy(layer(x, mask=mask))
    assert got.shape == (2, 3, 5, 5)
    if layer.use_bias:  # make the biases matter
        denses = [layer.dense] if layer_cls is GlobalPointer else [layer.p_dense, layer.q_dense]
        for dense in denses:
            dense.bias.assign(rng.normal(size=dense.bias.shape))
        got = to_numpy(layer(x, mask=mask))
    expected = reference(layer, x.astype("float64"))
    valid = np.broadcast_to(valid_spans(mask, kwargs["tril_mask"]), got.shape)
    np.testing.assert_allclose(got[valid], expected[valid], rtol=0, atol=1e-4)
    # Spans touching padding (or ending before they start) are -infinity.
    assert np.all(got[~valid] <= -1e11)
    if not kwargs["tril_mask"]:
        assert valid[0].all()  # the unpadded row has no masked span at all


def test_rope_scores_depend_on_relative_position_only(rng):
    """With RoPE, identical tokens give a score that depends only on end - start."""
    layer = GlobalPointer(heads=1, head_size=8, tril_mask=False)
    x = np.repeat(rng.normal(size=(1, 1, 6)), 6, axis=1).astype("float32")
    scores = to_numpy(layer(x))[0, 0]
    for offset in range(-5, 6):
        diagonal = np.diagonal(scores, offset)
        np.testing.assert_allclose(diagonal, diagonal[0], atol=1e-4)


def multilabel_crossentropy(y_true, y_pred):
    """Multi-label softmax cross-entropy (kexue.fm/archives/7359), written here for the test."""
    y_pred = (1 - 2 * y_true) * y_pred
    y_neg = y_pred - y_true * 1e12
    y_pos = y_pred - (1 - y_true) * 1e12
    zeros = ops.zeros_like(y_pred[..., :1])
    neg = ops.logsumexp(ops.concatenate([y_neg, zeros], -1), axis=-1)
    pos = ops.logsumexp(ops.concatenate([y_pos, zeros], -1), axis=-1)
    return neg + pos


def global_pointer_loss(y_true, y_pred):
    y_pred = ops.cast(y_pred, "float32")
    shape = ops.shape(y_pred)
    # (batch, heads, seq, seq) -> (batch * heads, seq * seq)
    y_true = ops.reshape(ops.cast(y_true, "float32"), (shape[0] * shape[1], -1))
    y_pred = ops.reshape(y_pred, (shape[0] * shape[1], -1))
    return ops.mean(multilabel_crossentropy(y_true, y_pred))


def span_data(rng, n=32, seq_len=6, vocab=10, heads=2):
    """Head 0 marks spans (i, i+1) starting at token 1; head 1 single-token spans of token 2."""
    ids = rng.integers(1, vocab, (n, seq_len))
    ids[: n // 2, -2:] = 0  # padding
    labels = np.zeros((n, heads, seq_len, seq_len), "float32")
    for b, i in zip(*np.nonzero(ids[:, :-1] == 1), strict=True):
        if ids[b, i + 1] > 0:
            labels[b, 0, i, i + 1] = 1
    for b, i in zip(*np.nonzero(ids == 2), strict=True):
        labels[b, 1, i, i] = 1
    return ids.astype("int32"), labels


def span_model(layer_cls, vocab=10, heads=2):
    ids = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(vocab, 16, mask_zero=True)(ids)
    h = keras.layers.Dense(16, activation="tanh")(h)
    return keras.Model(ids, layer_cls(heads=heads, head_size=8, name="pointer")(h))


@pytest.mark.parametrize("layer_cls", [GlobalPointer, EfficientGlobalPointer])
def test_trains_with_fit_and_roundtrips(rng, tmp_path, layer_cls):
    ids, labels = span_data(rng)
    model = span_model(layer_cls)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss=global_pointer_loss)
    history = model.fit(ids, labels, batch_size=16, epochs=10, verbose=0).history
    assert history["loss"][-1] < 0.5 * history["loss"][0]

    # The Embedding's Keras mask reached the layer: spans on padding are -infinity.
    scores = to_numpy(model(ids[:4]))
    assert np.all(scores[:, :, -2:, :] <= -1e11) and np.all(scores[:, :, :, -2:] <= -1e11)

    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path, compile=False)
    np.testing.assert_allclose(to_numpy(restored(ids[:4])), scores, rtol=0, atol=1e-5)
    layer = model.get_layer("pointer")
    assert restored.get_layer("pointer").get_config() == layer.get_config()


@pytest.mark.parametrize("layer_cls", [GlobalPointer, EfficientGlobalPointer])
def test_recompute_gives_the_same_training_step(rng, layer_cls):
    """Gradient checkpointing (bert4keras' @recompute_grad on call) changes no gradient."""
    ids, labels = span_data(rng, n=16)
    initial, trained = None, []
    for recompute in (False, True):
        model = span_model(layer_cls)
        initial = initial or model.get_weights()
        model.set_weights(initial)
        model.get_layer("pointer").recompute = recompute
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=global_pointer_loss)
        model.fit(ids, labels, batch_size=16, epochs=1, verbose=0)
        trained.append(model.get_weights())
    assert not np.allclose(trained[0][-1], initial[-1])  # the step moved the weights
    for plain, recomputed in zip(*trained, strict=True):
        np.testing.assert_allclose(recomputed, plain, rtol=0, atol=1e-6)


def test_mixed_bfloat16_fit_step(rng):
    ids, labels = span_data(rng, n=16)
    try:
        keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
        model = span_model(GlobalPointer)
        model.compile(optimizer="adam", loss=global_pointer_loss)
        history = model.fit(ids, labels, batch_size=16, epochs=1, verbose=0).history
        scores = model(ids)
        loss = global_pointer_loss(labels, scores)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert keras.backend.standardize_dtype(scores.dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    assert np.isfinite(history["loss"][0]) and np.isfinite(to_numpy(loss))
    # -infinity survives bfloat16 as a large finite negative, not inf/nan.
    scores = to_numpy(ops.cast(scores, "float32"))
    assert np.all(np.isfinite(scores)) and np.all(scores[:8, :, -2:, :] <= -1e11)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="head_size must be even with RoPE=True, got 5"):
        GlobalPointer(heads=2, head_size=5)
    GlobalPointer(heads=2, head_size=5, RoPE=False)  # fine without RoPE
    layer = EfficientGlobalPointer(heads=2, head_size=4, name="pointer")
    with pytest.raises(ValueError, match=r"pointer: expects hidden states .*got \(2, 5\)"):
        layer(np.zeros((2, 5), "float32"))
