"""Update rules of kerasformers.optimizers against plain numpy implementations.

Every test feeds the same gradient sequence to a Keras optimizer (through
`optimizer.apply`) and to a float64 numpy version of the paper / bert4keras
formula written here, and compares the variables (and slots) after each step.
Tolerance: float32 against float64, rtol=2e-5 and atol=2e-6 (`TOL`) unless stated.
"""

import keras
import numpy as np
import pytest

from kerasformers import optimizers as O

TOL = dict(rtol=2e-5, atol=2e-6)


def np_(x):
    return keras.ops.convert_to_numpy(x).astype("float64")


def make_variables(values):
    """{path: array} -> Keras variables whose path is exactly `path` ("layer/name")."""
    variables = []
    for path, value in values.items():
        scope, name = path.split("/")
        with keras.name_scope(scope):
            variables.append(keras.Variable(value.astype("float32"), name=name))
        assert variables[-1].path == path
    return variables


def run(optimizer, values, grads):
    """Applies each step's gradients; returns the variables' values after every step."""
    variables = make_variables(values)
    history = []
    for step in grads:
        optimizer.apply([g.astype("float32") for g in step], variables)
        history.append([np_(v) for v in variables])
    return variables, history


def random_problem(rng, shapes, steps):
    """Initial values and per-step gradients, float64 arrays exactly representable in float32."""

    def normal(shape):
        return rng.normal(size=shape).astype("float32").astype("float64")

    values = {path: normal(shape) for path, shape in shapes.items()}
    grads = [[normal(shape) for shape in shapes.values()] for _ in range(steps)]
    return values, grads


def np_adam(x, g, m, v, t, lr, b1=0.9, b2=0.999, eps=1e-6, bias_correction=True):
    """bert4keras' Adam: epsilon added after the bias correction. Returns (x, m, v)."""
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g**2
    m_hat, v_hat = (m / (1 - b1**t), v / (1 - b2**t)) if bias_correction else (m, v)
    return x - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def np_adam_run(values, grads, lr, delta_fn=None, lr_fn=None):
    """Runs numpy Adam over `grads`; `delta_fn(path, x, delta, lr)` rewrites each step."""
    xs = [v.copy() for v in values.values()]
    ms = [np.zeros_like(x) for x in xs]
    vs = [np.zeros_like(x) for x in xs]
    history = []
    for t, step in enumerate(grads, start=1):
        lr_t = lr if lr_fn is None else lr_fn(t - 1)
        for i, (path, g) in enumerate(zip(values, step, strict=True)):
            new, ms[i], vs[i] = np_adam(xs[i], g, ms[i], vs[i], t, lr_t)
            delta = new - xs[i]
            if delta_fn is not None:
                delta = delta_fn(path, xs[i], delta, lr_t)
            xs[i] = xs[i] + delta
        history.append([x.copy() for x in xs])
    return history


def assert_history(got, expected, tol=TOL):
    for step, (a, b) in enumerate(zip(got, expected, strict=True)):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_allclose(x, y, err_msg=f"step {step}", **tol)


SHAPES = {"dense/kernel": (4, 3), "dense/bias": (3,), "Norm/gamma": (3,)}


# --------------------------------------------------------------------------- base optimizers
@pytest.mark.parametrize("bias_correction", [True, False])
def test_adam_is_bert4keras_adam(rng, bias_correction):
    values, grads = random_problem(rng, SHAPES, 4)
    opt = O.Adam(learning_rate=0.01, bias_correction=bias_correction)
    _, got = run(opt, values, grads)
    xs = [v.copy() for v in values.values()]
    ms, vs = [np.zeros_like(x) for x in xs], [np.zeros_like(x) for x in xs]
    for t, (step, row) in enumerate(zip(grads, got, strict=True), start=1):
        for i, g in enumerate(step):
            xs[i], ms[i], vs[i] = np_adam(
                xs[i], g, ms[i], vs[i], t, 0.01, eps=1e-6, bias_correction=bias_correction
            )
            np.testing.assert_allclose(row[i], xs[i], **TOL)


