"""adversarial_training (FGM) and gradient_penalty: one fit step against closed-form
numpy gradients, against the model's own gradients taken twice, and a learning run."""

import keras
import numpy as np
import pytest

from kerasformers.models import build_transformer_model
from kerasformers.training import adversarial_training, gradient_penalty
from tests.backend.test_recompute import gradient_function, loss_and_grads

V, D, B, L = 7, 4, 3, 5  # vocab, width, batch, length of the closed-form model
LR = 0.1

TINY_BERT = dict(
    vocab_size=30,
    hidden_size=8,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=16,
    hidden_act="gelu",
    max_position_embeddings=16,
    type_vocab_size=2,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def _embedding_linear_model():
    """ids -> Embedding -> Dense(1) per token; with MSE every gradient is closed-form."""
    ids = keras.Input((L,), dtype="int32")
    h = keras.layers.Embedding(V, D, name="Embedding-Token")(ids)
    return keras.Model(ids, keras.layers.Dense(1, name="head")(h))


def _closed_form(E, W, b, ids, y):
    """MSE loss and its gradients for pred = E[ids] @ W + b, float64."""
    pred = E[ids] @ W + b  # (B, L, 1)
    r = (pred - y)[..., 0]
    dpred = 2.0 * r / r.size  # d mean(r^2) / d pred
    g_w = np.einsum("bl,bld->d", dpred, E[ids])[:, None]
    g_b = np.array([dpred.sum()])
    g_e = np.zeros_like(E)
    np.add.at(g_e, ids, dpred[..., None] * W[:, 0])  # scatter-add per token id
    return float((r**2).mean()), g_e, g_w, g_b


def _setup(rng, install, epsilon):
    ids = rng.integers(0, V, (B, L)).astype("int32")
    ids[0, :2] = 3  # a repeated token: its embedding row gets summed gradients
    y = rng.normal(size=(B, L, 1)).astype("float32")
    model = _embedding_linear_model()
    E, W, b = (np.asarray(w, np.float64) for w in model.get_weights())
    model.compile(loss="mse", optimizer=keras.optimizers.SGD(LR))
    install(model, "Embedding-Token", epsilon=epsilon)
    history = model.fit(ids, y, batch_size=B, epochs=1, shuffle=False, verbose=0)
    return model, history.history["loss"][0], ids, y.astype(np.float64), E, W, b


def _check_step(model, logged, expected_loss, E, W, b, grads):
    # One SGD step from float32 weights: tolerance 1e-6 (float32 rounding).
    np.testing.assert_allclose(logged, expected_loss, rtol=1e-5)
    expected = [E - LR * grads[0], W - LR * grads[1], b - LR * grads[2]]
    for got, want in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_fgm_step_closed_form(rng):
    epsilon = 0.7
    model, logged, ids, y, E, W, b = _setup(rng, adversarial_training, epsilon)
    loss, g_e, g_w, g_b = _closed_form(E, W, b, ids, y)
    delta = epsilon * g_e / (np.sqrt((g_e**2).sum()) + 1e-8)
    _, g_e2, g_w2, g_b2 = _closed_form(E + delta, W, b, ids, y)
    # Sum of the clean and the perturbed gradients; the logged loss is the clean one.
    _check_step(model, logged, loss, E, W, b, (g_e + g_e2, g_w + g_w2, g_b + g_b2))


def test_gradient_penalty_step_closed_form(rng):
    epsilon = 0.7
    model, logged, ids, y, E, W, b = _setup(rng, gradient_penalty, epsilon)
    loss, g_e, g_w, g_b = _closed_form(E, W, b, ids, y)
    # d loss / d E[v] = (2/N) s_v w with s_v the residuals summed over the
    # positions of token v, so the penalty is P = 0.5 eps ||g_E||^2
    # = c ||w||^2 sum_v s_v^2 with c = 2 eps / N^2; and d s_v / d(w, b, E[v]) =
    # (sum of E[v] over its n_v positions = n_v E[v], n_v, n_v w).
    n = ids.size
    r = (E[ids] @ W + b - y)[..., 0]
    s = np.zeros(V)
    np.add.at(s, ids, r)
    counts = np.bincount(ids.ravel(), minlength=V)
    w = W[:, 0]
    c = 2.0 * epsilon / n**2
    penalty = c * (w @ w) * (s**2).sum()
    np.testing.assert_allclose(penalty, 0.5 * epsilon * (g_e**2).sum(), rtol=1e-12)
    p_w = c * (2.0 * w * (s**2).sum() + (w @ w) * 2.0 * (s * counts) @ E)
    p_b = c * (w @ w) * 2.0 * (s * counts).sum()
    p_e = c * (w @ w) * 2.0 * (s * counts)[:, None] * w[None, :]
    grads = (g_e + p_e, g_w + p_w[:, None], g_b + p_b)
    _check_step(model, logged, loss + penalty, E, W, b, grads)


def _bert_classifier(num_classes=2):
    bert = build_transformer_model(TINY_BERT, with_pool=True)
    out = keras.layers.Dense(num_classes, activation="softmax", name="head")(bert.output)
    return keras.Model(bert.inputs, out)


def _ce(y):
    y = keras.ops.convert_to_tensor(y)

    def loss_fn(probs):
        return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, probs))

    return loss_fn


