"""The weight engine: mappings matched by variable path, bert4keras' list form,
mapping errors, and checkpoint dtypes that cannot fill a variable."""

import os

import keras
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from kerasformers.checkpoints import open_checkpoint, save_checkpoint
from kerasformers.models import build_transformer_model
from kerasformers.models.transformer import Transformer
from kerasformers.models.weights import WeightLoadingError
from tests.conftest import randomize_weights

CONFIG = dict(
    vocab_size=41,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=23,
    hidden_act="gelu",
    max_position_embeddings=12,
    type_vocab_size=2,
)
TF_WRITTEN = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "tf_written")
TINY_BERT = os.path.join(TF_WRITTEN, "tiny_bert")
MIXED = os.path.join(TF_WRITTEN, "mixed_dtypes", "mixed.ckpt")
ATTENTION = "Transformer-1-MultiHeadSelfAttention"
QUERY = "bert/encoder/layer_1/attention/self/query/kernel"


def _builder(seed=3, **kwargs):
    builder = build_transformer_model(CONFIG, return_keras_model=False, **kwargs)
    randomize_weights(builder.model, seed)
    return builder


def _inputs(rng):
    ids = rng.integers(1, CONFIG["vocab_size"], (2, 7)).astype("int32")
    return [ids, (np.arange(7)[None] >= 3).astype("int32").repeat(2, 0)]


def _out(model, inputs):
    return keras.ops.convert_to_numpy(model(inputs, training=False))


def _numpy(variable):
    return keras.ops.convert_to_numpy(variable)


def _reversed(mapping):
    """The same mapping, layers and each layer's paths in reverse order."""
    return {layer: dict(reversed(entries.items())) for layer, entries in reversed(mapping.items())}


def _in_weights_order(builder, mapping):
    """bert4keras' form of `mapping`: {layer: [entries in layer.weights order]}."""
    return {
        layer: [entries[v.path[len(layer) + 1 :]] for v in builder.layers[layer].weights]
        for layer, entries in mapping.items()
        if layer in builder.layers
    }


# ---------------------------------------------------------------- path matching
def test_mapping_order_is_irrelevant_on_save_and_load(rng, tmp_path):
    builder = _builder()
    mapping = _reversed(builder.variable_mapping())
    assert list(mapping[ATTENTION])[0] == "o_dense/bias"  # not layer.weights' order
    path = builder.save_weights_as_checkpoint(str(tmp_path / "model.ckpt"), mapping=mapping)
    attention = builder.model.get_layer(ATTENTION)
    with open_checkpoint(path) as reader:
        np.testing.assert_array_equal(reader.get(QUERY), _numpy(attention.q_dense.kernel))
        np.testing.assert_array_equal(
            reader.get("bert/encoder/layer_1/attention/output/dense/bias"),
            _numpy(attention.o_dense.bias),
        )
    # Written under the reversed mapping, read back under the family's (and the reverse).
    for load_mapping in (None, mapping):
        other = _builder(seed=9)
        other.load_weights_from_checkpoint(path, mapping=load_mapping)
        for a, b in zip(builder.model.weights, other.model.weights, strict=True):
            np.testing.assert_array_equal(_numpy(a), _numpy(b))


def test_swapped_query_and_key_names_are_seen_against_tf_reference():
    """Real TF-written weights: the family mapping matches the reference; swapping the
    q and k kernels of one layer (same shapes) changes the output well past tolerance."""
    config = os.path.join(TINY_BERT, "bert_config.json")
    prefix = os.path.join(TINY_BERT, "bert_model.ckpt")
    ref = np.load(os.path.join(TINY_BERT, "reference.npz"))
    ids, segments, mask = (ref[k].astype("int32") for k in ("token_ids", "segment_ids", "mask"))

    def error(builder):
        out = _out(builder.model, [ids, segments])
        return float(np.max(np.abs(out - ref["sequence_output"]) * mask[..., None]))

    builder = build_transformer_model(config, prefix, return_keras_model=False)
    assert error(builder) <= 1e-4
    mapping = builder.variable_mapping()
    attention = dict(mapping[ATTENTION])
    attention["q_dense/kernel"], attention["k_dense/kernel"] = (
        attention["k_dense/kernel"],
        attention["q_dense/kernel"],
    )
    builder.load_weights_from_checkpoint(prefix, mapping={**mapping, ATTENTION: attention})
    assert error(builder) > 1e-2


