"""Every family: checkpoint round trips in both formats, keep_tokens, ALBERT
unsharing, and the errors each family raises for options it cannot honour."""

import keras
import numpy as np
import pytest

from kerasformers.models import build_transformer_model

CONFIG = dict(
    vocab_size=53,
    hidden_size=24,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=31,
    hidden_act="gelu",
    max_position_embeddings=20,
    type_vocab_size=2,
)
# Families whose checkpoints (both conventions) hold an embedding -> hidden projection.
FACTORISED = {"albert", "albert_unshared", "electra", "roformer", "roformer_v2"}
# family -> the heads its checkpoints carry
HEADS = {
    "bert": dict(with_pool=True, with_nsp=True, with_mlm=True),
    "roberta": dict(with_mlm=True),
    "albert": dict(with_pool=True, with_nsp=True, with_mlm=True),
    "albert_unshared": dict(with_pool=True, with_nsp=True, with_mlm=True),
    "nezha": dict(with_pool=True, with_nsp=True, with_mlm=True),
    "electra": dict(with_discriminator=True, with_mlm=True),
    "roformer": dict(with_pool=True, with_mlm=True),
    "roformer_v2": dict(with_mlm=True),
}


def _inputs(rng, length=9):
    ids = rng.integers(1, CONFIG["vocab_size"], (2, length)).astype("int32")
    ids[1, 6:] = 0
    return [ids, (np.arange(length)[None] >= 4).astype("int32").repeat(2, 0)]


def _config(family):
    return dict(CONFIG, embedding_size=14) if family in FACTORISED else CONFIG


def _random_builder(family, **kwargs):
    builder = build_transformer_model(
        _config(family), model=family, return_keras_model=False, **HEADS[family], **kwargs
    )
    rng = np.random.default_rng(5)
    for variable in builder.model.weights:
        variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32"))
    if family == "albert_unshared":  # as loaded from ALBERT: every block a copy of one
        for suffix in builder.block_mapping():
            first = builder.model.get_layer(f"Transformer-0-{suffix}").get_weights()
            for index in range(1, CONFIG["num_hidden_layers"]):
                builder.model.get_layer(f"Transformer-{index}-{suffix}").set_weights(first)
    return builder


def _outputs(model, inputs):
    # A direct call: no per-model compilation, which predict would pay for each model.
    out = model(inputs, training=False)
    return [keras.ops.convert_to_numpy(o) for o in (out if isinstance(out, list) else [out])]


@pytest.mark.parametrize("fmt", ["tf", "safetensors"])
@pytest.mark.parametrize("family", sorted(HEADS))
def test_save_and_load_round_trip(family, fmt, tmp_path, rng):
    if family == "roberta" and fmt == "tf":
        pytest.skip("RoBERTa's Google names are BERT's (covered by family 'bert')")
    builder = _random_builder(family)
    path = str(tmp_path / ("model.safetensors" if fmt == "safetensors" else "model.ckpt"))
    builder.save_weights_as_checkpoint(path)
    again = build_transformer_model(_config(family), path, model=family, **HEADS[family])
    inputs = _inputs(rng)
    for a, b in zip(_outputs(builder.model, inputs), _outputs(again, inputs), strict=True):
        np.testing.assert_array_equal(a, b)
    for original, loaded in zip(builder.model.weights, again.weights, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(original), keras.ops.convert_to_numpy(loaded)
        )


@pytest.mark.parametrize("family", ["albert", "nezha", "electra", "roformer", "roformer_v2"])
def test_keep_tokens(family, tmp_path, rng):
    builder = _random_builder(family)
    path = str(tmp_path / "model.ckpt")
    builder.save_weights_as_checkpoint(path)
    keep = [0, 5, 9, 2, 40, 41, 7]
    pruned = build_transformer_model(
        _config(family), path, model=family, keep_tokens=keep, with_mlm="linear"
    )
    full = build_transformer_model(_config(family), path, model=family, with_mlm="linear")
    table = keras.ops.convert_to_numpy(pruned.get_layer("Embedding-Token").embeddings)
    full_table = keras.ops.convert_to_numpy(full.get_layer("Embedding-Token").embeddings)
    np.testing.assert_array_equal(table, full_table[keep])
    ids = np.array([[1, 2, 3, 6, 4]], "int32")  # new ids -> old ids keep[...]
    inputs = [ids, np.zeros_like(ids)]
    old_inputs = [np.asarray(keep)[ids].astype("int32"), np.zeros_like(ids)]
    small = _outputs(pruned, inputs)[-1]
    big = _outputs(full, old_inputs)[-1]
    np.testing.assert_allclose(small, big[..., keep], atol=1e-5)


