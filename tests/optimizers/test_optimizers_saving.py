""".keras save/load of models compiled with each kerasformers optimizer, optimizer state included.

Checks are exact: restored weights and optimizer variables equal the saved ones
bit for bit, and the restored optimizer has the same class and config.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from kerasformers import optimizers as O
from tests.optimizers.test_optimizers_training import (
    STACK,
    STACK_KWARGS,
    embedding_data,
    embedding_model,
    np_,
)

SAVED = [
    (O.Adam, {}),
    (O.AdaX, {}),
    (O.AdaFactor, {"learning_rate": None, "beta1": 0.5, "min_dim_size_to_factor": 8}),
    (O.AdamW, {"exclude_from_weight_decay": ["bias"]}),
    (O.LAMB, {"exclude_from_layer_adaptation": ["Norm"]}),
    (O.AdamLR, {"lr_schedule": {3: 1.0}}),
    (O.AdamGA, {"grad_accum_steps": 2}),
    (O.AdamLA, {"steps_per_slow_update": 2}),
    (O.AdamLO, {"include_in_lazy_optimization": ["Embedding-Token"]}),
    (O.AdamEMA, {}),
    (STACK, STACK_KWARGS),
]


@pytest.mark.parametrize("cls, kwargs", SAVED, ids=[c.__name__ for c, _ in SAVED])
def test_keras_save_load_keeps_optimizer_state(rng, tmp_path, cls, kwargs):
    ids, y = embedding_data(rng)
    model = embedding_model()
    model.compile(loss="mse", optimizer=cls(**kwargs))
    model.fit(ids, y, batch_size=4, epochs=2, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored.optimizer) is cls
    assert restored.optimizer.get_config() == model.optimizer.get_config()
    for a, b in zip(restored.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    saved_state = model.optimizer.variables
    assert len(restored.optimizer.variables) == len(saved_state) > 2
    for a, b in zip(restored.optimizer.variables, saved_state, strict=True):
        np.testing.assert_array_equal(np_(a), np_(b))


@pytest.mark.slow
def test_load_in_a_fresh_process(rng, tmp_path):
    """A model compiled with a class defined in kerasformers.optimizers loads after the import."""
    ids, y = embedding_data(rng)
    model = embedding_model()
    model.compile(loss="mse", optimizer=O.AdamW(0.01, weight_decay_rate=0.1))
    model.fit(ids, y, batch_size=4, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    code = (
        "import sys, keras, kerasformers.optimizers\n"
        "m = keras.saving.load_model(sys.argv[1])\n"
        "print(type(m.optimizer).__name__, m.optimizer.weight_decay_rate)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, path], capture_output=True, text=True, env=dict(os.environ)
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["AdamW", "0.1"]


READY_MADE = [
    "AdaFactor", "AdaX", "Adam", "AdamEMA", "AdamGA", "AdamLA", "AdamLO", "AdamLR", "AdamW",
    "AdamWG", "AdamWLR", "LAMB",
]  # fmt: skip


@pytest.mark.parametrize("name", READY_MADE)
def test_registered_names_do_not_depend_on_the_file_layout(name):
    cls = getattr(O, name)
    assert keras.saving.get_registered_name(cls) == f"kerasformers>{name}"
    assert keras.saving.get_registered_object(f"kerasformers>{name}") is cls
    assert cls.__module__ == "kerasformers.optimizers"


@pytest.mark.parametrize(
    "module, name",
    [("kerasformers._optimizers_base", "Adam"), ("kerasformers.optimizers", "AdamW")],
)
def test_configs_saved_before_the_package_layout_still_load(module, name):
    # What serialize_keras_object wrote when these classes lived in kerasformers/_optimizers_*.py.
    saved = {
        "module": module,
        "class_name": name,
        "config": {"name": "opt", "learning_rate": 0.01, "epsilon": 1e-6},
        "registered_name": f"kerasformers>{name}",
    }
    if name == "AdamW":
        saved["config"]["weight_decay_rate"] = 0.1
    optimizer = keras.saving.deserialize_keras_object(saved)
    assert type(optimizer) is getattr(O, name)
    assert np.isclose(float(np_(optimizer.learning_rate)), 0.01)
