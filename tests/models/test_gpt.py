"""GPT, GPT-2 and GPT2-ML builders, and the fused-tensor (FusedPart) mapping hook.

GPT2-ML has no reference implementation in transformers, so every family is
checked against a numpy forward pass written below from the papers /
released code (Grover's layout for GPT2-ML), sharing nothing with the library
but the weights it reads; tolerance 1e-4 on logits. GPT and GPT-2 are also
checked live against HF in tests/parity/test_gpt_hf.py.
"""

import math

import keras
import numpy as np
import pytest

from kerasformers.checkpoints import open_checkpoint, save_checkpoint
from kerasformers.models import (
    FusedPart,
    WeightLoadingError,
    build_transformer_model,
)

TOL = 1e-4
CONFIG = dict(
    vocab_size=45,
    hidden_size=12,
    num_hidden_layers=2,
    num_attention_heads=3,
    intermediate_size=20,
    hidden_act="gelu",
    max_position_embeddings=16,
)


def _randomize(model, rng):
    """Large random weights (gains near 1) so every term of the forward pass matters."""
    for variable in model.weights:
        value = rng.normal(0.0, 0.4, variable.shape)
        if variable.path.endswith("gamma"):
            value = 1.0 + 0.5 * value
        variable.assign(value.astype("float32"))
    return model


def _build(rng, family, **kwargs):
    return _randomize(build_transformer_model(CONFIG, model=family, **kwargs), rng)


# ---------------------------------------------------------------- numpy reference
_erf = np.vectorize(math.erf)


def np_gelu(x, tanh=False):
    if tanh:  # GPT-2's gelu_new
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def np_norm(x, weights, eps):
    beta, gamma = weights
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def np_causal_attention(x, weights, heads, key_is_real):
    """Query i attends keys j <= i that are real tokens, softmax per head."""
    wq, bq, wk, bk, wv, bv, wo, bo = weights
    n, size = len(x), wq.shape[1] // heads
    q = (x @ wq + bq).reshape(n, heads, size)
    k = (x @ wk + bk).reshape(n, heads, size)
    v = (x @ wv + bv).reshape(n, heads, size)
    out = np.zeros((n, heads, size))
    for h in range(heads):
        for i in range(n):
            keys = [j for j in range(i + 1) if key_is_real[j]]
            logits = np.array([q[i, h] @ k[j, h] for j in keys]) / math.sqrt(size)
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            out[i, h] = sum(p * v[j, h] for p, j in zip(probs, keys, strict=True))
    return out.reshape(n, heads * size) @ wo + bo


def np_language_model(model, ids, segments=None, layout="post", eps=1e-5, tanh=False, pad=0):
    """Logits of one model, one sequence at a time.

    layout: "post" (GPT: x = LN(x + f(x)) around attention and feed-forward),
    "pre" (GPT-2: x = x + f(LN(x)), final LayerNorm), "grover" (GPT2-ML:
    h = x + Att(x); x = LN1(h + FFN(LN0(h))), LayerNorm on the embeddings).
    """
    w = {layer.name: layer.get_weights() for layer in model.layers}
    table = w["Embedding-Token"][0]
    heads = CONFIG["num_attention_heads"]
    outputs = []
    for row, row_ids in enumerate(ids):
        n = len(row_ids)
        x = table[row_ids] + w["Embedding-Position"][0][:n]
        if segments is not None:
            x = x + w["Embedding-Segment"][0][segments[row]]
        if layout == "grover":
            x = np_norm(x, w["Embedding-Norm"], eps)
        real = row_ids != pad if pad is not None else np.ones(n, bool)

        def ffn(h, index):
            wi, bi, wo, bo = w[f"Transformer-{index}-FeedForward"]
            return np_gelu(h @ wi + bi, tanh) @ wo + bo

        for i in range(CONFIG["num_hidden_layers"]):
            att = w[f"Transformer-{i}-MultiHeadSelfAttention"]
            att_norm = w.get(f"Transformer-{i}-MultiHeadSelfAttention-Norm")
            if layout == "pre":
                x = x + np_causal_attention(np_norm(x, att_norm, eps), att, heads, real)
                x = x + ffn(np_norm(x, w[f"Transformer-{i}-FeedForward-Norm"], eps), i)
            elif layout == "post":
                x = np_norm(x + np_causal_attention(x, att, heads, real), att_norm, eps)
                x = np_norm(x + ffn(x, i), w[f"Transformer-{i}-FeedForward-Norm"], eps)
            else:
                h = x + np_causal_attention(x, att, heads, real)
                inner = ffn(np_norm(h, w[f"Transformer-{i}-FeedForward-Norm-0"], eps), i)
                x = np_norm(h + inner, w[f"Transformer-{i}-FeedForward-Norm-1"], eps)
        if layout == "pre":
            x = np_norm(x, w["Output-Norm"], eps)
        outputs.append(x @ table.T)
    return np.stack(outputs)