def test_swapped_names_of_different_shapes_are_loading_errors(tmp_path):
    builder = _builder()
    path = builder.save_weights_as_checkpoint(str(tmp_path / "model.ckpt"))
    mapping = builder.variable_mapping()
    feed_forward = dict(mapping["Transformer-0-FeedForward"])
    feed_forward["i_dense/kernel"], feed_forward["o_dense/kernel"] = (
        feed_forward["o_dense/kernel"],
        feed_forward["i_dense/kernel"],
    )
    with pytest.raises(
        WeightLoadingError,
        match=r"'bert/encoder/layer_0/output/dense/kernel' has shape \(23, 16\) but "
        r"Transformer-0-FeedForward/i_dense/kernel expects \(16, 23\)",
    ):
        builder.load_weights_from_checkpoint(
            path, mapping={**mapping, "Transformer-0-FeedForward": feed_forward}
        )


@pytest.mark.parametrize("action", ["load", "save"])
@pytest.mark.parametrize(
    "change, message",
    [
        # a typo: a path the layer does not have (and its real variable left unnamed)
        (
            lambda e: {("q_dense/kernal" if p == "q_dense/kernel" else p): n for p, n in e.items()},
            r"layer 'Transformer-1-MultiHeadSelfAttention' has no variable 'q_dense/kernal'.*"
            r"names 'bert/encoder/layer_1/attention/self/query/kernel' for it",
        ),
        (
            lambda e: {p: n for p, n in e.items() if p != "v_dense/bias"},
            r"layer 'Transformer-1-MultiHeadSelfAttention': the \w+ mapping names no tensor for "
            r"its variable 'v_dense/bias' \(Transformer-1-MultiHeadSelfAttention/v_dense/bias\)",
        ),
    ],
)
def test_mapping_that_does_not_fit_the_variables_is_an_error(action, change, message, tmp_path):
    builder = _builder(ignore_invalid_weights=True)  # mapping bugs are never skipped
    path = builder.save_weights_as_checkpoint(str(tmp_path / "model.ckpt"))
    mapping = builder.variable_mapping()
    mapping[ATTENTION] = change(mapping[ATTENTION])
    with pytest.raises(WeightLoadingError, match=message):
        if action == "load":
            builder.load_weights_from_checkpoint(path, mapping=mapping)
        else:
            builder.save_weights_as_checkpoint(str(tmp_path / "again.ckpt"), mapping=mapping)


def test_bias_name_for_a_bias_free_layer_is_an_error(tmp_path):
    builder = build_transformer_model(
        CONFIG, model="roformer_v2", embedding_size=10, return_keras_model=False
    )
    mapping = builder.variable_mapping()
    mapping["Embedding-Mapping"] = {
        **mapping["Embedding-Mapping"],
        "bias": "bert/encoder/embedding_hidden_mapping_in/bias",
    }
    with pytest.raises(WeightLoadingError, match=r"'Embedding-Mapping' has no variable 'bias'"):
        builder.save_weights_as_checkpoint(str(tmp_path / "model.ckpt"), mapping=mapping)


# ---------------------------------------------------------------- bert4keras' list form
def test_list_form_mapping_round_trips_with_the_path_form(rng, tmp_path):
    builder = _builder(with_mlm=True)
    custom = {
        layer: {p: "custom/" + builder._split_entry(e)[0] for p, e in entries.items()}
        for layer, entries in builder.variable_mapping().items()
    }
    listed = _in_weights_order(builder, custom)
    assert isinstance(listed[ATTENTION], list) and listed[ATTENTION][0] == "custom/" + QUERY
    inputs = _inputs(rng)
    for save_with, load_with in ((listed, custom), (custom, listed)):
        path = builder.save_weights_as_checkpoint(
            str(tmp_path / "model.safetensors"), mapping=save_with
        )
        with open_checkpoint(path) as reader:
            np.testing.assert_array_equal(
                reader.get("custom/" + QUERY),
                _numpy(builder.model.get_layer(ATTENTION).q_dense.kernel),
            )
        other = _builder(seed=11, with_mlm=True)
        other.load_weights_from_checkpoint(path, mapping=load_with)
        np.testing.assert_array_equal(_out(builder.model, inputs), _out(other.model, inputs))


