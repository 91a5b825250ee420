"""kerasformers.optimizers under model.fit: accumulation, EMA, lazy rows, mixed precision.

Numbers are checked against numpy (a linear model's gradients written by hand)
or against Keras training without the feature (one big batch); tolerances are
stated at each check.
"""

import keras
import numpy as np
import pytest

from kerasformers import optimizers as O


def np_(x):
    return keras.ops.convert_to_numpy(x).astype("float64")


def linear_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(3, name="dense")(inputs)
    return keras.Model(inputs, outputs)


def linear_data(rng, n):
    x = rng.normal(size=(n, 4)).astype("float32")
    y = rng.normal(size=(n, 3)).astype("float32")
    return x, y


def test_gradient_accumulation_equals_one_big_batch(rng):
    x, y = linear_data(rng, 24)
    small = linear_model()
    big = linear_model()
    big.set_weights(small.get_weights())
    start = [w.copy() for w in small.get_weights()]
    small.compile(loss="mse", optimizer=O.AdamGA(learning_rate=0.1, grad_accum_steps=3))
    big.compile(loss="mse", optimizer=O.Adam(learning_rate=0.1))
    # Two micro-batches in: nothing moves yet.
    small.train_on_batch(x[:4], y[:4])
    small.train_on_batch(x[4:8], y[4:8])
    for a, b in zip(small.get_weights(), start, strict=True):
        np.testing.assert_array_equal(a, b)
    small.train_on_batch(x[8:12], y[8:12])
    small.fit(x[12:], y[12:], batch_size=4, shuffle=False, verbose=0)
    big.fit(x, y, batch_size=12, shuffle=False, verbose=0)
    # Same two updates (Adam's step count included); float32 sums in another order.
    for a, b in zip(small.get_weights(), big.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert int(np_(small.optimizer.iterations)) == 2


def test_pretraining_stack_under_fit_matches_numpy(rng):
    """WD + LAMB + piecewise LR + accumulation inside the compiled train step."""
    OPT = O.extend_with_weight_decay(O.Adam)
    OPT = O.extend_with_layer_adaptation(OPT)
    OPT = O.extend_with_piecewise_linear_lr(OPT)
    OPT = O.extend_with_gradient_accumulation(OPT, name="PretrainFitTest")
    schedule = {2: 1.0, 8: 0.25}
    model = linear_model()
    W, b = (w.astype("float64") for w in model.get_weights())
    model.compile(
        loss="mse",
        optimizer=OPT(
            learning_rate=0.05,
            weight_decay_rate=0.1,
            exclude_from_weight_decay=["bias"],
            exclude_from_layer_adaptation=["bias"],
            lr_schedule=schedule,
            grad_accum_steps=2,
        ),
    )
    x, y = linear_data(rng, 32)
    model.fit(x, y, batch_size=4, shuffle=False, verbose=0)

    params = {"kernel": W, "bias": b}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    accum = {k: 0.0 for k in params}
    for micro in range(8):
        xb, yb = x[4 * micro : 4 * micro + 4], y[4 * micro : 4 * micro + 4]
        # d mean((xW + b - y)^2) over all 4 x 3 entries
        r = xb @ params["kernel"] + params["bias"] - yb
        grads = {"kernel": 2 / r.size * xb.T @ r, "bias": 2 / r.size * r.sum(0)}
        accum = {k: accum[k] + grads[k] for k in params}
        if micro % 2 == 0:
            continue
        t = micro // 2 + 1
        lr = 0.05 * np.interp(micro, [0, 2, 8], [0.0, 1.0, 0.25])
        for k in params:
            g = accum[k] / 2
            m[k] = 0.9 * m[k] + 0.1 * g
            v[k] = 0.999 * v[k] + 0.001 * g**2
            delta = -lr * (m[k] / (1 - 0.9**t)) / (np.sqrt(v[k] / (1 - 0.999**t)) + 1e-6)
            if k == "kernel":
                delta = delta - lr * 0.1 * params[k]
                x_norm, u_norm = np.linalg.norm(params[k]), np.linalg.norm(delta / lr)
                delta = delta * x_norm / u_norm
            params[k] = params[k] + delta
        accum = {k: 0.0 for k in params}
    got_W, got_b = model.get_weights()
    # float32 training against a float64 reference over 4 normalised updates.
    np.testing.assert_allclose(got_W, params["kernel"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_b, params["bias"], rtol=1e-4, atol=1e-5)


def embedding_model(seed=0):
    keras.utils.set_random_seed(seed)
    ids = keras.Input((5,), dtype="int32")
    h = keras.layers.Embedding(20, 8, name="Embedding-Token")(ids)
    h = keras.layers.LayerNormalization(name="Embedding-Norm")(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    out = keras.layers.Dense(2, name="dense")(h)
    return keras.Model(ids, out)


def embedding_data(rng, n=8):
    ids = rng.integers(0, 10, size=(n, 5)).astype("int32")  # ids 10..19 never used
    return ids, rng.normal(size=(n, 2)).astype("float32")


def test_lazy_optimization_under_fit(rng):
    model = embedding_model()
    start = model.get_layer("Embedding-Token").get_weights()[0]
    opt = O.AdamLO(0.05, include_in_lazy_optimization=["Embedding-Token"])
    model.compile(loss="mse", optimizer=opt)
    ids, y = embedding_data(rng)
    model.fit(ids, y, batch_size=4, epochs=2, verbose=0)
    table = model.get_layer("Embedding-Token").get_weights()[0]
    np.testing.assert_array_equal(table[10:], start[10:])
    assert np.all(np.abs(table[:10] - start[:10]).max(axis=1) > 0)
    for slot in opt.variables:
        if slot.name.startswith("Embedding-Token") and slot.name.endswith(("momentum", "velocity")):
            np.testing.assert_array_equal(np_(slot)[10:], 0.0)


def test_ema_under_fit_swaps_weights_exactly(rng):
    ids, y = embedding_data(rng)
    model = embedding_model()
    opt = O.AdamEMA(0.05, ema_momentum=0.9)
    model.compile(loss="mse", optimizer=opt)
    seen = []

    class Evaluate(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            trained = [w.copy() for w in self.model.get_weights()]
            opt.apply_ema_weights()
            averages = [np_(a) for a in opt._model_variables_moving_average]
            seen.append(
                all(
                    np.array_equal(w, a)
                    for w, a in zip(self.model.get_weights(), averages, strict=True)
                )
            )
            opt.reset_old_weights()
            seen.append(
                all(
                    np.array_equal(a, b)
                    for a, b in zip(self.model.get_weights(), trained, strict=True)
                )
            )

    model.fit(ids, y, batch_size=4, epochs=2, verbose=0, callbacks=[Evaluate()])
    assert seen == [True] * 4
    # fit() leaves the trained weights in place (no EMA overwrite at the end) ...
    averages = [np_(a) for a in opt._model_variables_moving_average]
    assert not all(np.allclose(w, a) for w, a in zip(model.get_weights(), averages, strict=True))
    # ... and the average is a real average of past weights, not the weights.
    opt.apply_ema_weights(bias_correction=False)
    for w, a in zip(model.get_weights(), averages, strict=True):
        np.testing.assert_array_equal(w, a)


STACK = O.extend_with_exponential_moving_average(
    O.extend_with_lookahead(
        O.extend_with_lazy_optimization(
            O.extend_with_parameter_wise_lr(
                O.extend_with_gradient_accumulation(
                    O.extend_with_piecewise_linear_lr(
                        O.extend_with_layer_adaptation(O.extend_with_weight_decay(O.Adam))
                    )
                )
            )
        )
    ),
    name="EverythingTest",
)
STACK_KWARGS = dict(
    learning_rate=0.01,
    weight_decay_rate=0.01,
    exclude_from_weight_decay=["Norm", "bias"],
    exclude_from_layer_adaptation=["Norm", "bias"],
    lr_schedule={2: 1.0, 10: 0.1},
    grad_accum_steps=2,
    paramwise_lr_schedule={"Embedding": 0.5},
    include_in_lazy_optimization=["Embedding-Token"],
    steps_per_slow_update=2,
    ema_momentum=0.9,
)


@pytest.fixture
def mixed_bfloat16():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    yield
    keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (STACK, STACK_KWARGS),
        (O.AdaFactor, {"beta1": 0.9, "min_dim_size_to_factor": 8}),
        (O.AdaX, {}),
        (O.LAMB, {}),
    ],
    ids=["stack", "AdaFactor", "AdaX", "LAMB"],
)
def test_trains_under_mixed_bfloat16(rng, mixed_bfloat16, cls, kwargs):
    model = embedding_model()
    assert model.get_layer("dense").compute_dtype == "bfloat16"
    start = [w.copy() for w in model.get_weights()]
    model.compile(loss="mse", optimizer=cls(**kwargs))
    ids, y = embedding_data(rng)
    history = model.fit(ids, y, batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for w in model.get_weights():
        assert w.dtype == np.float32 and np.all(np.isfinite(w))
    assert any(not np.array_equal(w, w0) for w, w0 in zip(model.get_weights(), start, strict=True))
    assert all(v.dtype in ("float32", "int32", "int64") for v in model.optimizer.variables)