@pytest.mark.parametrize(
    "family, layout, options",
    [
        ("gpt", "post", {}),
        ("gpt2", "pre", {"hidden_act": "gelu_new"}),
        ("gpt2_ml", "grover", {}),
    ],
)
def test_logits_match_numpy_reference(family, layout, options, rng):
    model = _build(rng, family, final_activation="linear", **options)
    ids = rng.integers(1, CONFIG["vocab_size"], (3, 9)).astype("int32")
    ids[2, 6:] = 0  # right padding (GPT, GPT2-ML mask id 0; GPT-2 masks nothing)
    segments = None
    inputs = ids
    if family == "gpt":
        segments = (np.arange(9) >= 4).astype("int32")[None].repeat(3, 0)
        inputs = [ids, segments]
    ours = model.predict(inputs, verbose=0)
    ref = np_language_model(
        model,
        ids,
        segments,
        layout,
        tanh=options.get("hidden_act") == "gelu_new",
        pad=None if family == "gpt2" else 0,
    )
    keep = ids != 0
    assert np.abs(ours - ref)[keep].max() <= TOL * max(1.0, np.abs(ref).max())
    # Default head: probabilities over the vocabulary.
    probs = build_transformer_model(CONFIG, model=family, **options)
    probs.set_weights(model.get_weights())
    p = probs.predict(inputs, verbose=0)
    np.testing.assert_allclose(p[keep].sum(-1), 1.0, atol=1e-5)


# ---------------------------------------------------------------- structure
def test_layer_names_inputs_and_outputs():
    expected = {
        "gpt": (
            ["Input-Token", "Input-Segment"],
            ["Embedding-Segment", "Transformer-1-FeedForward-Norm", "LM-Activation"],
            ["Embedding-Norm", "Output-Norm"],
        ),
        "gpt2": (
            ["Input-Token"],
            ["Transformer-0-MultiHeadSelfAttention-Norm", "Output-Norm", "LM-Activation"],
            ["Embedding-Segment", "Embedding-Norm"],
        ),
        "gpt2_ml": (
            ["Input-Token"],
            [
                "Embedding-Norm",
                "Transformer-1-FeedForward-Norm-0",
                "Transformer-1-FeedForward-Norm-1",
            ],
            ["Embedding-Segment", "Transformer-0-MultiHeadSelfAttention-Norm", "Output-Norm"],
        ),
    }
    for family, (inputs, present, absent) in expected.items():
        model = build_transformer_model(CONFIG, model=family)
        names = [layer.name for layer in model.layers]
        assert [i.name for i in model.inputs] == inputs
        assert "Attention-LM-Mask" in names  # an LM whatever `application` says
        assert all(name in names for name in present), family
        assert not any(name in names for name in absent), family
        assert tuple(model.output.shape) == (None, None, CONFIG["vocab_size"])
        # The LM head is the token table itself (tied), used twice.
        assert names.count("Embedding-Token") == 1


@pytest.mark.parametrize("family", ["gpt", "gpt2", "gpt2_ml"])
def test_output_at_t_ignores_later_tokens(family, rng):
    model = _build(rng, family, final_activation="linear")
    ids = rng.integers(1, CONFIG["vocab_size"], (2, 10)).astype("int32")
    inputs = (lambda x: [x, np.zeros_like(x)]) if family == "gpt" else (lambda x: x)
    base = model.predict(inputs(ids), verbose=0)
    for t in (0, 5):
        changed = ids.copy()
        changed[:, t + 1 :] = ids[:, t + 1 :] % (CONFIG["vocab_size"] - 1) + 1
        out = model.predict(inputs(changed), verbose=0)
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-4)
        assert np.abs(out[:, t + 1 :] - base[:, t + 1 :]).max() > 1e-3


def test_gpt_unilm_and_errors():
    builder = build_transformer_model(
        CONFIG, model="gpt", application="unilm", return_keras_model=False
    )
    assert builder.application == "unilm"
    with pytest.raises(ValueError, match=r"application='unilm' needs segment ids"):
        build_transformer_model(CONFIG, model="gpt2", application="unilm")
    # A decoder-only model has no BERT heads to switch on.
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['with_mlm'\] for model GPT"):
        build_transformer_model(CONFIG, model="gpt", with_mlm=True)
    with pytest.raises(ValueError, match=r"GPT2: untied LM heads"):
        build_transformer_model(CONFIG, model="gpt2", tie_word_embeddings=False)
    with pytest.raises(ValueError, match=r"embedding_size == hidden_size, got 8 and 12"):
        build_transformer_model(CONFIG, model="gpt2_ml", embedding_size=8)
    with pytest.raises(ValueError, match=r"scale_attn_by_inverse_layer_idx=False"):
        build_transformer_model(CONFIG, model="gpt2", scale_attn_by_inverse_layer_idx=True)


