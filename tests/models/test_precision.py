"""Dtype policies and training through the builder's fast paths."""

import keras
import numpy as np
import pytest

from kerasformers.models import build_transformer_model

CONFIG = dict(
    vocab_size=50,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=24,
    hidden_act="gelu",
    max_position_embeddings=16,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


@pytest.fixture
def policy():
    previous = keras.config.dtype_policy()
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy(previous)


def _data(rng):
    ids = rng.integers(1, 50, (4, 7)).astype("int32")
    ids[1, 5:] = 0  # some padding
    return ids, np.zeros_like(ids)


@pytest.mark.parametrize("name", ["mixed_bfloat16", "bfloat16", "mixed_float16"])
def test_half_precision_policies_match_float32(rng, policy, name):
    ids, seg = _data(rng)
    reference = build_transformer_model(CONFIG, with_mlm="linear")
    expected = reference.predict([ids, seg], verbose=0)
    policy(name)
    model = build_transformer_model(CONFIG, with_mlm="linear")
    model.set_weights(
        [
            w.astype(v.dtype)
            for w, v in zip(reference.get_weights(), model.get_weights(), strict=True)
        ]
    )
    got = keras.ops.convert_to_numpy(keras.ops.cast(model([ids, seg], training=False), "float32"))
    assert np.all(np.isfinite(got))
    keep = ids != 0
    scale = np.abs(expected[keep]).max()
    assert np.abs(got[keep] - expected[keep]).max() <= 0.05 * scale


def test_training_step_under_mixed_bfloat16(rng, policy):
    policy("mixed_bfloat16")
    ids, seg = _data(rng)
    model = build_transformer_model(CONFIG, with_pool=True)
    out = keras.layers.Dense(2, activation="softmax", dtype="float32")(model.output)
    classifier = keras.Model(model.inputs, out)
    classifier.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy"
    )
    labels = np.array([0, 1, 0, 1])
    kernel = classifier.get_layer("Transformer-0-MultiHeadSelfAttention").q_dense.kernel
    before = keras.ops.convert_to_numpy(kernel).copy()
    assert keras.backend.standardize_dtype(kernel.dtype) == "float32"
    history = classifier.fit([ids, seg], labels, epochs=15, batch_size=4, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert np.abs(keras.ops.convert_to_numpy(kernel) - before).max() > 0
