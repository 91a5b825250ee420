"""Config validation: every rule, from a config file and from an argument, with a message
naming the key, the value given and what is allowed; today's valid configs still build."""

import json
import math

import numpy as np
import pytest

from kerasformers.models import build_transformer_model
from kerasformers.models.config import load_config, validate_config
from tests.conftest import TINY, TINY_T5

BERT, T5 = TINY, TINY_T5
BASES = {"bert": BERT, "nezha": BERT, "albert": BERT, "gpt2": BERT, "t5": T5}

INT = "an integer >= 1"
INT0 = "an integer >= 0"
EPS = "a finite number > 0"
RATE = r"a number in [0, 1)"
STD = "a finite number >= 0"

# (model, key, bad value, error, allowed values as the message words them)
RULES = [
    *[
        (model, key, value, error, INT)
        for model, key in [
            ("bert", "vocab_size"),
            ("bert", "hidden_size"),
            ("bert", "num_hidden_layers"),
            ("bert", "num_attention_heads"),
            ("bert", "intermediate_size"),
            ("bert", "max_position"),
            ("bert", "embedding_size"),
            ("bert", "attention_head_size"),
            ("bert", "attention_key_size"),
            ("bert", "sequence_length"),
            ("nezha", "max_relative_position"),
            ("albert", "num_hidden_groups"),
            ("albert", "inner_group_num"),
            ("t5", "num_decoder_layers"),
            ("t5", "relative_attention_num_buckets"),
            ("t5", "relative_attention_max_distance"),
        ]
        for value, error in [
            ("768", TypeError),
            (2.0, TypeError),
            (True, TypeError),
            ([2], TypeError),
            (0, ValueError),
            (-1, ValueError),
        ]
    ],
    ("bert", "segment_vocab_size", -1, ValueError, INT0),
    ("bert", "segment_vocab_size", "2", TypeError, INT0),
    ("bert", "segment_vocab_size", 2.0, TypeError, INT0),
    ("t5", "decoder_start_token_id", -1, ValueError, INT0),
    ("bert", "pad_token_id", "0", TypeError, "an integer"),
    ("bert", "pad_token_id", 0.0, TypeError, "an integer"),
    # No default of None for these: None is not "unset" there.
    ("bert", "vocab_size", None, TypeError, INT),
    ("bert", "num_hidden_layers", None, TypeError, INT),
    ("bert", "intermediate_size", None, TypeError, INT),
    ("nezha", "max_relative_position", None, TypeError, INT),
    *[
        ("bert", "layer_norm_epsilon", value, error, EPS)
        for value, error in [
            (0, ValueError),
            (-1e-12, ValueError),
            (math.nan, ValueError),
            (math.inf, ValueError),
            ("1e-12", TypeError),
            (False, TypeError),
            (None, TypeError),
        ]
    ],
    *[
        ("bert", key, value, error, RATE)
        for key in ("dropout_rate", "attention_dropout_rate")
        for value, error in [
            (1.0, ValueError),
            (1, ValueError),
            (1.5, ValueError),
            (-0.1, ValueError),
            (math.nan, ValueError),
            ("0.1", TypeError),
        ]
    ],
    ("t5", "dropout_rate", 1.0, ValueError, RATE),
    *[
        ("bert", "initializer_range", value, error, STD)
        for value, error in [
            (-0.02, ValueError),
            (math.inf, ValueError),
            ("0.02", TypeError),
            (None, TypeError),
        ]
    ],
]


def _config_file(tmp_path, config):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return str(path)


def _show(value):
    return repr(value)


@pytest.mark.parametrize("source", ["argument", "file"])
@pytest.mark.parametrize("model, key, value, error, allowed", RULES)
def test_rule(tmp_path, source, model, key, value, error, allowed):
    base = dict(BASES[model])
    if source == "argument":
        call = lambda: build_transformer_model(base, model=model, **{key: value})  # noqa: E731
        lead = f"argument {key} must be "
    else:
        path = _config_file(tmp_path, {**base, key: value})
        call = lambda: build_transformer_model(path, model=model)  # noqa: E731
        lead = f"{path}: {key} must be "
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert message.startswith(lead + allowed + ", got "), message
    assert _show(value) in message, message


@pytest.mark.parametrize(
    "model, foreign, key, value, error, allowed",
    [
        ("gpt2", "n_layer", "num_hidden_layers", -1, ValueError, INT),
        ("gpt2", "n_embd", "hidden_size", "32", TypeError, INT),
        ("gpt2", "n_head", "num_attention_heads", 0, ValueError, INT),
        ("gpt2", "resid_pdrop", "dropout_rate", 1.0, ValueError, RATE),
        ("gpt2", "n_positions", "max_position", 0, ValueError, INT),
        ("bert", "type_vocab_size", "segment_vocab_size", -1, ValueError, INT0),
        ("bert", "max_position_embeddings", "max_position", 16.0, TypeError, INT),
        ("bert", "hidden_dropout_prob", "dropout_rate", -0.5, ValueError, RATE),
        ("bert", "attention_probs_dropout_prob", "attention_dropout_rate", 2, ValueError, RATE),
        ("bert", "layer_norm_eps", "layer_norm_epsilon", 0.0, ValueError, EPS),
        ("t5", "d_model", "hidden_size", -32, ValueError, INT),
        ("t5", "num_layers", "num_hidden_layers", 0, ValueError, INT),
        ("t5", "d_kv", "attention_head_size", 8.5, TypeError, INT),
        ("t5", "d_ff", "intermediate_size", "40", TypeError, INT),
    ],
)
def test_foreign_keys_are_named_as_the_file_spells_them(
    tmp_path, model, foreign, key, value, error, allowed
):
    base = {k: v for k, v in BASES[model].items() if k != key}
    path = _config_file(tmp_path, {**base, foreign: value})
    with pytest.raises(error) as info:
        build_transformer_model(path, model=model)
    message = str(info.value)
    assert message.startswith(f"{path}: {foreign} ({key}) must be {allowed}, got "), message
    assert repr(value) in message


