"""Writes families.json: pinned outputs of fixed-seed NEZHA and RoFormer-v2 models.

transformers 5.x has neither model, so besides the numpy re-implementations in
tests/models/test_families.py these frozen values guard against silent drift. Run from
the repository root on either backend:

    KERAS_BACKEND=jax python tests/data/pinned/make_pinned_families.py
"""

import json
import os

import numpy as np

CONFIG = dict(
    vocab_size=61,
    hidden_size=24,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=37,
    hidden_act="gelu",
    max_position_embeddings=32,
    type_vocab_size=2,
)
MODELS = {
    "nezha": dict(max_relative_position=3),
    "roformer_v2": dict(),
}


def fixed_model(name):
    """The model `name` with weights drawn from a fixed numpy seed, and its input."""
    from kerasformers.models import build_transformer_model

    model = build_transformer_model(CONFIG, model=name, **MODELS[name])
    rng = np.random.default_rng(2024)
    for variable in model.weights:
        value = rng.normal(0.0, 0.3, variable.shape)
        if variable.path.endswith("gamma"):
            value = 1.0 + 0.2 * value
        variable.assign(value.astype("float32"))
    ids = np.array([[2, 17, 33, 5, 60, 9, 11, 0], [7, 7, 41, 0, 0, 0, 0, 0]], "int32")
    segments = np.array([[0, 0, 0, 1, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0, 0, 0]], "int32")
    return model, ids, segments


def pinned_values(name):
    model, ids, segments = fixed_model(name)
    out = np.asarray(model.predict([ids, segments], verbose=0))
    return {"first_row": out[0, :4, :5].tolist(), "second_row": out[1, :3, -5:].tolist()}


if __name__ == "__main__":
    values = {name: pinned_values(name) for name in MODELS}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "families.json")
    with open(path, "w") as f:
        json.dump(values, f, indent=1)
    print("wrote", path)