def test_adax_matches_paper(rng):
    values, grads = random_problem(rng, SHAPES, 4)
    lr, b1, b2, eps = 0.01, 0.9, 1e-4, 1e-6
    _, got = run(O.AdaX(learning_rate=lr), values, grads)
    xs = [v.copy() for v in values.values()]
    ms, vs = [np.zeros_like(x) for x in xs], [np.zeros_like(x) for x in xs]
    for t, (step, row) in enumerate(zip(grads, got, strict=True), start=1):
        for i, g in enumerate(step):
            ms[i] = b1 * ms[i] + (1 - b1) * g
            vs[i] = (1 + b2) * vs[i] + b2 * g**2
            v_hat = vs[i] / ((1 + b2) ** t - 1)
            xs[i] = xs[i] - lr * ms[i] / (np.sqrt(v_hat) + eps)
            np.testing.assert_allclose(row[i], xs[i], **TOL)


def np_adafactor(
    values,
    grads,
    factor_axes,
    lr=None,
    beta1=0.0,
    beta2=None,
    eps1=1e-30,
    eps2=1e-3,
    scale=True,
    clip=1.0,
):
    """AdaFactor as bert4keras writes it; factor_axes[path] = (axis of vr, axis of vc)."""
    rms = lambda a: np.sqrt(np.mean(a**2))  # noqa: E731
    xs = {p: v.copy() for p, v in values.items()}
    state = {p: {} for p in values}
    history = []
    for t, step in enumerate(grads, start=1):
        b2 = 1 - t**-0.8 if beta2 is None else beta2
        lr_t = min(1 / np.sqrt(t), 0.01) * (1 if scale else 0.05) if lr is None else lr
        for p, g in zip(values, step, strict=True):
            s, g2 = state[p], g**2 + eps1
            if p in factor_axes:
                ar, ac = factor_axes[p]
                s["vr"] = b2 * s.get("vr", 0) + (1 - b2) * g2.mean(axis=ar, keepdims=True)
                s["vc"] = b2 * s.get("vc", 0) + (1 - b2) * g2.mean(axis=ac, keepdims=True)
                v = s["vr"] * s["vc"] / s["vr"].mean(axis=ac, keepdims=True)
            else:
                s["v"] = v = b2 * s.get("v", 0) + (1 - b2) * g2
            u = g / np.sqrt(v + eps1)
            if clip is not None:
                u = u / max(1.0, rms(u) / clip)
            if beta1 > 0:
                s["m"] = u = beta1 * s.get("m", 0) + (1 - beta1) * u
            if scale:
                u = u * max(rms(xs[p]), eps2)
            xs[p] = xs[p] - lr_t * u
        history.append(list(xs.values()))
    return history


ADAFACTOR_SHAPES = {"emb/embeddings": (6, 5), "big/kernel": (4, 7, 5), "dense/bias": (5,)}
# Second-largest dim >= 4 gets factored: vr averages the largest axis, vc the second largest.
ADAFACTOR_AXES = {"emb/embeddings": (0, 1), "big/kernel": (1, 2)}


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(learning_rate=0.01),
        dict(learning_rate=0.01, beta1=0.9, beta2=0.99, clipping_threshold=None),
        dict(learning_rate=None),
        dict(learning_rate=None, multiply_by_parameter_scale=False, clipping_threshold=0.5),
    ],
)
def test_adafactor_matches_bert4keras(rng, kwargs):
    values, grads = random_problem(rng, ADAFACTOR_SHAPES, 4)
    opt = O.AdaFactor(min_dim_size_to_factor=4, **kwargs)
    variables, got = run(opt, values, grads)
    expected = np_adafactor(
        values,
        grads,
        ADAFACTOR_AXES,
        lr=kwargs["learning_rate"],
        beta1=kwargs.get("beta1", 0.0),
        beta2=kwargs.get("beta2"),
        scale=kwargs.get("multiply_by_parameter_scale", True),
        clip=kwargs.get("clipping_threshold", 1.0),
    )
    assert_history(got, expected)
    # Factored variables hold two small moments instead of a full one.
    slot_shapes = sorted(
        tuple(v.shape) for v in opt.variables if "big" in v.name and "velocity" in v.name
    )
    assert slot_shapes == [(4, 1, 5), (4, 7, 1)]
    lr = opt.get_config()["learning_rate"]
    assert lr is None if kwargs["learning_rate"] is None else lr == pytest.approx(0.01)