def test_example_message_of_the_issue(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**BERT, "num_hidden_layers": -1}))
    with pytest.raises(
        ValueError, match=r"config\.json: num_hidden_layers must be an integer >= 1"
    ):
        build_transformer_model(str(path))
    with pytest.raises(ValueError) as info:
        build_transformer_model(BERT, num_hidden_layers=-1)
    assert str(info.value) == "argument num_hidden_layers must be an integer >= 1, got -1"
    with pytest.raises(TypeError) as info:
        build_transformer_model(BERT, hidden_size="32")
    assert str(info.value) == "argument hidden_size must be an integer >= 1, got '32' (str)"
    with pytest.raises(ValueError) as info:
        build_transformer_model(dict(BERT, num_hidden_layers=0))
    assert str(info.value) == "config: num_hidden_layers must be an integer >= 1, got 0"


@pytest.mark.parametrize(
    "config, kwargs, parts",
    [
        (dict(BERT, hidden_size=33), {}, ["hidden_size = 33 (config)", "heads = 2 (config)"]),
        (BERT, dict(num_attention_heads=5), ["hidden_size = 32 (config)", "heads = 5 (argument)"]),
        (
            {k: v for k, v in T5.items() if k != "d_kv"},
            dict(model="t5", num_attention_heads=5),
            ["d_model (hidden_size) = 32 (config)", "num_attention_heads = 5 (argument)"],
        ),
    ],
)
def test_hidden_size_must_divide_into_heads(config, kwargs, parts):
    with pytest.raises(ValueError) as info:
        build_transformer_model(config, **kwargs)
    message = str(info.value)
    for part in parts + ["must be a multiple of", "attention_head_size"]:
        assert part in message, message


def test_attention_head_size_lifts_the_divisibility_rule():
    model = build_transformer_model(dict(BERT, hidden_size=33), attention_head_size=8)
    assert model.output.shape[-1] == 33


# -- keep_tokens / compound_tokens ---------------------------------------------------------------
@pytest.mark.parametrize(
    "keep, error, fragment",
    [
        ([1, 2, 97], ValueError, "token id 97 at position 2 is outside [0, 97)"),
        ([-1, 3], ValueError, "token id -1 at position 0 is outside [0, 97)"),
        ([1, 5, 1000, -4], ValueError, "token id 1000 at position 2"),
        (np.array([3, 200]), ValueError, "token id 200 at position 1"),
        ([1, "2"], TypeError, "token id '2' (str) at position 1 is not an integer"),
        ([1, 2.0], TypeError, "token id 2.0 (float) at position 1 is not an integer"),
        ([True], TypeError, "token id True (bool) at position 0"),
        (np.array([1.0, 2.0]), TypeError, "token id 1.0 (float) at position 0"),
        ([], ValueError, "must list at least one token id"),
        ("abc", TypeError, "must be a list of token ids (ints), got str"),
        ({1, 2}, TypeError, "must be a list of token ids (ints), got set"),
        (np.zeros((2, 2), int), TypeError, "flat list"),
    ],
)
def test_keep_tokens(keep, error, fragment):
    with pytest.raises(error) as info:
        build_transformer_model(BERT, keep_tokens=keep)
    message = str(info.value)
    assert message.startswith("argument keep_tokens"), message
    assert fragment in message, message
    if "outside" in fragment:
        assert "the vocab_size before keep_tokens" in message


def test_keep_tokens_from_the_config_file(tmp_path):
    path = _config_file(tmp_path, dict(BERT, keep_tokens=[0, 1, 99]))
    with pytest.raises(ValueError, match=r"config\.json: keep_tokens: token id 99 at position 2"):
        build_transformer_model(path)