def test_albert_unshared_equals_albert_then_trains_apart(tmp_path, rng):
    builder = _random_builder("albert")
    path = str(tmp_path / "albert.ckpt")
    builder.save_weights_as_checkpoint(path)
    shared = build_transformer_model(_config("albert"), path, model="albert")
    unshared = build_transformer_model(
        _config("albert"), path, model="albert_unshared", return_keras_model=False
    )
    inputs = _inputs(rng)
    np.testing.assert_allclose(
        _outputs(shared, inputs)[0], _outputs(unshared.model, inputs)[0], atol=1e-6
    )
    names = {layer.name for layer in shared.layers}
    assert "Transformer-FeedForward" in names and "Transformer-0-FeedForward" not in names
    assert len(unshared.model.weights) > len(shared.weights)

    def kernels(model, index):
        layer = model.get_layer(f"Transformer-{index}-FeedForward")
        return [keras.ops.convert_to_numpy(w) for w in layer.weights]

    for a, b in zip(kernels(unshared.model, 0), kernels(unshared.model, 1), strict=True):
        np.testing.assert_array_equal(a, b)  # copies of one block before training
    # Saving under ALBERT's shared names works while the copies agree ...
    unshared.save_weights_as_checkpoint(str(tmp_path / "same.ckpt"))

    model = unshared.model
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    target = rng.normal(size=(2, 9, CONFIG["hidden_size"])).astype("float32")
    model.fit(inputs, target, epochs=1, batch_size=2, verbose=0)
    changed = [
        not np.array_equal(a, b) for a, b in zip(kernels(model, 0), kernels(model, 1), strict=True)
    ]
    assert all(changed)  # each layer got its own gradient
    # ... and fails loudly once they differ.
    with pytest.raises(ValueError, match="no longer equals layer 0"):
        unshared.save_weights_as_checkpoint(str(tmp_path / "diverged.ckpt"))


@pytest.mark.parametrize(
    "family, kwargs, message",
    [
        ("albert", dict(num_hidden_groups=2), "num_hidden_groups=1"),
        ("electra", dict(with_pool=True), "no pooler"),
        ("roformer_v2", dict(with_nsp=True), "no pooler"),
        ("nezha", dict(custom_position_ids=True), "no absolute positions"),
        ("roformer", dict(hierarchical_position=True), "no absolute positions"),
        ("roformer", dict(rotary_value=True), "rotary_value"),
    ],
)
def test_unsupported_options_are_clear_errors(family, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_transformer_model(CONFIG, model=family, **kwargs)


def test_electra_heads_and_roformer_custom_positions(rng):
    both = build_transformer_model(CONFIG, model="electra", with_discriminator=True, with_mlm=True)
    disc, mlm = both.outputs
    assert disc.shape[-1] == 1 and mlm.shape[-1] == CONFIG["vocab_size"]

    model = build_transformer_model(CONFIG, model="roformer", custom_position_ids=True)
    ids, segments = _inputs(rng)
    positions = np.tile(np.arange(9, dtype="int32"), (2, 1))
    default = build_transformer_model(CONFIG, model="roformer")
    default.set_weights(model.get_weights())
    a = np.asarray(model.predict([ids, segments, positions], verbose=0))
    b = np.asarray(default.predict([ids, segments], verbose=0))
    np.testing.assert_allclose(a, b, atol=1e-6)
    shifted = np.asarray(model.predict([ids, segments, positions + 5], verbose=0))
    # RoPE sees relative positions only: a common shift leaves unpadded rows alone.
    np.testing.assert_allclose(shifted[0], a[0], atol=1e-4)


def test_saving_a_layer_the_format_cannot_name_is_an_error(tmp_path):
    # HF's BertModel has no embedding -> hidden projection, so no name to write it under.
    builder = build_transformer_model(dict(CONFIG, embedding_size=14), return_keras_model=False)
    with pytest.raises(ValueError, match="Embedding-Mapping"):
        builder.save_weights_as_checkpoint(str(tmp_path / "model.safetensors"))
    builder.save_weights_as_checkpoint(str(tmp_path / "model.ckpt"))  # Google names have it
