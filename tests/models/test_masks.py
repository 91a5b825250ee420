"""Attention masks (kerasformers.models.masks) and the `application=` routes.

Mask functions are checked entry by entry against numpy loops written from
their definitions; models are checked by what a mask promises: outputs at a
position never change when the tokens it must not see change (exact up to
float32 round-off, atol 1e-5), and do change when a visible token changes.
"""

import keras
import numpy as np
import pytest

from kerasformers.models import (
    BERT,
    atrous_mask,
    build_transformer_model,
    extend_with_language_model,
    extend_with_unified_language_model,
    lm_mask,
    local_mask,
    sparse_mask,
    unilm_mask,
)
from kerasformers.models.masks import AttentionBias, check_application

BIG = 1e12
CONFIG = dict(
    vocab_size=40,
    hidden_size=12,
    num_hidden_layers=2,
    num_attention_heads=3,
    intermediate_size=20,
    hidden_act="gelu",
    max_position_embeddings=24,
    type_vocab_size=2,
)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _reference(length, allowed):
    """(1, 1, n, n) bias from a predicate allowed(i, j), one entry at a time."""
    out = np.zeros((1, 1, length, length), "float32")
    for i in range(length):
        for j in range(length):
            out[0, 0, i, j] = 0.0 if allowed(i, j) else -BIG
    return out


# ---------------------------------------------------------------- mask functions
@pytest.mark.parametrize("length", [1, 6, 11])
def test_length_masks_match_numpy_loops(length):
    cases = [
        (lm_mask(length), lambda i, j: j <= i),
        (local_mask(length, 0), lambda i, j: i == j),
        (local_mask(length, 2), lambda i, j: abs(i - j) <= 2),
        (atrous_mask(length, 1), lambda i, j: True),
        (atrous_mask(length, 3), lambda i, j: abs(i - j) % 3 == 0),
        # kexue.fm's sparse pattern: multiples of the rate or within rate - 1
        (sparse_mask(length, 3), lambda i, j: abs(i - j) % 3 == 0 or abs(i - j) <= 2),
        (sparse_mask(length, 4, window=1), lambda i, j: abs(i - j) % 4 == 0 or abs(i - j) <= 1),
        # adding biases intersects the patterns (a causal window)
        (lm_mask(length) + local_mask(length, 2), lambda i, j: 0 <= i - j <= 2),
    ]
    for bias, allowed in cases:
        bias = _np(bias)
        assert bias.dtype == np.float32
        expected = _reference(length, allowed)
        np.testing.assert_array_equal(bias > -1.0, expected > -1.0)
        np.testing.assert_allclose(np.maximum(bias, -BIG), expected, rtol=1e-6)


def test_unilm_mask_matches_the_seq2seq_rule():
    """Source (segment 0) tokens see the source; target token i sees the source
    and target tokens j <= i (written from the rule, not from the cumsum)."""
    segments = np.array(
        [
            [0, 0, 0, 1, 1, 1, 1],
            [0, 1, 1, 1, 1, 1, 1],
            [0, 0, 0, 0, 0, 0, 0],  # all source: bidirectional
            [1, 1, 1, 1, 1, 1, 1],  # all target: causal
        ],
        "int32",
    )
    bias = _np(unilm_mask(segments))
    assert bias.shape == (4, 1, 7, 7)
    for row, s in enumerate(segments):
        expected = _reference(7, lambda i, j, s=s: s[j] == 0 or (s[i] == 1 and j <= i))
        np.testing.assert_allclose(np.maximum(bias[row : row + 1], -BIG), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: local_mask(5, -1), r"local_mask: window must be an integer >= 0, got -1"),
        (lambda: atrous_mask(5, 0), r"atrous_mask: rate must be an integer >= 1, got 0"),
        (lambda: sparse_mask(5, 1.5), r"sparse_mask: rate must be an integer >= 1, got 1.5"),
        (lambda: local_mask(5, True), r"window must be an integer >= 0, got True"),
        (
            lambda: check_application("seq2seq"),
            r"application 'seq2seq' is not available; supported: \['encoder', 'lm', 'unilm'\]",
        ),
        (lambda: AttentionBias("encoder"), r"the 'encoder' application has no attention bias"),
    ],
)
def test_bad_arguments_are_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_application_errors_in_the_builder():
    with pytest.raises(ValueError, match=r"application 'causal' is not available"):
        build_transformer_model(CONFIG, application="causal")
    with pytest.raises(ValueError, match=r"application='unilm' needs segment ids"):
        build_transformer_model(CONFIG, application="unilm", segment_vocab_size=0)
    # bert4keras spelling is case-insensitive
    model = build_transformer_model(CONFIG, application="LM")
    assert "Attention-LM-Mask" in [layer.name for layer in model.layers]


