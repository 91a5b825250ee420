"""backend ops against plain numpy references: multilabel CE (dense and sparse),
piecewise_linear, and bert4keras-compatible signatures of the older helpers."""

import inspect
import math

import keras
import numpy as np
import pytest

from kerasformers import backend as K
from kerasformers.backend import (
    multilabel_categorical_crossentropy,
    piecewise_linear,
    sparse_multilabel_categorical_crossentropy,
)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def multilabel_ce_reference(y_true, y_pred):
    """log(1 + sum_neg exp(s)) + log(1 + sum_pos exp(-s)) per row, float64 (kexue.fm/7359)."""
    y_true = np.asarray(y_true, bool)
    s = np.asarray(y_pred, np.float64)
    neg = np.log1p(np.where(~y_true, np.exp(s), 0.0).sum(-1))
    pos = np.log1p(np.where(y_true, np.exp(-s), 0.0).sum(-1))
    return neg + pos


def _multi_hot(indices, num_classes):
    """(..., k) class indices -> (..., num_classes) 0/1, by explicit loops."""
    indices = np.asarray(indices)
    out = np.zeros(indices.shape[:-1] + (num_classes,), np.float32)
    for pos in np.ndindex(indices.shape[:-1]):
        for c in indices[pos]:
            out[pos + (c,)] = 1.0
    return out


def test_multilabel_ce_matches_formula(rng):
    y_pred = rng.normal(0, 3, (6, 9)).astype("float32")
    y_true = (rng.random((6, 9)) < 0.3).astype("float32")
    y_true[0] = 0.0  # no target at all
    y_true[1] = 1.0  # every class a target
    got = _np(multilabel_categorical_crossentropy(y_true, y_pred))
    assert got.shape == (6,)
    # float32 scores against the float64 formula: rtol 1e-5.
    np.testing.assert_allclose(got, multilabel_ce_reference(y_true, y_pred), rtol=1e-5)


def test_multilabel_ce_extra_axes_and_half_precision(rng):
    # (batch, heads, classes), as GlobalPointer flattens its (head, tail) pairs.
    y_pred = rng.normal(0, 2, (2, 3, 10)).astype("float32")
    y_true = (rng.random((2, 3, 10)) < 0.2).astype("float32")
    got = _np(multilabel_categorical_crossentropy(y_true, y_pred))
    np.testing.assert_allclose(got, multilabel_ce_reference(y_true, y_pred), rtol=1e-5)

    # bfloat16 scores are scored in float32 (1e12 is not representable in
    # float16): compare with the formula on the bf16-rounded scores, rtol 1e-5.
    half = keras.ops.cast(y_pred, "bfloat16")
    got = multilabel_categorical_crossentropy(y_true, half)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    rounded = _np(keras.ops.cast(half, "float32"))
    np.testing.assert_allclose(_np(got), multilabel_ce_reference(y_true, rounded), rtol=1e-5)


def test_sparse_equals_dense(rng):
    num_classes, k = 12, 3
    y_pred = rng.normal(0, 2, (2, 4, num_classes)).astype("float32")
    # k distinct target classes per row, in any order.
    idx = np.stack([rng.permutation(num_classes)[:k] for _ in range(8)]).reshape(2, 4, k)
    dense_targets = _multi_hot(idx, num_classes)
    got = _np(sparse_multilabel_categorical_crossentropy(idx, y_pred))
    expected = multilabel_ce_reference(dense_targets, y_pred)
    # The sparse form computes log(sum_all - sum_pos): a little cancellation, rtol 1e-4.
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    dense = _np(multilabel_categorical_crossentropy(dense_targets, y_pred))
    np.testing.assert_allclose(got, dense, rtol=1e-4)