def test_adafactor_defaults_and_exclusion(rng):
    opt = O.AdaFactor()
    config = opt.get_config()
    assert config["learning_rate"] == pytest.approx(1e-3)  # stored as a float32 variable
    expected = dict(
        beta1=0.0,
        beta2=None,
        epsilon1=1e-30,
        epsilon2=1e-3,
        clipping_threshold=1.0,
        multiply_by_parameter_scale=True,
        min_dim_size_to_factor=128,
    )
    for key, value in expected.items():
        assert config[key] == value, key
    assert opt.factored_shape((100, 200)) is None  # second-largest dim < 128
    assert opt.factored_shape((128, 300)) == ((128, 1), 1, (1, 300), 0)
    # Excluded variables take unscaled steps.
    values, grads = random_problem(rng, {"Norm/gamma": (5,)}, 2)
    _, got = run(O.AdaFactor(0.01, exclude_from_parameter_scale=["Norm"]), values, grads)
    assert_history(got, np_adafactor(values, grads, {}, lr=0.01, scale=False))


# --------------------------------------------------------------------------- simple extensions
def test_weight_decay_with_exclusions(rng):
    values, grads = random_problem(rng, SHAPES, 3)
    opt = O.AdamW(0.01, weight_decay_rate=0.1, exclude_from_weight_decay=["bias", "Norm"])
    _, got = run(opt, values, grads)

    def decay(path, x, delta, lr):
        return delta if ("bias" in path or "Norm" in path) else delta - lr * 0.1 * x

    assert_history(got, np_adam_run(values, grads, 0.01, decay))


def test_weight_decay_on_a_keras_optimizer(rng):
    values, grads = random_problem(rng, {"dense/kernel": (3, 2)}, 3)
    SGDW = O.extend_with_weight_decay(keras.optimizers.SGD, "SGDW")
    _, got = run(SGDW(0.1, weight_decay_rate=0.5), values, grads)
    x = values["dense/kernel"].copy()
    for (g,), (row,) in zip(grads, got, strict=True):
        x = x - 0.1 * g - 0.1 * 0.5 * x
        np.testing.assert_allclose(row, x, **TOL)


def np_trust_ratio(x, delta, lr):
    x_norm, u_norm = np.linalg.norm(x), np.linalg.norm(delta / max(lr, 1e-7))
    return x_norm / u_norm if x_norm > 0 and u_norm > 0 else 1.0


def test_layer_adaptation_is_lamb(rng):
    values, grads = random_problem(rng, SHAPES, 3)
    values["dense/bias"][:] = 0.0  # zero norm: trust ratio 1
    opt = O.LAMB(0.01, weight_decay_rate=0.01, exclude_from_layer_adaptation=["Norm"])
    _, got = run(opt, values, grads)

    def lamb(path, x, delta, lr):
        delta = delta - lr * 0.01 * x  # decay first: LAMB normalises both together
        return delta if "Norm" in path else delta * np_trust_ratio(x, delta, lr)

    assert_history(got, np_adam_run(values, grads, 0.01, lamb))
    # Each adapted step is lr * ||x|| long.
    kernel0, kernel1 = values["dense/kernel"], got[0][0]
    assert np.linalg.norm(kernel1 - kernel0) == pytest.approx(0.01 * np.linalg.norm(kernel0), 1e-5)


def np_piecewise(t, schedule):
    """Independent reference: np.interp through (0, 0) and the schedule's points."""
    steps = sorted(schedule)
    if steps[0] != 0:
        return np.interp(t, [0] + steps, [0.0] + [schedule[s] for s in steps])
    return np.interp(t, steps, [schedule[s] for s in steps])


@pytest.mark.parametrize("schedule", [{3: 1.0, 6: 0.1}, {0: 0.5, 2: 1.0}, {4: 2.0}])
def test_piecewise_linear_lr(rng, schedule):
    values, grads = random_problem(rng, SHAPES, 8)
    opt = O.AdamLR(0.01, lr_schedule=schedule)
    lrs = []
    variables = make_variables(values)
    got = []
    for step in grads:
        lrs.append(float(np_(opt.learning_rate)))
        opt.apply([g.astype("float32") for g in step], variables)
        got.append([np_(v) for v in variables])
    expected_lrs = [0.01 * np_piecewise(t, schedule) for t in range(8)]
    np.testing.assert_allclose(lrs, expected_lrs, rtol=1e-6, atol=1e-9)
    expected = np_adam_run(values, grads, 0.01, lr_fn=lambda t: expected_lrs[t])
    assert_history(got, expected)
    # The schedule survives JSON, which turns its int keys into strings.
    config = {**opt.get_config(), "lr_schedule": {str(k): v for k, v in schedule.items()}}
    assert O.AdamLR.from_config(config).lr_schedule == schedule