# ---------------------------------------------------------------- models
def _build(rng, **kwargs):
    """A tiny model with large random weights, so every dependency shows."""
    model = build_transformer_model(CONFIG, **kwargs)
    for variable in model.weights:
        value = rng.normal(0.0, 0.5, variable.shape)
        if variable.path.endswith("gamma"):
            value = 1.0 + 0.4 * value
        variable.assign(value.astype("float32"))
    return model


def _ids(rng, batch=2, length=10):
    return rng.integers(1, CONFIG["vocab_size"], (batch, length)).astype("int32")


def _changed_after(ids, t, rng):
    """Copy of ids with every token after position t replaced (and different)."""
    out = ids.copy()
    out[:, t + 1 :] = (ids[:, t + 1 :] + rng.integers(1, 30, ids[:, t + 1 :].shape)) % 39 + 1
    return out


FAMILIES = ["bert", "roberta", "albert", "nezha", "electra", "roformer", "roformer_v2"]


@pytest.mark.parametrize("family", FAMILIES)
def test_lm_output_at_t_ignores_later_tokens(family, rng):
    model = _build(rng, model=family, application="lm")
    # bert4keras: application="lm" turns the MLM head on (probabilities).
    assert model.output.shape[-1] == CONFIG["vocab_size"]
    assert "Attention-LM-Mask" in [layer.name for layer in model.layers]
    ids = _ids(rng)
    seg = np.zeros_like(ids)
    base = model.predict([ids, seg], verbose=0)
    np.testing.assert_allclose(base.sum(-1), 1.0, atol=1e-5)
    for t in (0, 4, 8):
        out = model.predict([_changed_after(ids, t, rng), seg], verbose=0)
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-5)
        assert np.abs(out[:, t + 1 :] - base[:, t + 1 :]).max() > 1e-4


def test_unilm_source_ignores_target_and_target_is_causal(rng):
    model = _build(rng, application="unilm", with_mlm="linear")
    assert "Attention-UniLM-Mask" in [layer.name for layer in model.layers]
    ids = _ids(rng, length=9)
    seg = np.array([[0] * 4 + [1] * 5] * 2, "int32")
    base = model.predict([ids, seg], verbose=0)
    for t in (3, 5, 7):  # 3: last source token; 5, 7: inside the target
        out = model.predict([_changed_after(ids, t, rng), seg], verbose=0)
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-5)
        assert np.abs(out[:, t + 1 :] - base[:, t + 1 :]).max() > 1e-4
    # The source is bidirectional: its first token sees the last source token.
    changed = ids.copy()
    changed[:, 3] = ids[:, 3] % 39 + 1
    assert np.abs(model.predict([changed, seg], verbose=0)[:, 0] - base[:, 0]).max() > 1e-4


@pytest.mark.parametrize("application", ["lm", "unilm"])
def test_masks_combine_with_padding(application, rng):
    model = _build(rng, application=application)
    ids = _ids(rng, batch=1, length=6)
    seg = np.array([[0, 0, 0, 1, 1, 1]], "int32")
    short = model.predict([ids, seg], verbose=0)
    padded_ids = np.concatenate([ids, np.zeros((1, 4), "int32")], axis=1)
    padded_seg = np.concatenate([seg, np.zeros((1, 4), "int32")], axis=1)
    padded = model.predict([padded_ids, padded_seg], verbose=0)
    np.testing.assert_allclose(padded[:, :6], short, atol=1e-5)


