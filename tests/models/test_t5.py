"""T5 builders (t5 / t5.1.0, t5.1.1, mt5.1.1 and their _encoder / _decoder) and
T5's relative position bias.

Numbers are checked live against HF transformers in tests/parity/test_t5_hf.py;
here: structure, masks, serialisation, errors, and the bucket rule against a
plain-Python transcription of the rule in HF's `_relative_position_bucket`
docstring (float64 logarithms, one position at a time).
"""

import math

import keras
import numpy as np
import pytest

from kerasformers.layers import RelativePositionEmbeddingT5, t5_relative_position_bucket
from kerasformers.models import MODELS, T5, build_transformer_model, translate_config

CONFIG = dict(
    vocab_size=45,
    d_model=12,
    d_kv=5,
    d_ff=20,
    num_layers=2,
    num_decoder_layers=3,
    num_heads=3,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
    dropout_rate=0.0,
)


def _randomize(model, rng):
    """Large random weights (norm gains near 1) so every term matters."""
    for variable in model.weights:
        value = rng.normal(0.0, 0.4, variable.shape)
        if variable.path.endswith("gamma"):
            value = 1.0 + 0.5 * value
        variable.assign(value.astype("float32"))
    return model


def _ids(rng, batch, length, low=1):
    return rng.integers(low, CONFIG["vocab_size"], (batch, length)).astype("int32")


# ---------------------------------------------------------------- the bucket rule
def brute_force_bucket(relative, bidirectional, num_buckets, max_distance):
    """The rule as HF's docstring states it, for one relative position."""
    bucket = 0
    if bidirectional:
        num_buckets //= 2
        if relative > 0:
            bucket = num_buckets
        distance = abs(relative)
    else:
        distance = max(-relative, 0)  # keys ahead of the query all land in bucket 0
    max_exact = num_buckets // 2
    if distance < max_exact:
        return bucket + distance
    log_bucket = max_exact + int(
        math.log(distance / max_exact)
        / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    )
    return bucket + min(log_bucket, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (8, 16), (13, 50)])
def test_buckets_follow_the_rule(bidirectional, num_buckets, max_distance):
    relative = np.arange(-200, 201)
    ours = np.asarray(
        t5_relative_position_bucket(relative, bidirectional, num_buckets, max_distance)
    )
    ref = [brute_force_bucket(int(r), bidirectional, num_buckets, max_distance) for r in relative]
    np.testing.assert_array_equal(ours, ref)
    assert ours.min() >= 0 and ours.max() < num_buckets


def test_relative_position_bias_layer(rng):
    layer = RelativePositionEmbeddingT5(8, 3, max_distance=16, bidirectional=False)
    x = np.zeros((2, 6, 4), "float32")
    bias = keras.ops.convert_to_numpy(layer([x, x]))
    assert bias.shape == (1, 3, 6, 6)
    table = rng.normal(size=(8, 3)).astype("float32")
    layer.set_weights([table])
    bias = keras.ops.convert_to_numpy(layer([x, x]))
    for i in range(6):
        for j in range(6):
            np.testing.assert_allclose(
                bias[0, :, i, j], table[brute_force_bucket(j - i, False, 8, 16)], rtol=1e-6
            )
    # Generation: one query at position 4 against 6 cached keys is row 4.
    step = layer([x[:, :1], x[:, :1]], query_positions=np.array([4]), key_positions=np.arange(6))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(step), bias[:, :, 4:5], rtol=1e-6)
    again = RelativePositionEmbeddingT5.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"input_dim": 3, "output_dim": 2}, "num_buckets must be >= 4"),
        ({"input_dim": 1, "output_dim": 2, "bidirectional": False}, "num_buckets must be >= 2"),
        ({"input_dim": 32, "output_dim": 2, "max_distance": 8}, "max_distance must exceed"),
        ({"input_dim": 32.0, "output_dim": 2}, "num_buckets must be an integer"),
    ],
)
def test_relative_position_bias_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RelativePositionEmbeddingT5(**kwargs)


# ---------------------------------------------------------------- structure
def test_model_names_are_registered():
    for version in ("t5", "t5.1.0", "t5.1.1", "mt5.1.1"):
        for suffix in ("", "_encoder", "_decoder"):
            assert version + suffix in MODELS
    assert MODELS["t5"] is MODELS["t5.1.0"]


def test_hf_config_keys_are_translated():
    out = translate_config({"d_model": 12, "num_layers": 2, "num_heads": 3, "d_ff": 20, "d_kv": 5})
    assert out == dict(
        hidden_size=12,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=20,
        attention_head_size=5,
    )