def test_parameter_wise_lr(rng):
    values, grads = random_problem(rng, SHAPES, 3)
    AdamPLR = O.extend_with_parameter_wise_lr(O.Adam, "AdamPLRTest")
    opt = AdamPLR(0.01, paramwise_lr_schedule={"dense": 0.5, "bias": 3.0})
    _, got = run(opt, values, grads)
    multipliers = {"dense/kernel": 0.5, "dense/bias": 1.5, "Norm/gamma": 1.0}
    expected = np_adam_run(values, grads, 0.01, lambda p, x, d, lr: d * multipliers[p])
    assert_history(got, expected)


# --------------------------------------------------------------------------- stateful extensions
def test_lookahead(rng):
    values, grads = random_problem(rng, SHAPES, 7)
    opt = O.AdamLA(0.05, steps_per_slow_update=3, slow_step_size=0.4)
    _, got = run(opt, values, grads)
    slow = [v.copy() for v in values.values()]
    fast = np_adam_run(values, grads[:3], 0.05)[-1]  # Adam state continues across syncs
    xs = [v.copy() for v in values.values()]
    ms, vs = [np.zeros_like(x) for x in xs], [np.zeros_like(x) for x in xs]
    for t, (step, row) in enumerate(zip(grads, got, strict=True), start=1):
        for i, g in enumerate(step):
            xs[i], ms[i], vs[i] = np_adam(xs[i], g, ms[i], vs[i], t, 0.05)
        if t % 3 == 0:
            slow = [s + 0.4 * (x - s) for s, x in zip(slow, xs, strict=True)]
            xs = [s.copy() for s in slow]
        for a, b in zip(row, xs, strict=True):
            np.testing.assert_allclose(a, b, **TOL)
    assert not np.allclose(fast[0], got[2][0])  # the third step did pull back


def test_lazy_optimization_freezes_unused_rows_and_moments(rng):
    values, grads = random_problem(
        rng, {"Embedding-Token/embeddings": (6, 4), "dense/bias": (4,)}, 4
    )
    unused = [1, 4]
    for step in grads:
        step[0][unused] = 0.0  # tokens 1 and 4 never appear
    grads[1][0][2] = 0.0  # token 2 is missing from the second batch only
    opt = O.AdamLO(0.01, include_in_lazy_optimization=["Embedding-Token"])
    variables, got = run(opt, values, grads)
    x = values["Embedding-Token/embeddings"].copy()
    m, v = np.zeros_like(x), np.zeros_like(x)
    for t, (step, row) in enumerate(zip(grads, got, strict=True), start=1):
        g = step[0]
        new_x, new_m, new_v = np_adam(x, g, m, v, t, 0.01)
        used = np.any(g != 0, axis=-1, keepdims=True)
        x, m, v = (np.where(used, a, b) for a, b in ((new_x, x), (new_m, m), (new_v, v)))
        np.testing.assert_allclose(row[0], x, **TOL)
    emb = variables[0]
    np.testing.assert_array_equal(np_(emb)[unused], values["Embedding-Token/embeddings"][unused])
    moments = [s for s in opt.variables if s.path.endswith(("momentum", "velocity"))]
    emb_moments = [np_(s) for s in moments if "Embedding-Token" in s.name]
    assert len(emb_moments) == 2
    for moment in emb_moments:
        np.testing.assert_array_equal(moment[unused], 0.0)
    # Row 2 kept its moments through step 2 instead of decaying them like dense Adam.
    np.testing.assert_allclose(emb_moments[0], m, **TOL)
    # Variables not selected are plain Adam (even rows with zero gradient move).
    expected_bias = np_adam_run({"b/b": values["dense/bias"]}, [[s[1]] for s in grads], 0.01)
    np.testing.assert_allclose(got[-1][1], expected_bias[-1][0], **TOL)


