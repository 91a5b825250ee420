"""Gradient checkpointing (recompute_grad): same gradients, dropout replayed, off in inference."""

import keras
import numpy as np
import pytest

from kerasformers.backend import recompute_enabled, recompute_grad
from kerasformers.layers import FeedForward, LayerNormalization, MultiHeadAttention
from kerasformers.models import build_transformer_model

CONFIG = dict(
    vocab_size=40,
    hidden_size=12,
    num_hidden_layers=1,
    num_attention_heads=3,
    intermediate_size=20,
    hidden_act="gelu",
    max_position_embeddings=16,
    type_vocab_size=2,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
)
BACKEND = keras.backend.backend()


def gradient_function(model, x, loss_fn, training=True):
    """A function () -> (loss, gradients of `loss_fn(model(x))` w.r.t.
    model.trainable_variables) at the model's current weights, through the
    backend's own autodiff (jit-compiled once on jax, as `fit` is)."""
    if BACKEND == "jax":
        import jax

        def f(trainable, non_trainable):
            out, _ = model.stateless_call(trainable, non_trainable, x, training=training)
            return loss_fn(out)

        compiled = jax.jit(jax.value_and_grad(f))

        def run():
            trainable = [v.value for v in model.trainable_variables]
            return compiled(trainable, [v.value for v in model.non_trainable_variables])

    elif BACKEND == "tensorflow":
        import tensorflow as tf

        def run():
            with tf.GradientTape() as tape:
                loss = loss_fn(model(x, training=training))
            grads = tape.gradient(loss, model.trainable_variables)
            return loss, [tf.convert_to_tensor(g) for g in grads]  # IndexedSlices -> dense

    else:
        import torch

        def run():
            loss = loss_fn(model(x, training=training))
            return loss, torch.autograd.grad(loss, [v.value for v in model.trainable_variables])

    def numpy_run():
        loss, grads = run()
        return float(keras.ops.convert_to_numpy(loss)), [
            keras.ops.convert_to_numpy(g) for g in grads
        ]

    return numpy_run


def loss_and_grads(model, x, loss_fn, training=True):
    return gradient_function(model, x, loss_fn, training)()


def _checkpointed_layers(model):
    return [layer for layer in model.layers if getattr(layer.call, "supports_recompute", False)]


def _set_recompute(model, flag):
    for layer in _checkpointed_layers(model):
        layer.recompute = flag


def _jaxpr_uses_checkpoint(model, x, training):
    import jax

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def f(trainable):
        out, _ = model.stateless_call(trainable, non_trainable, x, training=training)
        return keras.ops.sum(out)

    text = str(jax.make_jaxpr(jax.grad(f))(trainable))
    return "checkpoint" in text or "remat" in text


@pytest.fixture
def count_feedforward(monkeypatch):
    """Counts FeedForward sub-layer matmuls (eager backends): a recomputed call runs twice."""
    import kerasformers.layers.feedforward as ff

    calls = []
    original = ff.dense

    def counting(layer, x):
        calls.append(layer.name)
        return original(layer, x)

    monkeypatch.setattr(ff, "dense", counting)
    return calls


def _compare(grads_a, grads_b):
    # Same operations in the same order, replayed: equal up to float32 reassociation
    # inside XLA's fusions; tolerance 1e-5 relative to the largest gradient.
    scale = max(float(np.abs(g).max()) for g in grads_a)
    for a, b in zip(grads_a, grads_b, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * scale)


def _rng_resetter(model):
    """A function putting every random state back where it is now."""
    states = [v for v in model.variables if not v.trainable]  # dropout seed generators
    start = [keras.ops.convert_to_numpy(v.value) for v in states]

    def reset():
        for v, value in zip(states, start, strict=True):
            v.assign(value)
        if BACKEND == "torch":
            import torch

            torch.manual_seed(0)  # Keras' unseeded Dropout draws from torch's global RNG

    return reset


def test_gradients_with_recompute_equal_without(rng, count_feedforward):
    model = build_transformer_model(CONFIG, recompute=True)
    names = {layer.name for layer in _checkpointed_layers(model)}
    assert "Transformer-0-MultiHeadSelfAttention" in names
    assert "Transformer-0-FeedForward" in names
    assert "Transformer-0-FeedForward-Norm" in names
    ids = rng.integers(1, 40, (2, 7)).astype("int32")
    ids[1, 5:] = 0  # padding, so the attention mask is exercised too
    x = [ids, np.zeros_like(ids)]
    proj = keras.ops.convert_to_tensor(rng.normal(size=(2, 7, 12)).astype("float32"))

    def loss_fn(out):
        return keras.ops.sum(out * proj)

    # Dropout is on (0.1 everywhere): the recomputed forward must draw the same masks.
    reset_rng = _rng_resetter(model)
    _set_recompute(model, False)
    reset_rng()
    loss_plain, plain = loss_and_grads(model, x, loss_fn)
    plain_calls = len(count_feedforward)
    _set_recompute(model, True)
    reset_rng()
    loss_rc, recomputed = loss_and_grads(model, x, loss_fn)
    np.testing.assert_allclose(loss_rc, loss_plain, rtol=1e-6)
    _compare(plain, recomputed)

    if BACKEND == "jax":
        assert _jaxpr_uses_checkpoint(model, x, training=True)
    else:
        # 2 dense layers in the FeedForward; recomputation runs them once more.
        assert plain_calls == 2
        assert len(count_feedforward) - plain_calls == 2 * plain_calls