@pytest.fixture
def policy():
    previous = keras.config.dtype_policy()
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("name", ["mixed_float16", "bfloat16"])
def test_masks_under_half_precision(name, policy, rng):
    """-1e12 would overflow float16: the attention layer clips, so no inf/NaN, and
    the LM mask still hides later tokens (left padding gives fully masked rows)."""
    ids = _ids(rng, batch=3, length=8)
    ids[2, :3] = 0  # left padding: rows 0..2 of that sequence see no real key
    seg = np.zeros_like(ids)
    reference = build_transformer_model(CONFIG, application="lm", with_mlm="linear")
    expected = reference.predict([ids, seg], verbose=0)
    policy(name)
    model = build_transformer_model(CONFIG, application="lm", with_mlm="linear")
    model.set_weights(
        [
            w.astype(v.dtype)
            for w, v in zip(reference.get_weights(), model.get_weights(), strict=True)
        ]
    )

    def run(x):
        if "float16" in name:
            # Eager: XLA on CPU has no float16 dot_general with float32
            # accumulation, which jit-compiled predict asks for on jax.
            out = model([x, seg], training=False)
            return keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))
        return np.asarray(model.predict([x, seg], verbose=0), "float32")

    got = run(ids)
    assert np.all(np.isfinite(got))
    keep = ids != 0
    scale = np.abs(expected[keep]).max()
    assert np.abs(got[keep] - expected[keep]).max() <= 0.05 * scale
    # Real tokens up to t=4 ignore later ones. (A padding query sees no real key:
    # its clipped row is uniform, so its meaningless output is not compared.)
    out = run(_changed_after(ids, 4, rng))
    np.testing.assert_allclose(out[:, :5][keep[:, :5]], got[:, :5][keep[:, :5]], atol=1e-3 * scale)


# ---------------------------------------------------------------- callable route
@keras.saving.register_keras_serializable(package="kerasformers_tests")
def causal_window_2(inputs):
    n = keras.ops.shape(inputs[0])[1]
    return lm_mask(n) + local_mask(n, 2)


@keras.saving.register_keras_serializable(package="kerasformers_tests")
def atrous_3(inputs):
    return atrous_mask(keras.ops.shape(inputs[0])[1], 3)


@keras.saving.register_keras_serializable(package="kerasformers_tests")
def sparse_3(inputs):
    return sparse_mask(keras.ops.shape(inputs[0])[1], 3)


@pytest.mark.parametrize(
    "fn, allowed",
    [
        (causal_window_2, lambda i, j: 0 <= i - j <= 2),
        (atrous_3, lambda i, j: abs(i - j) % 3 == 0),
        (sparse_3, lambda i, j: abs(i - j) % 3 == 0 or abs(i - j) <= 2),
    ],
)
def test_callable_application_restricts_what_each_token_sees(fn, allowed, rng):
    # One block: everything but attention is position-wise, so output i depends
    # on token j exactly when the mask lets i see j.
    model = _build(rng, application=fn, num_hidden_layers=1)
    assert "Attention-Mask" in [layer.name for layer in model.layers]
    ids = _ids(rng, batch=1, length=9)
    seg = np.zeros_like(ids)
    base = model.predict([ids, seg], verbose=0)[0]
    for j in range(9):
        changed = ids.copy()
        changed[0, j] = ids[0, j] % 39 + 1
        moved = np.abs(model.predict([changed, seg], verbose=0)[0] - base).max(-1)
        for i in range(9):
            if allowed(i, j):
                assert moved[i] > 1e-5, (i, j)
            else:
                assert moved[i] <= 1e-5, (i, j)


def test_callable_application_survives_keras_save(rng, tmp_path):
    model = build_transformer_model(CONFIG, application=causal_window_2)
    ids = _ids(rng)
    seg = np.zeros_like(ids)
    path = str(tmp_path / "window.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.get_layer("Attention-Mask").application is causal_window_2
    np.testing.assert_allclose(
        restored.predict([ids, seg], verbose=0), model.predict([ids, seg], verbose=0), atol=1e-6
    )
    # The named applications round-trip too.
    lm = build_transformer_model(CONFIG, application="unilm")
    lm.save(str(tmp_path / "unilm.keras"))
    again = keras.saving.load_model(str(tmp_path / "unilm.keras"))
    assert again.get_layer("Attention-UniLM-Mask").application == "unilm"

    unregistered = build_transformer_model(
        CONFIG, application=lambda inputs: lm_mask(keras.ops.shape(inputs[0])[1])
    )
    with pytest.raises(ValueError, match="is not registered, so the model cannot be saved"):
        unregistered.save(str(tmp_path / "lambda.keras"))


def test_bert4keras_extend_factories(rng):
    builder = build_transformer_model(
        CONFIG, model=extend_with_language_model(BERT), return_keras_model=False
    )
    assert builder.application == "lm" and builder.with_mlm is True
    builder = build_transformer_model(
        CONFIG,
        model=extend_with_unified_language_model(BERT),
        with_mlm="linear",
        return_keras_model=False,
    )
    assert builder.application == "unilm" and builder.with_mlm == "linear"
    assert "Attention-UniLM-Mask" in [layer.name for layer in builder.model.layers]
