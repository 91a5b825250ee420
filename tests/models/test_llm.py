"""LLM decoder builders: config translation, model="auto", errors, saving, bfloat16.

Numbers against HF are in tests/parity/test_llm_hf.py; cached == uncached
decoding in tests/generation/test_cached.py.
"""

import json

import keras
import numpy as np
import pytest

from kerasformers.generation import generate
from kerasformers.layers import RotaryEmbedding
from kerasformers.layers.rope import rope_frequencies
from kerasformers.models import build_transformer_model
from tests.conftest import randomize_weights

HF_LLAMA = {
    "model_type": "llama",
    "vocab_size": 97,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 40,
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
}


def _config(tmp_path, **changes):
    config = {**HF_LLAMA, **changes}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return str(path)


def test_hf_keys_are_translated(tmp_path):
    config = _config(
        tmp_path,
        attention_bias=True,
        head_dim=12,
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0},
    )
    builder = build_transformer_model(config, model="auto", return_keras_model=False)
    assert type(builder).__name__ == "LLaMA"
    assert builder.num_key_value_heads == 2
    assert builder.attention_head_size == 12
    assert builder.layer_norm_epsilon == 1e-5
    assert builder.projection_bias is True
    assert builder.rope_theta == 500.0
    assert builder.rope_scaling == {"rope_type": "linear", "factor": 2.0}
    attention = builder.model.get_layer("Transformer-0-MultiHeadSelfAttention")
    # Caches and projections keep the key/value heads: 2 x 12, not 4 x 12.
    assert tuple(attention.k_dense.kernel.shape) == (32, 24)
    assert tuple(attention.q_dense.kernel.shape) == (32, 48)
    assert tuple(attention.o_dense.kernel.shape) == (48, 32)
    assert attention.o_dense.use_bias


@pytest.mark.parametrize(
    ("model_type", "expected"),
    [("qwen2", "Qwen2"), ("qwen3", "Qwen3"), ("mistral", "Mistral"), ("gemma", "Gemma")],
)
def test_auto_picks_the_family(tmp_path, model_type, expected):
    config = _config(tmp_path, model_type=model_type)
    builder = build_transformer_model(config, model="auto", return_keras_model=False)
    assert type(builder).__name__ == expected


def test_auto_reads_the_older_families(tmp_path):
    bert = {
        "model_type": "bert",
        "vocab_size": 50,
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 20,
        "hidden_act": "gelu",
        "max_position_embeddings": 20,
    }
    (tmp_path / "bert.json").write_text(json.dumps(bert))
    builder = build_transformer_model(
        str(tmp_path / "bert.json"), model="auto", return_keras_model=False
    )
    assert type(builder).__name__ == "BERT"
    gpt2 = {"model_type": "gpt2", "vocab_size": 50, "n_embd": 16, "n_layer": 1, "n_head": 2}
    gpt2.update(n_positions=20, activation_function="gelu_new")
    builder = build_transformer_model(gpt2, model="auto", return_keras_model=False)
    assert type(builder).__name__ == "GPT2"


def test_qwen2_layer_types_from_max_window_layers(tmp_path):
    config = _config(
        tmp_path, model_type="qwen2", use_sliding_window=True, sliding_window=5, max_window_layers=1
    )
    builder = build_transformer_model(config, model="auto", return_keras_model=False)
    assert [builder.layer_window(i) for i in range(2)] == [None, 5]
    off = _config(tmp_path, model_type="qwen2", use_sliding_window=False, sliding_window=5)
    builder = build_transformer_model(off, model="auto", return_keras_model=False)
    assert builder.sliding_window is None


@pytest.mark.parametrize(
    ("changes", "model", "error", "message"),
    [
        (dict(rope_scaling={"rope_type": "ntk-by-parts", "factor": 2.0}), "llama", ValueError,
         "unknown rope type 'ntk-by-parts'"),
        (dict(rope_scaling={"rope_type": "yarn", "factor": 2.0}), "llama", ValueError,
         "original_max_position_embeddings"),
        (dict(rope_scaling={"rope_type": "linear", "factor": 0.5}), "llama", ValueError,
         "factor must be a number >= 1"),
        (dict(num_key_value_heads=3), "llama", ValueError,
         "num_key_value_heads = 3 (" ),
        (dict(model_type="qwen2"), "llama", ValueError,
         "has model_type 'qwen2' (model='qwen2') but model='llama'"),
        (dict(model_type="llama"), "bert", ValueError, "has model_type 'llama'"),
        (dict(model_type=None), "auto", ValueError, 'needs a "model_type" key'),
        (dict(model_type="falcon"), "auto", ValueError, "model_type 'falcon'"),
        (dict(layer_types=["full_attention"]), "llama", ValueError, "layer_types must list"),
        (dict(model_type="gemma", use_bidirectional_attention=True), "gemma", ValueError,
         "use_bidirectional_attention"),
        (dict(sliding_window=0, model_type="mistral"), "mistral", ValueError,
         "sliding_window must be an integer >= 1"),
    ],
)  # fmt: skip
def test_bad_configs_are_clear_errors(tmp_path, changes, model, error, message):
    config = {k: v for k, v in {**HF_LLAMA, **changes}.items() if v is not None}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(error, match=None) as info:
        build_transformer_model(str(path), model=model)
    assert message in str(info.value)


