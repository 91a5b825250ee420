"""GPT-2 and GPT (OpenAI GPT / CDial-GPT layout) against HF transformers (live).

Random tiny models with odd sizes (n_embd 48 = 3 heads x 16, n_inner 100,
vocab 333, 3 layers), perturbed so every LayerNorm and bias matters, are loaded
from HF safetensors; logits must agree within 1e-4 (float32) on real tokens of
a ragged right-padded batch. Our safetensors (GPT's fused c_attn written back
from our q/k/v) load in transformers with the same logits, and the
bert4keras-named TF checkpoint our writer produces loads back to the same logits.
"""

import os

import numpy as np
import pytest

from kerasformers.checkpoints import open_checkpoint
from kerasformers.models import build_transformer_model
from tests.parity.hf_helpers import max_masked_diff, perturb_, ragged_batch

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4
LENGTHS = [7, 13, 3, 13]
SIZES = dict(vocab_size=333, n_embd=48, n_layer=3, n_head=3, n_positions=40)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _hf_logits(hf, ids, mask, segments=None):
    with torch.no_grad():
        out = hf(
            input_ids=torch.as_tensor(ids, dtype=torch.long),
            attention_mask=torch.as_tensor(mask, dtype=torch.long),
            token_type_ids=None if segments is None else torch.as_tensor(segments),
        )
    return out.logits.numpy()


def _make_case(tmp_path_factory, name, hf_cls, config):
    hf = perturb_(getattr(transformers, hf_cls)(config), seed=5)
    directory = str(tmp_path_factory.mktemp(name))
    hf.save_pretrained(directory)
    ids, _, mask = ragged_batch(np.random.default_rng(3), 333, LENGTHS)
    # GPT-2 has no padding token: id 0 ("!") inside a text is a real token.
    ids[0, 2] = 0
    return dict(
        hf=hf,
        dir=directory,
        config=os.path.join(directory, "config.json"),
        weights=os.path.join(directory, "model.safetensors"),
        ids=ids,
        mask=mask,
    )


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    config = transformers.GPT2Config(
        **SIZES, n_inner=100, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0
    )
    case = _make_case(tmp_path_factory, "gpt2", "GPT2LMHeadModel", config)
    case["ref"] = _hf_logits(case["hf"], case["ids"], case["mask"])
    return case


@pytest.fixture(scope="module")
def openai_gpt(tmp_path_factory):
    """CDial-GPT's layout: OpenAIGPTLMHeadModel fed speaker tokens as token types."""
    config = transformers.OpenAIGPTConfig(**SIZES, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    case = _make_case(tmp_path_factory, "openai_gpt", "OpenAIGPTLMHeadModel", config)
    case["ids"][0, 2] = 7  # GPT's pad id stays 0: keep the batch free of it
    speakers = np.where(np.arange(case["ids"].shape[1]) % 4 < 2, 1, 2)  # two speaker ids
    case["segments"] = np.broadcast_to(speakers, case["ids"].shape).astype("int32").copy()
    case["ref"] = _hf_logits(case["hf"], case["ids"], case["mask"], case["segments"])
    return case


def _inputs(case):
    return [case["ids"], case["segments"]] if "segments" in case else case["ids"]


def _ours(case, checkpoint, model, **kwargs):
    keras_model = build_transformer_model(case["config"], checkpoint, model=model, **kwargs)
    return keras_model.predict(_inputs(case), verbose=0)


@pytest.mark.parametrize("name, model", [("gpt2", "gpt2"), ("openai_gpt", "gpt")])
def test_logits_and_probabilities_from_hf_safetensors(request, name, model):
    case = request.getfixturevalue(name)
    logits = _ours(case, case["weights"], model, final_activation="linear")
    assert logits.shape == case["ref"].shape
    assert max_masked_diff(logits, case["ref"], case["mask"]) <= TOL
    probs = _ours(case, case["weights"], model)  # default: softmax
    assert max_masked_diff(probs, _softmax(case["ref"]), case["mask"]) <= TOL


@pytest.mark.parametrize("name, model", [("gpt2", "gpt2"), ("openai_gpt", "gpt")])
def test_our_safetensors_fuse_c_attn_and_load_in_transformers(request, tmp_path, name, model):
    case = request.getfixturevalue(name)
    builder = build_transformer_model(
        case["config"], case["weights"], model=model, return_keras_model=False
    )
    path = builder.save_weights_as_checkpoint(str(tmp_path / "model.safetensors"))
    with open_checkpoint(path) as reader:
        names = set(reader.names())
        fused = reader.get("transformer.h.1.attn.c_attn.weight")
    with open_checkpoint(case["weights"]) as reader:
        expected = reader.get("transformer.h.1.attn.c_attn.weight")
        assert names == set(reader.names())  # the same tensors HF wrote, no more, no less
    np.testing.assert_array_equal(fused, expected)  # (48, 144): [q | k | v] exactly restored

    case["hf"].config.save_pretrained(str(tmp_path))
    reloaded = type(case["hf"]).from_pretrained(str(tmp_path)).eval()
    again = _hf_logits(reloaded, case["ids"], case["mask"], case.get("segments"))
    assert max_masked_diff(again, case["ref"], case["mask"]) <= TOL


@pytest.mark.parametrize(
    "name, model, google_name",
    [
        ("gpt2", "gpt2", "gpt/transformer/layer_2/input/LayerNorm/gamma"),
        ("openai_gpt", "gpt", "gpt/transformer/layer_2/attention/output/LayerNorm/gamma"),
    ],
)
def test_bert4keras_names_round_trip(request, tmp_path, name, model, google_name):
    case = request.getfixturevalue(name)
    builder = build_transformer_model(
        case["config"], case["weights"], model=model, return_keras_model=False
    )
    prefix = builder.save_weights_as_checkpoint(str(tmp_path / "model.ckpt"))
    with open_checkpoint(prefix) as reader:
        names = set(reader.names())
    assert google_name in names
    assert "gpt/embeddings/word_embeddings" in names
    assert ("gpt/output/LayerNorm/beta" in names) == (model == "gpt2")
    logits = _ours(case, prefix, model, final_activation="linear")
    assert max_masked_diff(logits, case["ref"], case["mask"]) <= TOL