def test_gpt2_intermediate_size_defaults_and_no_segments():
    config = {k: v for k, v in CONFIG.items() if k != "intermediate_size"}
    builder = build_transformer_model(
        config, model="gpt2", segment_vocab_size=2, return_keras_model=False
    )
    assert builder.intermediate_size == 4 * CONFIG["hidden_size"]
    assert builder.segment_vocab_size == 0 and builder.pad_token_id is None


# ---------------------------------------------------------------- checkpoints
def test_gpt2_ml_bert4keras_names_round_trip(rng, tmp_path):
    builder = build_transformer_model(CONFIG, model="gpt2_ml", return_keras_model=False)
    _randomize(builder.model, rng)
    prefix = builder.save_weights_as_checkpoint(str(tmp_path / "model.ckpt"))
    with open_checkpoint(prefix) as reader:
        names = set(reader.names())
    for name in [
        "newslm/embeddings/word_embed",
        "newslm/embeddings/LayerNorm_embed_norm/gamma",
        "newslm/layer01/query_layer/kernel",
        "newslm/layer01/context_projection_layer/bias",
        "newslm/layer00/LayerNorm_mlp_ln1/beta",
    ]:
        assert name in names
    assert len(names) == 2 + 2 + 2 * (8 + 4 + 4)
    ids = rng.integers(1, CONFIG["vocab_size"], (2, 7)).astype("int32")
    loaded = build_transformer_model(CONFIG, prefix, model="gpt2_ml")
    np.testing.assert_allclose(
        loaded.predict(ids, verbose=0), builder.model.predict(ids, verbose=0), atol=1e-6
    )
    # Loading stays strict: a missing tensor is named.
    with open_checkpoint(prefix) as reader:
        tensors = {n: reader.get(n) for n in reader.names()}
    del tensors["newslm/layer01/LayerNorm_mlp_ln0/gamma"]
    broken = save_checkpoint(tensors, str(tmp_path / "broken" / "model.ckpt"), format="tf")
    with pytest.raises(
        WeightLoadingError, match="missing tensor 'newslm/layer01/LayerNorm_mlp_ln0/gamma'"
    ):
        build_transformer_model(CONFIG, broken, model="gpt2_ml")
    # GPT2-ML has no HF names to write safetensors under.
    with pytest.raises(ValueError, match="cannot save as safetensors"):
        builder.save_weights_as_checkpoint(str(tmp_path / "model.safetensors"))


def test_gpt2_keras_save_and_keep_tokens(rng, tmp_path):
    builder = build_transformer_model(CONFIG, model="gpt2", return_keras_model=False)
    _randomize(builder.model, rng)
    ids = rng.integers(1, CONFIG["vocab_size"], (2, 7)).astype("int32")
    path = str(tmp_path / "gpt2.keras")
    builder.model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(
        restored.predict(ids, verbose=0), builder.model.predict(ids, verbose=0), atol=1e-6
    )
    # keep_tokens prunes the tied table, so the LM head predicts the kept ids only.
    weights = builder.save_weights_as_checkpoint(str(tmp_path / "model.safetensors"))
    keep = [0, 3, 4, 9, 20, 44]
    small = build_transformer_model(
        CONFIG, weights, model="gpt2", keep_tokens=keep, final_activation="linear"
    )
    full = build_transformer_model(CONFIG, weights, model="gpt2", final_activation="linear")
    old_ids = np.array([[3, 9, 44, 20]], "int32")
    new_ids = np.array([[keep.index(i) for i in old_ids[0]]], "int32")
    np.testing.assert_allclose(
        small.predict(new_ids, verbose=0),
        full.predict(old_ids, verbose=0)[..., keep],
        atol=1e-5,
    )


def _fused_mapping(builder, hook=None):
    """BERT's Google names, but q/k/v of every attention layer fused in one tensor."""
    mapping = dict(builder.variable_mapping())
    for i in range(CONFIG["num_hidden_layers"]):
        layer = f"Transformer-{i}-MultiHeadSelfAttention"
        fused = {
            f"{dense}/{kind}": (
                f"fused/layer_{i}/qkv/{kind}",
                FusedPart(part, 3, hook=hook if kind == "kernel" else None),
            )
            for part, dense in enumerate(("q_dense", "k_dense", "v_dense"))
            for kind in ("kernel", "bias")
        }
        mapping[layer] = {**mapping[layer], **fused}
    return mapping