def test_list_form_with_the_wrong_length_is_an_error(tmp_path):
    builder = _builder()
    path = builder.save_weights_as_checkpoint(str(tmp_path / "model.ckpt"))
    listed = _in_weights_order(builder, builder.variable_mapping())
    listed["Embedding-Norm"] = listed["Embedding-Norm"][:1]
    with pytest.raises(
        WeightLoadingError,
        match=r"'Embedding-Norm' has 2 weights \['beta', 'gamma'\] but the custom mapping "
        r"lists 1 \(in layer.weights order\)",
    ):
        builder.load_weights_from_checkpoint(path, mapping=listed)


def test_family_overriding_variable_mapping_in_list_form(rng, tmp_path):
    """A bert4keras-style subclass returning lists still loads Google checkpoints."""
    builder = _builder()
    path = builder.save_weights_as_checkpoint(str(tmp_path / "model.ckpt"))
    family = type(builder)
    listed = _in_weights_order(builder, builder.variable_mapping())

    class Listed(family):
        def variable_mapping(self):
            return listed

    other = build_transformer_model(CONFIG, model=Listed, return_keras_model=False)
    other.load_weights_from_checkpoint(path)
    inputs = _inputs(rng)
    np.testing.assert_array_equal(_out(builder.model, inputs), _out(other.model, inputs))


def test_electra_google_names_are_googles(tmp_path):
    """Google's ELECTRA names the discriminator output dense_1 (HF: dense_prediction)."""
    config = dict(CONFIG, embedding_size=10)
    builder = build_transformer_model(
        config, model="electra", with_discriminator=True, return_keras_model=False
    )
    randomize_weights(builder.model)
    path = builder.save_weights_as_checkpoint(str(tmp_path / "model.ckpt"))
    with open_checkpoint(path) as reader:
        names = reader.names()
    assert {
        "discriminator_predictions/dense_1/kernel",
        "discriminator_predictions/dense_1/bias",
    } <= set(names)
    assert not any("dense_prediction" in n for n in names)
    hf = builder.save_weights_as_checkpoint(str(tmp_path / "model.safetensors"))
    assert "discriminator_predictions.dense_prediction.weight" in load_file(hf)
    for checkpoint in (path, hf):
        loaded = build_transformer_model(
            config, checkpoint, model="electra", with_discriminator=True
        )
        np.testing.assert_array_equal(
            _numpy(loaded.get_layer("Discriminator-Prediction").kernel),
            _numpy(builder.model.get_layer("Discriminator-Prediction").kernel),
        )


# ---------------------------------------------------------------- dtypes
NORM = "bert.embeddings.LayerNorm.weight"


def _safetensors_with(builder, tmp_path, name, value):
    path = builder.save_weights_as_checkpoint(str(tmp_path / "model.safetensors"))
    tensors = load_file(path)
    tensors[name] = value
    save_file(tensors, path)
    return path


@pytest.mark.parametrize("dtype", ["int32", "int64", "bool", "uint8"])
def test_non_float_data_for_a_float_variable_is_an_error(dtype, tmp_path):
    builder = _builder()
    gamma = _numpy(builder.model.get_layer("Embedding-Norm").gamma)
    path = _safetensors_with(builder, tmp_path, NORM, np.ones_like(gamma, dtype=dtype))
    with pytest.raises(
        WeightLoadingError,
        match=rf"tensor '{NORM}' holds {dtype} data but Embedding-Norm/gamma is float32",
    ):
        build_transformer_model(CONFIG, path)
    # ignore_invalid_weights skips it like any other problem: the rest loads.
    model = build_transformer_model(CONFIG, path, ignore_invalid_weights=True)
    np.testing.assert_array_equal(_numpy(model.get_layer("Embedding-Norm").gamma), 1.0)
    np.testing.assert_array_equal(
        _numpy(model.get_layer("Embedding-Norm").beta),
        _numpy(builder.model.get_layer("Embedding-Norm").beta),
    )