def test_lazy_optimization_with_factored_adafactor(rng):
    values, grads = random_problem(rng, {"Embedding-Token/embeddings": (6, 5)}, 3)
    for step in grads:
        step[0][3] = 0.0
    LazyAF = O.extend_with_lazy_optimization(O.AdaFactor, "AdaFactorLazyTest")
    opt = LazyAF(0.01, min_dim_size_to_factor=4, include_in_lazy_optimization=["Embedding"])
    variables, _ = run(opt, values, grads)
    np.testing.assert_array_equal(np_(variables[0])[3], values["Embedding-Token/embeddings"][3])
    # The per-row statistic (vc, averaged over the columns) keeps its initial 0 on row 3.
    (vc,) = [v for v in opt.variables if v.name.endswith("velocity_c")]
    assert np_(vc)[3, 0] == 0.0 and np.all(np_(vc)[[0, 1, 2, 4, 5], 0] > 0)


def test_ema_average_apply_and_reset(rng):
    values, grads = random_problem(rng, SHAPES, 5)
    opt = O.AdamEMA(0.05, ema_momentum=0.8)
    variables, got = run(opt, values, grads)
    average = got[0]  # Keras' EMA starts from the first updated weights
    for row in got[1:]:
        average = [0.8 * a + 0.2 * x for a, x in zip(average, row, strict=True)]
    trained = [np_(v).copy() for v in variables]
    opt.apply_ema_weights()
    for v, a in zip(variables, average, strict=True):
        np.testing.assert_allclose(np_(v), a, **TOL)
    opt.reset_old_weights()
    for v, w in zip(variables, trained, strict=True):
        np.testing.assert_array_equal(np_(v), w)  # exact restore


# --------------------------------------------------------------------------- stacking
def test_pretraining_stack_matches_numpy(rng):
    """Weight decay + LAMB + piecewise LR + accumulation, with raw micro-batch gradients."""
    values, grads = random_problem(rng, SHAPES, 8)
    OPT = O.extend_with_weight_decay(O.Adam)
    OPT = O.extend_with_layer_adaptation(OPT)
    OPT = O.extend_with_piecewise_linear_lr(OPT)
    OPT = O.extend_with_gradient_accumulation(OPT, name="PretrainStackTest")
    opt = OPT(
        learning_rate=0.02,
        weight_decay_rate=0.05,
        exclude_from_weight_decay=["bias"],
        exclude_from_layer_adaptation=["Norm"],
        lr_schedule={2: 1.0, 8: 0.25},
        grad_accum_steps=2,
    )
    _, got = run(opt, values, grads)

    xs = {p: v.copy() for p, v in values.items()}
    ms = {p: np.zeros_like(v) for p, v in values.items()}
    vs = {p: np.zeros_like(v) for p, v in values.items()}
    expected = []
    for micro, step in enumerate(grads):
        if micro % 2 == 1:  # every second micro-batch: one update with the mean gradient
            t = micro // 2 + 1  # update count drives the bias correction
            lr = 0.02 * np_piecewise(micro, {2: 1.0, 8: 0.25})  # micro-batch count drives the lr
            for i, p in enumerate(values):
                g = (grads[micro - 1][i] + step[i]) / 2
                new, ms[p], vs[p] = np_adam(xs[p], g, ms[p], vs[p], t, lr)
                delta = new - xs[p]
                if "bias" not in p:
                    delta = delta - lr * 0.05 * xs[p]
                if "Norm" not in p:
                    delta = delta * np_trust_ratio(xs[p], delta, lr)
                xs[p] = xs[p] + delta
        expected.append([x.copy() for x in xs.values()])
    assert_history(got, expected)
    assert int(np_(opt.iterations)) == 4