@pytest.mark.parametrize(
    "compound, keep, error, fragment",
    [
        ([[1, 97]], None, ValueError, "compound_tokens[0]: token id 97 at position 1 is outside"),
        ([[1], [2, -3]], None, ValueError, "compound_tokens[1]: token id -3 at position 1"),
        ([[0, 3]], [5, 6, 7], ValueError, "[0]: token id 3 at position 1 is outside [0, 3)"),
        ([([1, 2], [0.5])], None, ValueError, "compound_tokens[0] has 2 ids but 1 weights"),
        ([([1, 2], [1, -1])], None, ValueError, "compound_tokens[0] weights [1, -1] sum to 0"),
        ([([1, 2], ["a", 1])], None, TypeError, "weights: 'a' (str) at position 0 is not a number"),
        ([([1, 2], [math.inf, 1])], None, ValueError, "weights: inf at position 0 is not finite"),
        (
            [([1, 500], [1, 1])],
            None,
            ValueError,
            "compound_tokens[0] ids: token id 500 at position",
        ),
        (
            [5],
            None,
            TypeError,
            "compound_tokens[0] must be a list of token ids or an (ids, weights)",
        ),
        ([(1, 2, 3)], None, TypeError, "an (ids, weights) tuple, got (1, 2, 3)"),
        ([[]], None, ValueError, "compound_tokens[0] must list at least one token id"),
        ([["1"]], None, TypeError, "compound_tokens[0]: token id '1' (str) at position 0"),
        ("ab", None, TypeError, "compound_tokens must be a list of new tokens"),
    ],
)
def test_compound_tokens(compound, keep, error, fragment):
    with pytest.raises(error) as info:
        build_transformer_model(BERT, compound_tokens=compound, keep_tokens=keep)
    message = str(info.value)
    assert message.startswith("argument compound_tokens"), message
    assert fragment.replace("is not finite", "is not a finite number") in message, message
    if keep is not None:
        assert "the vocabulary kept by keep_tokens" in message


def test_valid_keep_and_compound_tokens_build():
    builder = build_transformer_model(
        BERT,
        keep_tokens=np.array([0, 5, 96, 5]),
        compound_tokens=[[1, 2], ([0, 3], [0.25, 0.75]), (np.array([2]), np.array([1.0]))],
        with_mlm=True,
        return_keras_model=False,
    )
    assert builder.vocab_size == 4 + 3
    assert builder.model.output.shape[-1] == 7


# -- load_config ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, kind", [("[1, 2]", "array"), ("3", "number"), ('"bert"', "string"), ("null", "null")]
)
def test_config_file_must_hold_an_object(tmp_path, text, kind):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        load_config(str(path))
    assert str(path) in str(info.value) and f"got a JSON {kind}" in str(info.value)
    with pytest.raises(ValueError, match="must hold a JSON object"):
        build_transformer_model(str(path))


def test_invalid_json_still_names_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{oops")
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        load_config(str(path))


def test_deeply_nested_config_file_is_an_error_not_a_recursion_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"pooler": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        load_config(str(path))


# -- what must keep working ----------------------------------------------------------------------
def test_keys_the_builder_does_not_take_are_ignored_whatever_their_value(tmp_path):
    config = dict(
        BERT,
        pooler_fc_size="abc",
        n_ctx=-5,
        directionality="bidi",
        architectures=["BertModel"],
        initializer_factor=math.nan,
    )
    model = build_transformer_model(_config_file(tmp_path, config))
    assert model.output.shape[-1] == 32


def test_hf_bert_config_builds(tmp_path):
    hf = dict(
        model_type="bert",
        vocab_size=97,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=48,
        type_vocab_size=2,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        pad_token_id=0,
        position_embedding_type="absolute",
    )
    builder = build_transformer_model(_config_file(tmp_path, hf), return_keras_model=False)
    assert builder.num_hidden_layers == 2 and builder.dropout_rate == 0.1
    assert len(builder.model.inputs) == 2
    # numpy ints pass as ints; None where the builder reads None as its default
    build_transformer_model(
        BERT, num_hidden_layers=np.int64(1), pad_token_id=None, dropout_rate=None
    )


def test_hf_gpt2_config_builds(tmp_path):
    hf = dict(
        model_type="gpt2",
        vocab_size=97,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_inner=None,
        n_positions=48,
        n_ctx=48,
        activation_function="gelu_new",
        resid_pdrop=0.1,
        embd_pdrop=0.1,
        attn_pdrop=0.1,
        layer_norm_epsilon=1e-5,
        initializer_range=0.02,
        bos_token_id=96,
        eos_token_id=96,
    )
    builder = build_transformer_model(
        _config_file(tmp_path, hf), model="gpt2", return_keras_model=False
    )
    assert builder.intermediate_size == 4 * 32 and builder.layer_norm_epsilon == 1e-5


def test_hf_t5_config_builds(tmp_path):
    hf = dict(
        T5,
        model_type="t5",
        dropout_rate=0.1,
        layer_norm_epsilon=1e-6,
        feed_forward_proj="relu",
        initializer_factor=1.0,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        n_positions=512,
    )
    builder = build_transformer_model(
        _config_file(tmp_path, hf), model="t5", return_keras_model=False
    )
    assert builder.num_decoder_layers == 3 and builder.attention_head_size == 8


def test_validate_config_alone():
    validate_config(dict(BERT, dropout_rate=0.0, layer_norm_epsilon=1))  # no builder: fine
    with pytest.raises(ValueError, match=r"^config\.json: num_hidden_layers must be an integer"):
        validate_config(
            {"num_hidden_layers": -1},
            config={"num_hidden_layers": -1},
            config_name="config.json",
        )