def test_fit_step_with_recompute_equals_without(rng):
    config = dict(CONFIG, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ids = rng.integers(1, 40, (4, 6)).astype("int32")
    x = [ids, np.zeros_like(ids)]
    y = rng.integers(0, 2, (4,))
    weights = {}
    for recompute in (False, True):
        keras.utils.set_random_seed(7)
        bert = build_transformer_model(config, with_pool=True, recompute=recompute)
        out = keras.layers.Dense(2, activation="softmax", name="head")(bert.output)
        model = keras.Model(bert.inputs, out)
        if weights:
            model.set_weights(weights[False][0])
        initial = model.get_weights()
        model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(0.5))
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
        weights[recompute] = (initial, model.get_weights())
    changed = [not np.allclose(a, b) for a, b in zip(*weights[False], strict=True)]
    assert sum(changed) > len(changed) // 2  # the step did move the weights
    _compare(weights[False][1], weights[True][1])


class NoisyDense(keras.layers.Layer):
    """A user layer with a *seeded* dropout inside a checkpointed call."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.proj = keras.layers.Dense(units)
        self.drop = keras.layers.Dropout(0.5, seed=3)

    def build(self, input_shape):
        self.proj.build(input_shape)

    @recompute_grad
    def call(self, inputs, training=None):
        return self.drop(keras.ops.tanh(self.proj(inputs)), training=training)


def test_seeded_dropout_is_replayed(rng):
    inputs = keras.Input((5,))
    model = keras.Model(inputs, NoisyDense(16, name="noisy")(inputs))
    layer = model.get_layer("noisy")
    x = rng.normal(size=(8, 5)).astype("float32")

    def loss_fn(out):
        return keras.ops.sum(out * out)

    seed_state = [v for v in layer.variables if not v.trainable]
    assert seed_state  # the seeded Dropout's generator state
    reset_rng = _rng_resetter(model)
    results = {}
    for flag in (False, True):
        reset_rng()
        layer.recompute = flag
        loss, grads = loss_and_grads(model, x, loss_fn)
        after = [keras.ops.convert_to_numpy(v.value) for v in seed_state]
        results[flag] = (loss, grads, after)
    np.testing.assert_allclose(results[True][0], results[False][0], rtol=1e-6)
    _compare(results[False][1], results[True][1])
    # The generator advanced as much as without recomputation (eager backends;
    # jax's stateless call leaves the variables alone).
    for a, b in zip(results[False][2], results[True][2], strict=True):
        np.testing.assert_array_equal(a, b)
    if BACKEND == "jax":
        layer.recompute = True
        assert _jaxpr_uses_checkpoint(model, x, training=True)


def test_no_recompute_in_inference(rng, count_feedforward):
    model = build_transformer_model(CONFIG, recompute=True)
    ids = rng.integers(1, 40, (2, 5)).astype("int32")
    x = [ids, np.zeros_like(ids)]
    plain = build_transformer_model(CONFIG, recompute=False)
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(
        model.predict(x, verbose=0), plain.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    if BACKEND == "jax":
        assert not _jaxpr_uses_checkpoint(model, x, training=False)
    else:
        # Gradients on, but training=False: no checkpoint, one run per dense.
        count_feedforward.clear()
        loss_and_grads(model, x, keras.ops.sum, training=False)
        assert len(count_feedforward) == 2


def test_recompute_switch_from_environment(monkeypatch):
    monkeypatch.setenv("RECOMPUTE", "1")
    assert recompute_enabled()
    model = build_transformer_model(CONFIG)  # read when the model is built
    assert all(layer.recompute for layer in _checkpointed_layers(model))
    monkeypatch.setenv("RECOMPUTE", "0")
    assert not recompute_enabled()
    assert all(layer.recompute for layer in _checkpointed_layers(model))  # unchanged
    model = build_transformer_model(CONFIG)
    assert not any(layer.recompute for layer in _checkpointed_layers(model))
    monkeypatch.setenv("RECOMPUTE", "1")
    model = build_transformer_model(CONFIG, recompute=False)  # the argument wins
    assert not any(layer.recompute for layer in _checkpointed_layers(model))
    monkeypatch.setenv("RECOMPUTE", "maybe")
    with pytest.raises(ValueError, match="RECOMPUTE must be"):
        build_transformer_model(CONFIG)


def test_checkpointed_layers_keep_their_contract(tmp_path, rng):
    """The decorator adds `training` to the call signature and nothing else:
    configs and a .keras round trip are unchanged."""
    x_in = keras.Input((4, 8))
    h = MultiHeadAttention(heads=2, head_size=4, name="mha")([x_in, x_in, x_in])
    h = LayerNormalization(name="norm")(h)
    out = FeedForward(units=6, name="ff")(h)
    model = keras.Model(x_in, out)
    for layer in ("mha", "norm", "ff"):
        assert model.get_layer(layer)._call_has_training_arg
    x = rng.normal(size=(2, 4, 8)).astype("float32")
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6
    )