def test_rope_frequencies_follow_the_formulas():
    """Hand-checked values of each static rope type's frequencies (HF's rules)."""
    base, _ = rope_frequencies(8, 10000.0)
    np.testing.assert_allclose(base, 10000.0 ** (-np.arange(0, 8, 2) / 8))
    linear, _ = rope_frequencies(8, 10000.0, {"rope_type": "linear", "factor": 4.0})
    np.testing.assert_allclose(linear, base / 4)
    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    llama3, _ = rope_frequencies(8, 10000.0, scaling)
    wavelength = 2 * np.pi / base  # 6.3, 63, 628, 6283
    assert llama3[0] == base[0]  # short wavelength (< 64 / 4): kept
    assert np.allclose(llama3[2:], base[2:] / 8)  # long (> 64): interpolated
    smooth = (64 / wavelength[1] - 1) / 3
    assert np.isclose(llama3[1], (1 - smooth) * base[1] / 8 + smooth * base[1])
    _, factor = rope_frequencies(
        8, 10000.0, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}
    )
    assert np.isclose(factor, 0.1 * np.log(4.0) + 1.0)


def test_dynamic_rope_rescales_only_past_max_position():
    layer = RotaryEmbedding(8, rope_scaling={"rope_type": "dynamic", "factor": 2.0}, max_position=6)
    plain = RotaryEmbedding(8, max_position=6)
    short, long = np.zeros((1, 6, 4)), np.zeros((1, 9, 4))
    np.testing.assert_allclose(np.asarray(layer(short)), np.asarray(plain(short)), atol=1e-6)
    assert np.abs(np.asarray(layer(long)) - np.asarray(plain(long))).max() > 1e-3


def _tiny(model="llama", **changes):
    keras.utils.set_random_seed(2)
    config = {**HF_LLAMA, "model_type": model, **changes}
    built = build_transformer_model(config, model=model, final_activation="linear")
    randomize_weights(built, seed=2, scale=1.5)
    return built


@pytest.mark.parametrize("model", ["qwen3", "gemma", "mistral"])
def test_keras_file_round_trip(model, tmp_path):
    extra = {"sliding_window": 3} if model == "mistral" else {"head_dim": 12}
    built = _tiny(model, **extra)
    path = str(tmp_path / "model.keras")
    built.save(path)
    loaded = keras.saving.load_model(path)
    ids = np.array([[4, 8, 15, 16, 23, 42]])
    np.testing.assert_allclose(
        np.asarray(loaded.predict(ids, verbose=0)), np.asarray(built.predict(ids, verbose=0)),
        atol=1e-5,
    )  # fmt: skip
    if model == "mistral":  # the window mask decodes after loading too
        prompts = [[4, 8, 15], [16]]
        assert generate(loaded, prompts, max_new_tokens=4) == generate(
            built, prompts, max_new_tokens=4
        )


def test_bfloat16_weights_generate_like_full_recomputation():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("bfloat16")
    try:
        built = _tiny("qwen2", tie_word_embeddings=True)
        assert built.get_layer("Embedding-Token").embeddings.dtype == "bfloat16"
        prompt = [5, 17, 33, 2]
        tokens = generate(built, [prompt], max_new_tokens=4)[0]
        ids = np.zeros((1, 8), "int32")  # one width: one compile
        ids[0, : len(prompt)] = prompt
        for step in range(4):  # full recomputation, greedy (right padding is never seen)
            logits = np.asarray(built.predict(ids, verbose=0), dtype="float32")
            ids[0, len(prompt) + step] = logits[0, len(prompt) + step - 1].argmax()
        assert tokens == ids[0, len(prompt) :].tolist()
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("model", ["qwen2", "gpt2", "t5.1.1"])
def test_dtype_argument_sets_every_layer(model):
    """dtype= gives every layer the policy without touching the global one."""
    from tests.conftest import TINY, TINY_T5

    before = keras.config.dtype_policy().name
    config = TINY_T5 if model.startswith("t5") else TINY
    application = "encoder" if model.startswith("t5") else "lm"
    built = build_transformer_model(config, model=model, application=application, dtype="bfloat16")
    assert keras.config.dtype_policy().name == before
    dtypes = {v.dtype for v in built.weights}
    assert dtypes == {"bfloat16"}, dtypes


def test_config_dtype_does_not_choose_the_policy(tmp_path):
    """HF's config.json records the saved dtype; the build follows the caller."""
    config = _config(tmp_path, dtype="bfloat16", torch_dtype="bfloat16")
    built = build_transformer_model(config, model="auto")
    assert {v.dtype for v in built.weights} == {keras.config.floatx()}
    built = build_transformer_model(config, model="auto", dtype="bfloat16")
    assert {v.dtype for v in built.weights} == {"bfloat16"}
