"""The Loss layer under fit, mask-aware pooling and Concatenate1D, against numpy."""

import keras
import numpy as np
import pytest
from keras import ops

from kerasformers.layers import (
    Concatenate1D,
    GlobalAveragePooling1D,
    GlobalMaxPooling1D,
    Loss,
)


def to_numpy(x):
    return ops.convert_to_numpy(x)


@keras.saving.register_keras_serializable(package="kerasformers_tests")
class MaskedCrossEntropy(Loss):
    """Token cross-entropy averaged over the real tokens of inputs [labels, probs]."""

    def compute_loss(self, inputs, mask=None):
        y_true, y_pred = inputs
        loss = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
        real = ops.cast(mask[1], loss.dtype)
        return ops.sum(loss * real) / ops.sum(real)


@keras.saving.register_keras_serializable(package="kerasformers_tests")
class SquaredSum(Loss):
    """A per-sample (non-scalar) loss: the layer averages it."""

    def compute_loss(self, inputs, mask=None):
        return ops.sum(ops.square(inputs[0]), axis=-1)


def token_data(rng, n=32, seq_len=5, vocab=9):
    lengths = rng.integers(1, seq_len + 1, n)
    ids = rng.integers(1, vocab, (n, seq_len)) * (np.arange(seq_len) < lengths[:, None])
    return ids.astype("int32"), (ids % 3).astype("int32")


def token_model(vocab=9):
    ids_in = keras.Input((None,), dtype="int32", name="ids")
    labels_in = keras.Input((None,), dtype="int32", name="labels")
    h = keras.layers.Embedding(vocab, 8, mask_zero=True)(ids_in)
    probs = keras.layers.Dense(3, activation="softmax", name="probs")(h)
    out = MaskedCrossEntropy(output_axis=1, name="loss")([labels_in, probs])
    return keras.Model([ids_in, labels_in], out)


def np_masked_ce(probs, labels, real):
    picked = np.take_along_axis(probs, labels[..., None], -1)[..., 0]
    return -np.log(picked)[real].mean()


def test_loss_layer_trains_with_fit_and_roundtrips(rng, tmp_path):
    ids, labels = token_data(rng)
    model = token_model()
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    # Before training: evaluate() == the masked cross-entropy computed in numpy.
    probs = to_numpy(model([ids, labels]))
    expected = np_masked_ce(probs, labels, ids > 0)
    loss = model.evaluate([ids, labels], batch_size=len(ids), verbose=0)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)

    history = model.fit([ids, labels], batch_size=16, epochs=5, verbose=0).history
    assert history["loss"][-1] < 0.7 * history["loss"][0]

    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path, compile=False)
    assert restored.get_layer("loss").get_config() == model.get_layer("loss").get_config()
    np.testing.assert_allclose(
        to_numpy(restored([ids, labels])), to_numpy(model([ids, labels])), atol=1e-6
    )
    restored.compile(optimizer="adam")
    trained = model.evaluate([ids, labels], batch_size=len(ids), verbose=0)
    reloaded = restored.evaluate([ids, labels], batch_size=len(ids), verbose=0)
    np.testing.assert_allclose(reloaded, trained, rtol=1e-5)


def test_loss_layer_outputs_and_masks(rng):
    a = rng.normal(size=(2, 3)).astype("float32")
    b = rng.normal(size=(2, 4)).astype("float32")
    layer = SquaredSum()
    out = layer([a, b])
    assert isinstance(out, list) and len(out) == 2
    np.testing.assert_array_equal(to_numpy(out[1]), b)
    # A (batch,) loss is averaged into one scalar.
    (added,) = layer.losses
    assert tuple(added.shape) == ()
    np.testing.assert_allclose(to_numpy(added), np.mean(np.sum(a**2, -1)), rtol=1e-6)
    picked = SquaredSum(output_axis=[1, 0])([a, b])
    np.testing.assert_array_equal(to_numpy(picked[0]), b)
    np.testing.assert_array_equal(to_numpy(picked[1]), a)
    mask = np.array([[True, False, True], [True, True, True]])
    assert SquaredSum(output_axis=1).compute_mask([a, b], [mask, None]) is None
    picked_mask = SquaredSum(output_axis=0).compute_mask([a, b], [mask, None])
    np.testing.assert_array_equal(to_numpy(picked_mask), mask)