def test_sparse_mask_zero_pads_with_class_zero(rng):
    num_classes = 8
    y_pred = rng.normal(0, 2, (4, num_classes)).astype("float32")
    # Rows with 3, 1, 0 and 2 targets among classes 1..7, right-padded with 0.
    targets = [[5, 2, 7], [3], [], [1, 6]]
    idx = np.array([t + [0] * (3 - len(t)) for t in targets], "int32")
    got = _np(sparse_multilabel_categorical_crossentropy(idx, y_pred, mask_zero=True))
    # Class 0 is padding: the dense loss over classes 1..7 only.
    dense_targets = np.zeros((4, num_classes - 1), np.float32)
    for row, t in enumerate(targets):
        for c in t:
            dense_targets[row, c - 1] = 1.0
    expected = multilabel_ce_reference(dense_targets, y_pred[:, 1:])
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_multilabel_bad_shapes():
    with pytest.raises(ValueError, match=r"same shape.*\(2, 3\).*\(2, 4\)"):
        multilabel_categorical_crossentropy(np.zeros((2, 3)), np.zeros((2, 4), "float32"))
    with pytest.raises(ValueError, match="same rank"):
        sparse_multilabel_categorical_crossentropy(np.zeros((2,), "int32"), np.zeros((2, 4)))


@pytest.mark.parametrize(
    "schedule, from_zero, keys, values",
    [
        # bert4keras' docstring example: 0 -> 1 over [0, 1000], -> 0.1 at 2000, then flat.
        ({1000: 1.0, 2000: 0.1}, True, [0, 1000, 2000], [0.0, 1.0, 0.1]),
        # Without from_zero the first value holds before the first key.
        ({300: 1.0, 100: 0.5, 600: 0.2}, False, [100, 300, 600], [0.5, 1.0, 0.2]),
        # A key at 0 is not doubled by from_zero.
        ({0: 0.3, 10: 1.0}, True, [0, 10], [0.3, 1.0]),
        ({50: 2.0}, True, [0, 50], [0.0, 2.0]),
        ({50: 2.0}, False, [50], [2.0]),
    ],
)
def test_piecewise_linear_matches_interp(schedule, from_zero, keys, values):
    t = np.array([-100, 0, 1, 10, 50, 99, 100, 150, 300, 450, 600, 999, 1000, 1500, 2000, 5000])
    got = _np(piecewise_linear(t, schedule, from_zero=from_zero))
    # np.interp is flat outside [keys[0], keys[-1]], as the schedule is.
    expected = np.interp(t, keys, values)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_piecewise_linear_scalar_and_bad_schedule():
    value = piecewise_linear(keras.ops.convert_to_tensor(1500, "int32"), {1000: 1.0, 2000: 0.1})
    assert tuple(value.shape) == ()
    np.testing.assert_allclose(_np(value), 0.55, rtol=1e-6)
    with pytest.raises(ValueError, match="non-empty"):
        piecewise_linear(3, {})
    with pytest.raises(ValueError, match="schedule"):
        piecewise_linear(3, [(1, 2)])


def test_bert4keras_signatures():
    """Ported scripts call these by bert4keras' argument names."""

    def names(fn):
        return list(inspect.signature(fn).parameters)

    assert names(K.gelu_erf) == ["x"]
    assert names(K.gelu_tanh) == ["x"]
    assert names(K.set_gelu) == ["version"]
    assert names(K.sequence_masking)[:4] == ["x", "mask", "value", "axis"]
    assert names(K.piecewise_linear) == ["t", "schedule", "from_zero"]
    assert names(K.multilabel_categorical_crossentropy) == ["y_true", "y_pred"]
    assert names(K.sparse_multilabel_categorical_crossentropy) == ["y_true", "y_pred", "mask_zero"]
    assert names(K.recompute_grad) == ["call"]


def test_gelu_versions_and_set_gelu():
    x = np.linspace(-4, 4, 33).astype("float32")
    erf = np.array([0.5 * v * (1 + math.erf(v / np.sqrt(2))) for v in x.astype(np.float64)])
    tanh = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(_np(K.gelu_erf(x)), erf, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(K.gelu_tanh(x)), tanh, rtol=1e-5, atol=1e-6)
    try:
        K.set_gelu("tanh")
        assert K.get_activation("gelu") is K.gelu_tanh
        K.set_gelu("erf")
        assert K.get_activation("gelu") is K.gelu_erf
    finally:
        K.set_gelu("erf")
    with pytest.raises(ValueError, match="'erf' or 'tanh'"):
        K.set_gelu("relu")