def test_fgm_step_on_bert_equals_two_manual_gradients(rng):
    """fit with FGM == the model's own gradients taken at E and at E + delta, summed."""
    model = _bert_classifier()
    ids = rng.integers(1, 30, (4, 6)).astype("int32")
    x = [ids, np.zeros_like(ids)]
    y = np.array([0, 1, 1, 0])
    epsilon = 0.5
    table = model.get_layer("Embedding-Token").embeddings
    index = next(i for i, v in enumerate(model.trainable_variables) if v is table)
    start = [keras.ops.convert_to_numpy(v.value) for v in model.trainable_variables]

    gradients = gradient_function(model, x, _ce(y))
    loss, grads = gradients()
    g = grads[index].astype(np.float64)
    delta = epsilon * g / (np.sqrt((g**2).sum()) + 1e-8)
    table.assign(start[index] + delta.astype(np.float32))
    _, adv_grads = gradients()
    table.assign(start[index])
    expected = [w - 0.5 * (a + b) for w, a, b in zip(start, grads, adv_grads, strict=True)]

    model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(0.5))
    adversarial_training(model, epsilon=epsilon)
    history = model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_allclose(history.history["loss"][0], loss, rtol=1e-5)
    scale = max(float(np.abs(a + b).max()) for a, b in zip(grads, adv_grads, strict=True))
    for v, want in zip(model.trainable_variables, expected, strict=True):
        # float32 gradients of a 1-layer BERT: 1e-5 of the largest step.
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(v.value), want, rtol=1e-5, atol=1e-5 * 0.5 * scale
        )


def test_gradient_penalty_on_bert_logs_penalised_loss(rng):
    """Second derivatives through the whole encoder (fused attention included)."""
    model = _bert_classifier()
    ids = rng.integers(1, 30, (4, 6)).astype("int32")
    x = [ids, np.zeros_like(ids)]
    y = np.array([0, 1, 1, 0])
    epsilon = 2.0
    table = model.get_layer("Embedding-Token").embeddings
    index = next(i for i, v in enumerate(model.trainable_variables) if v is table)
    loss, grads = loss_and_grads(model, x, _ce(y))
    penalised = loss + 0.5 * epsilon * float((grads[index].astype(np.float64) ** 2).sum())
    before = [keras.ops.convert_to_numpy(v.value) for v in model.trainable_variables]
    model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(0.1))
    gradient_penalty(model, epsilon=epsilon)
    history = model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_allclose(history.history["loss"][0], penalised, rtol=1e-5)
    after = [keras.ops.convert_to_numpy(v.value) for v in model.trainable_variables]
    assert all(np.isfinite(a).all() for a in after)
    assert not np.allclose(after[index], before[index])


def test_classifier_learns_with_fgm(rng):
    # Label: does token 5 occur? A pattern a 1-layer BERT picks up in a few epochs.
    ids = rng.integers(6, 30, (32, 8)).astype("int32")
    y = (np.arange(32) % 2).astype("int32")
    ids[y == 1, rng.integers(1, 8, 16)] = 5
    x = [ids, np.zeros_like(ids)]
    keras.utils.set_random_seed(3)
    model = _bert_classifier()
    model.compile(
        loss="sparse_categorical_crossentropy",
        optimizer=keras.optimizers.Adam(1e-2),
        metrics=["sparse_categorical_accuracy"],
    )
    # The table is 30 x 8 with entries ~0.02 (norm ~0.3): a perturbation of norm 0.05.
    adversarial_training(model, "Embedding-Token", epsilon=0.05)
    history = model.fit(x, y, batch_size=32, epochs=25, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.25 * losses[0], losses
    assert history.history["sparse_categorical_accuracy"][-1] >= 0.9


def test_bad_arguments_raise_clear_errors():
    model = _bert_classifier()
    with pytest.raises(ValueError, match="no layer named 'Embedding-Tokens'") as err:
        adversarial_training(model, "Embedding-Tokens")
    for candidate in ("Embedding-Token", "Embedding-Segment", "Embedding-Position"):
        assert candidate in str(err.value)
    with pytest.raises(ValueError, match="'Embedding-Norm'.*no `embeddings` weight"):
        gradient_penalty(model, "Embedding-Norm")
    with pytest.raises(ValueError, match="epsilon must be a positive number"):
        adversarial_training(model, epsilon=0)
    with pytest.raises(TypeError, match="keras.Model"):
        adversarial_training("model")
    model.get_layer("Embedding-Token").trainable = False
    with pytest.raises(ValueError, match="not trainable"):
        adversarial_training(model)