@pytest.mark.parametrize("hook", [None, "transpose"])
def test_fused_part_writes_one_tensor_and_reads_it_back(hook, rng, tmp_path):
    builder = build_transformer_model(CONFIG, return_keras_model=False)
    _randomize(builder.model, rng)
    mapping = _fused_mapping(builder, hook)
    path = builder.save_weights_as_checkpoint(str(tmp_path / "fused.safetensors"), mapping=mapping)
    attention = builder.model.get_layer("Transformer-1-MultiHeadSelfAttention")
    kernels = [
        keras.ops.convert_to_numpy(d.kernel)
        for d in (attention.q_dense, attention.k_dense, attention.v_dense)
    ]
    biases = [
        keras.ops.convert_to_numpy(d.bias)
        for d in (attention.q_dense, attention.k_dense, attention.v_dense)
    ]
    expected = np.concatenate(kernels, axis=-1)  # (in, 3 * out), Conv1D layout
    with open_checkpoint(path) as reader:
        fused_kernel = reader.get("fused/layer_1/qkv/kernel")
        np.testing.assert_array_equal(reader.get("fused/layer_1/qkv/bias"), np.concatenate(biases))
        assert not any("attention/self/query" in n for n in reader.names())
    np.testing.assert_array_equal(fused_kernel, expected.T if hook else expected)

    other = build_transformer_model(CONFIG, return_keras_model=False)
    other.load_weights_from_checkpoint(path, mapping=mapping)
    ids = rng.integers(1, CONFIG["vocab_size"], (2, 6)).astype("int32")
    seg = np.zeros_like(ids)
    np.testing.assert_allclose(
        other.model.predict([ids, seg], verbose=0),
        builder.model.predict([ids, seg], verbose=0),
        atol=1e-6,
    )


def test_fused_part_errors(rng, tmp_path):
    builder = build_transformer_model(CONFIG, return_keras_model=False)
    mapping = _fused_mapping(builder)
    # Only two of the three parts mapped: saving cannot rebuild the tensor.
    broken = dict(mapping)
    broken["Transformer-0-MultiHeadSelfAttention"] = {
        path: ("fused/layer_0/qkv/kernel", FusedPart(i % 2, 3)) if i % 2 == 0 else e
        for i, (path, e) in enumerate(mapping["Transformer-0-MultiHeadSelfAttention"].items())
    }
    with pytest.raises(ValueError, match=r"fused tensor 'fused/layer_0/qkv/kernel'.* not \[1, 2\]"):
        builder.save_weights_as_checkpoint(str(tmp_path / "x.safetensors"), mapping=broken)
    # A fused tensor that does not split evenly is a named loading error.
    path = builder.save_weights_as_checkpoint(str(tmp_path / "ok.safetensors"), mapping=mapping)
    five = {
        layer: {
            path: (e[0], FusedPart(e[1].index, 5))
            if isinstance(e, tuple) and isinstance(e[1], FusedPart)
            else e
            for path, e in entries.items()
        }
        for layer, entries in mapping.items()
    }
    other = build_transformer_model(CONFIG, return_keras_model=False)
    with pytest.raises(
        WeightLoadingError,
        match=r"tensor 'fused/layer_0/qkv/kernel' for .*: axis -1 has length 36, which does "
        r"not split into 5 equal parts",
    ):
        other.load_weights_from_checkpoint(path, mapping=five)


def test_decoder_only_untied_head_is_a_hook():
    """A family with its own LM head sets `untied_head`; GPT-2 itself refuses one."""
    from kerasformers.generation import generate
    from kerasformers.models import GPT2
    from tests.conftest import TINY, randomize_weights

    with pytest.raises(ValueError, match="untied LM heads"):
        build_transformer_model(dict(TINY), model="gpt2", tie_word_embeddings=False)

    class UntiedGPT2(GPT2):
        untied_head = True

    model = build_transformer_model(
        dict(TINY), model=UntiedGPT2, tie_word_embeddings=False, final_activation="linear"
    )
    randomize_weights(model, 3)
    assert tuple(model.get_layer("LM-Head").kernel.shape) == (TINY["hidden_size"], 97)
    ids = [[5, 17, 33]]
    tokens = list(ids[0])
    for _ in range(4):
        logits = keras.ops.convert_to_numpy(model.predict_on_batch(np.array([tokens])))
        tokens.append(int(logits[0, -1].argmax()))
    assert generate(model, ids, max_new_tokens=4) == [tokens[3:]]