# --------------------------------------------------------------------------- config and errors
ALL = [
    (O.Adam, {}),
    (O.AdaX, {}),
    (O.AdaFactor, {"learning_rate": None, "beta1": 0.9}),
    (O.AdamW, {"weight_decay_rate": 0.02, "exclude_from_weight_decay": ["bias"]}),
    (O.LAMB, {"exclude_from_layer_adaptation": ["Norm"]}),
    (O.AdamLR, {"lr_schedule": {10: 1.0, 20: 0.5}}),
    (O.AdamGA, {"grad_accum_steps": 4}),
    (O.AdamLA, {"steps_per_slow_update": 3, "slow_step_size": 0.3}),
    (O.AdamLO, {"include_in_lazy_optimization": ["Embedding"]}),
    (O.AdamEMA, {"ema_momentum": 0.99}),
    (O.AdamWLR, {"lr_schedule": {5: 1.0}}),
    (O.AdamWG, {"grad_accum_steps": 3}),
]


@pytest.mark.parametrize("cls, kwargs", ALL, ids=[c.__name__ for c, _ in ALL])
def test_get_config_round_trip(cls, kwargs):
    opt = cls(**kwargs)
    config = opt.get_config()
    for key, value in kwargs.items():
        assert config[key] == value
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(clone) is cls
    assert clone.get_config() == config
    assert keras.saving.get_registered_name(cls) == f"kerasformers>{cls.__name__}"


def test_factories_make_new_registered_classes():
    A = O.extend_with_lookahead(O.AdaX)
    B = O.extend_with_lookahead(O.AdaX)
    assert A is not B and issubclass(A, O.AdaX)
    assert A.__name__ == "AdaXWithLookahead"
    assert keras.saving.get_registered_object("kerasformers>AdaXWithLookahead") is B
    assert O.AdamLazy is O.AdamLO
    O.extend_with_lookahead(O.AdaX, "WarnTestOptimizer")
    with pytest.warns(UserWarning, match="already registered"):
        O.extend_with_lookahead(keras.optimizers.SGD, "WarnTestOptimizer")


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: O.AdamGA(grad_accum_steps=0), ValueError, "grad_accum_steps"),
        (lambda: O.AdamGA(grad_accum_steps=2.5), ValueError, "grad_accum_steps"),
        (lambda: O.AdamLR(lr_schedule=[(1000, 1.0)]), TypeError, "lr_schedule must be"),
        (lambda: O.AdamLR(lr_schedule={"warmup": 1.0}), ValueError, "lr_schedule"),
        (lambda: O.AdamLR(lr_schedule={-1: 1.0}), ValueError, ">= 0"),
        (lambda: O.extend_with_weight_decay("adam"), TypeError, "BaseOptimizer"),
        (lambda: O.extend_with_lookahead(dict), TypeError, "keras.optimizers.Optimizer"),
        (lambda: O.extend_with_weight_decay(O.Adam, name="not a name"), ValueError, "name"),
        (lambda: O.AdamW(weight_decay_rate=-0.1), ValueError, "weight_decay_rate"),
        (lambda: O.AdamW(exclude_from_weight_decay=[1]), TypeError, "exclude_from_weight_decay"),
        (lambda: O.LAMB(exclude_from_layer_adaptation=["("]), ValueError, "regular expression"),
        (lambda: O.AdamLA(steps_per_slow_update=0), ValueError, "steps_per_slow_update"),
        (lambda: O.AdamLA(slow_step_size=1.5), ValueError, "slow_step_size"),
        (lambda: O.AdamEMA(ema_momentum=2.0), ValueError, "ema_momentum"),
        (lambda: O.AdamEMA(use_ema=False), ValueError, "use_ema"),
        (
            lambda: O.AdamGA(grad_accum_steps=2, gradient_accumulation_steps=3),
            ValueError,
            "conflicts",
        ),
        (lambda: O.AdaFactor(beta1=1.0), ValueError, "beta1"),
        (lambda: O.AdaFactor(min_dim_size_to_factor="128"), TypeError, "min_dim_size_to_factor"),
        (lambda: O.AdaX(beta_2=0.0), ValueError, "beta_2"),
        (lambda: O.AdamLO(include_in_lazy_optimization=3), TypeError, "include_in_lazy"),
        (lambda: O.AdamEMA().apply_ema_weights(), ValueError, "no moving average"),
    ],
)
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_grad_accum_steps_one_turns_accumulation_off(rng):
    values, grads = random_problem(rng, SHAPES, 2)
    opt = O.AdamGA(0.01, grad_accum_steps=1)
    assert opt.gradient_accumulation_steps is None
    _, got = run(opt, values, grads)
    assert_history(got, np_adam_run(values, grads, 0.01))