def test_loss_layer_bad_use_is_a_clear_error(rng):
    x = rng.normal(size=(2, 3)).astype("float32")
    with pytest.raises(NotImplementedError, match=r"Loss must implement compute_loss"):
        Loss()(x)
    with pytest.raises(ValueError, match="output_axis must be None, an int or a list of ints"):
        Loss(output_axis="last")
    with pytest.raises(ValueError, match="output_axis 2 is out of range for 2 inputs"):
        SquaredSum(output_axis=2)([x, x])


def np_pool(x, mask, how):
    out = []
    for row, m in zip(x, mask, strict=True):
        real = row[m > 0]
        out.append(np.zeros(x.shape[-1]) if len(real) == 0 else getattr(real, how)(0))
    return np.array(out)


@pytest.mark.parametrize(
    "how, layer_cls", [("mean", GlobalAveragePooling1D), ("max", GlobalMaxPooling1D)]
)
def test_pooling_respects_keras_and_explicit_masks(rng, tmp_path, how, layer_cls):
    ids = np.array([[3, 1, 4, 0, 0], [5, 9, 2, 6, 5], [0, 0, 0, 0, 0]], "int32")
    ids_in = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(10, 4, mask_zero=True)(ids_in)
    h = keras.layers.Dense(4, name="hidden")(h)
    from_keras_mask = layer_cls()(h)
    # Explicit mask, as a model without Keras masks would pass it.
    explicit = layer_cls(keepdims=True)(h, mask=ops.not_equal(ids_in, 0))
    model = keras.Model(ids_in, [from_keras_mask, explicit])
    hidden = to_numpy(keras.Model(ids_in, h)(ids))
    expected = np_pool(hidden, ids, how)  # the all-padding row pools to zeros
    got, got_keepdims = (to_numpy(t) for t in model(ids))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got_keepdims[:, 0], expected, rtol=0, atol=1e-6)

    # channels_first: (batch, features, seq)
    layer = layer_cls(data_format="channels_first")
    got = to_numpy(layer(np.transpose(hidden, (0, 2, 1)), mask=ids > 0))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)

    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    for a, b in zip(restored(ids), model(ids), strict=True):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=1e-6)


def test_concatenate_1d_merges_masks(rng, tmp_path):
    ids_in = keras.Input((3,), dtype="int32")
    extra_in = keras.Input((4, 2))
    embedding = keras.layers.Embedding(10, 2, mask_zero=True)
    masked = embedding(ids_in)  # has a Keras mask
    joined = Concatenate1D()([masked, extra_in])  # extra_in has none: all real
    assert tuple(joined.shape) == (None, 7, 2)
    model = keras.Model([ids_in, extra_in], [joined, GlobalAveragePooling1D()(joined)])

    ids = np.array([[1, 2, 0], [0, 0, 0]], "int32")
    extra = rng.normal(size=(2, 4, 2)).astype("float32")
    seq, pooled = (to_numpy(t) for t in model([ids, extra]))
    emb = to_numpy(embedding.embeddings)[ids]
    np.testing.assert_allclose(seq, np.concatenate([emb, extra], 1), atol=1e-6)
    mask = np.concatenate([ids > 0, np.ones((2, 4), bool)], 1)
    np.testing.assert_allclose(pooled, np_pool(seq, mask, "mean"), atol=1e-6)

    layer = Concatenate1D()
    merged = layer.compute_mask([emb, extra], [ids > 0, None])
    np.testing.assert_array_equal(to_numpy(merged), mask)
    assert layer.compute_mask([emb, extra], [None, None]) is None

    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(to_numpy(restored([ids, extra])[1]), pooled, atol=1e-6)

    with pytest.raises(ValueError, match="must share every axis but the sequence axis"):
        Concatenate1D()([np.zeros((1, 2, 3), "float32"), np.zeros((1, 2, 4), "float32")])
    with pytest.raises(ValueError, match=r"mask must have shape \(batch, seq_len\)"):
        GlobalMaxPooling1D()(np.zeros((1, 2, 3), "float32"), mask=np.ones((1, 2, 3)))