@pytest.mark.parametrize("dtype", ["float16", ml_dtypes.bfloat16, "float64"])
def test_other_float_widths_are_cast(dtype, tmp_path):
    builder = _builder()
    gamma = _numpy(builder.model.get_layer("Embedding-Norm").gamma)
    path = _safetensors_with(builder, tmp_path, NORM, gamma.astype(dtype))
    model = build_transformer_model(CONFIG, path)
    loaded = _numpy(model.get_layer("Embedding-Norm").gamma)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, gamma.astype(dtype).astype(np.float32))


def test_int_data_for_a_float_variable_in_a_tf_checkpoint_is_an_error(tmp_path):
    builder = _builder()
    path = builder.save_weights_as_checkpoint(str(tmp_path / "model.ckpt"))
    with open_checkpoint(path) as reader:
        tensors = {name: reader.get(name) for name in reader.names()}
    tensors[QUERY] = np.round(tensors[QUERY] * 100).astype("int64")
    save_checkpoint(tensors, str(tmp_path / "int.ckpt"), format="tf")
    with pytest.raises(
        WeightLoadingError,
        match=rf"tensor '{QUERY}' holds int64 data but {ATTENTION}/q_dense/kernel is float32",
    ):
        build_transformer_model(CONFIG, str(tmp_path / "int.ckpt"))


class _Variables(keras.layers.Layer):
    """Holds one variable per {name: (shape, dtype)}."""

    def __init__(self, specs, **kwargs):
        super().__init__(**kwargs)
        self.specs = specs

    def build(self, input_shape=None):
        for name, (shape, dtype) in self.specs.items():
            # Not trainable: torch has no gradients for int parameters.
            self.add_weight(
                name=name, shape=shape, dtype=dtype, initializer="zeros", trainable=False
            )


def _holder(specs, **kwargs):
    """A builder whose only layer, "Variables", holds variables of the given dtypes."""
    builder = Transformer(
        vocab_size=2,
        hidden_size=2,
        num_hidden_layers=0,
        num_attention_heads=1,
        intermediate_size=2,
        hidden_act="linear",
        **kwargs,
    )
    layer = _Variables(specs, name="Variables")
    layer.build()
    builder.layers = {"Variables": layer}
    return builder


def test_real_tf_dtypes_against_variable_dtypes():
    """tf.raw_ops.SaveV2's dtypes (tests/data/tf_written/mixed_dtypes): float widths
    fill float variables and ints fill int variables; a kind change is an error."""
    with open_checkpoint(MIXED) as reader:
        stored = {
            name: reader.get(name) for name in ("f16", "bf16", "f64", "i32", "bool", "f32/odd")
        }
    fits = {
        "f16": ((11, 13), "float32"),
        "bf16": ((2, 3, 5), "float32"),
        "f64": ((4, 1, 2), "float32"),
        "i32": ((6,), "int32"),
    }
    builder = _holder(fits)
    builder.load_weights_from_checkpoint(MIXED, mapping={"Variables": {k: k for k in fits}})
    for variable in builder.layers["Variables"].weights:
        name = variable.path.split("/", 1)[1]
        expected = stored[name].astype(keras.backend.standardize_dtype(variable.dtype))
        np.testing.assert_array_equal(_numpy(variable), expected)

    misfits = {
        "bool": ((5, 2), "float32"),  # bool data, float variable
        "i32": ((6,), "float32"),  # int data, float variable
        "odd": ((3, 5, 7), "int32"),  # float data, int variable
    }
    mapping = {"Variables": {"bool": "bool", "i32": "i32", "odd": "f32/odd"}}
    with pytest.raises(WeightLoadingError) as info:
        _holder(misfits).load_weights_from_checkpoint(MIXED, mapping=mapping)
    message = str(info.value)
    assert "tensor 'bool' holds bool data but Variables/bool is float32" in message
    assert "tensor 'i32' holds int32 data but Variables/i32 is float32" in message
    assert "tensor 'f32/odd' holds float32 data but Variables/odd is int32" in message
    skipping = _holder(misfits, ignore_invalid_weights=True)
    skipping.load_weights_from_checkpoint(MIXED, mapping=mapping)
    for variable in skipping.layers["Variables"].weights:
        assert not np.any(_numpy(variable))  # left as initialised