@pytest.mark.parametrize("version", ["t5.1.0", "t5.1.1"])
def test_layers_inputs_outputs_and_builders(version):
    t5 = build_transformer_model(CONFIG, model=version, return_keras_model=False)
    model, encoder, decoder = t5.model, t5.encoder, t5.decoder
    assert [i.name for i in model.inputs] == ["Encoder-Input-Token", "Decoder-Input-Token"]
    assert [i.name for i in encoder.inputs] == ["Encoder-Input-Token"]
    assert [i.name for i in decoder.inputs] == ["Input-Context", "Decoder-Input-Token"]
    assert tuple(model.output.shape) == (None, None, CONFIG["vocab_size"])
    assert tuple(encoder.output.shape) == (None, None, CONFIG["d_model"])
    assert model._kf_builder is t5
    assert encoder._kf_builder is t5.encoder_builder
    assert decoder._kf_builder is t5.decoder_builder
    assert t5.decoder_builder.application == "lm"
    head = model.get_layer(t5.decoder_builder.lm_activation_layer)
    assert head.activation is keras.activations.softmax  # probabilities by default
    assert t5.decoder_builder.num_hidden_layers == 3 and t5.encoder_builder.num_hidden_layers == 2
    names = {layer.name for layer in model.layers}
    assert {
        "Encoder-Embedding-Relative-Position",
        "Decoder-Embedding-Relative-Position",
        "Encoder-Transformer-1-FeedForward-Norm",
        "Decoder-Transformer-2-MultiHeadCrossAttention",
        "Encoder-Output-Norm",
        "Decoder-Output-Norm",
        "Attention-LM-Mask",
        t5.decoder_builder.lm_activation_layer,
    } <= names
    # one token table for encoder input, decoder input (and the t5.1.0 head)
    assert encoder.get_layer("Embedding-Token") is decoder.get_layer("Embedding-Token")
    tied = version == "t5.1.0"
    assert ("Decoder-Output-Scale" in names) == tied
    assert ("Decoder-Output-LM" in names) != tied
    assert len(model.get_layer("Encoder-Transformer-0-FeedForward").weights) == (2 if tied else 3)
    assert not any(
        w.path.endswith(("bias", "beta")) for w in model.weights
    )  # bias-free, RMS norms without beta


def test_decoder_alone_and_with_lm_false():
    decoder = build_transformer_model(CONFIG, model="mt5.1.1_decoder", with_lm=False)
    assert tuple(decoder.output.shape) == (None, None, CONFIG["d_model"])
    assert "Decoder-Output-LM" not in {layer.name for layer in decoder.layers}


# ---------------------------------------------------------------- masks
def test_decoder_is_causal_and_encoder_padding_is_masked(rng):
    t5 = build_transformer_model(
        CONFIG, model="t5.1.1", final_activation="linear", return_keras_model=False
    )
    _randomize(t5.model, rng)
    source = _ids(rng, 2, 6)
    padded = np.concatenate([source, np.zeros((2, 4), "int32")], axis=1)
    target = _ids(rng, 2, 8)
    base = t5.model.predict([padded, target], verbose=0)

    # Changing decoder tokens after t changes nothing at or before t.
    t = 4
    changed = target.copy()
    changed[:, t + 1 :] = _ids(rng, 2, 8 - t - 1)
    out = t5.model.predict([padded, changed], verbose=0)
    np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-5)
    assert np.abs(out[:, t + 1 :] - base[:, t + 1 :]).max() > 1e-3  # later positions see them

    # Encoder padding does not reach the decoder (HF parity checks the encoder
    # outputs of a ragged batch too).
    np.testing.assert_allclose(t5.model.predict([source, target], verbose=0), base, atol=1e-5)
    # The same extra positions as real tokens do change the output.
    longer = padded.copy()
    longer[:, 6:] = _ids(rng, 2, 4)
    assert np.abs(t5.model.predict([longer, target], verbose=0) - base).max() > 1e-3


def test_keras_round_trip(tmp_path, rng):
    t5 = build_transformer_model(
        CONFIG, model="t5.1.0", final_activation="linear", return_keras_model=False
    )
    _randomize(t5.model, rng)
    source = _ids(rng, 2, 6)
    source[1, 4:] = 0
    target = _ids(rng, 2, 5)
    expected = t5.model.predict([source, target], verbose=0)
    path = str(tmp_path / "t5.keras")
    t5.model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict([source, target], verbose=0), expected, atol=1e-5)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "model, kwargs, match",
    [
        ("t5", {"feed_forward_proj": "swiglu"}, "unknown activation 'swiglu'"),
        ("t5", {"feed_forward_proj": "relu-gated"}, "feed_forward_proj 'relu-gated' is not"),
        ("t5", {"feed_forward_proj": "gated-gelu"}, "does not fit t5.1.0"),
        ("t5.1.1", {"feed_forward_proj": "relu"}, "does not fit t5.1.1"),
        ("t5.1.1", {"tie_word_embeddings": True}, "tie_word_embeddings=True does not fit"),
        ("t5", {"tie_word_embeddings": False}, "tie_word_embeddings=False does not fit"),
        ("mt5.1.1", {"scale_decoder_outputs": True}, "scale_decoder_outputs=True does not"),
        ("t5.1.1", {"hidden_act": "relu"}, "needs a gated pair"),
        ("t5", {"hidden_act": ["gelu", "linear"]}, "needs a single hidden_act"),
        ("t5.1.1", {"version": "t5.1.0"}, "is 't5.1.1', but version='t5.1.0'"),
        ("t5", {"embedding_size": 8}, "embedding_size must equal hidden_size"),
        ("t5_encoder", {"application": "lm"}, "application='lm' is not available"),
    ],
)
def test_bad_options_are_named(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_transformer_model(CONFIG, model=model, **kwargs)


def test_unknown_version_is_named():
    with pytest.raises(ValueError, match="unknown version 't5.2'"):
        T5(version="t5.2", **translate_config(CONFIG))
