"""ALBERT, ELECTRA and RoFormer against HF transformers (live), float32, tolerance 1e-4.

Each random tiny model (odd sizes: hidden 48 = 3 heads x 16, intermediate 100,
embedding 20, vocab 333) is loaded from HF safetensors and from a Google-style TF
checkpoint written by our writer under the original names; our safetensors load
back into transformers with the same outputs.
"""

import os

import numpy as np
import pytest

from kerasformers.checkpoints import open_checkpoint
from kerasformers.models import build_transformer_model
from tests.parity.hf_helpers import hf_outputs, max_masked_diff, perturb_, ragged_batch

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4
LENGTHS = [7, 13, 3, 13]
SIZES = dict(
    vocab_size=333,
    hidden_size=48,
    num_hidden_layers=3,
    num_attention_heads=3,
    intermediate_size=100,
    embedding_size=20,
    max_position_embeddings=40,
    type_vocab_size=2,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def _albert_refs(hf, out, inputs):
    pooled = hf.albert(**inputs).pooler_output
    return {
        "pool": pooled.numpy(),
        "heads": [out.sop_logits.numpy(), out.prediction_logits.numpy()],
    }


# name -> (HF class, config class, config overrides, our model, our head kwargs,
#          reference heads from the HF output, a Google name our writer must produce)
CASES = {
    "albert": (
        "AlbertForPreTraining",
        "AlbertConfig",
        {"hidden_act": "gelu_new"},
        "albert",
        {"with_pool": True, "with_nsp": "linear", "with_mlm": "linear"},
        _albert_refs,
        "bert/encoder/transformer/group_0/inner_group_0/ffn_1/intermediate/dense/kernel",
    ),
    "electra_discriminator": (
        "ElectraForPreTraining",
        "ElectraConfig",
        {"hidden_act": "relu"},
        "electra",
        {"with_discriminator": "linear"},
        lambda hf, out, inputs: {"heads": [out.logits.numpy()[..., None]]},
        # Google's ELECTRA name (HF's conversion renames it dense_prediction).
        "discriminator_predictions/dense_1/kernel",
    ),
    "electra_generator": (
        "ElectraForMaskedLM",
        "ElectraConfig",
        {"hidden_act": "relu"},  # the generator head still uses GELU, as HF does
        "electra",
        {"with_mlm": "linear"},
        lambda hf, out, inputs: {"heads": [out.logits.numpy()]},
        "generator_predictions/output_bias",
    ),
    "roformer": (
        "RoFormerForMaskedLM",
        "RoFormerConfig",
        {"hidden_act": "gelu"},
        "roformer",
        {"with_mlm": "linear"},
        lambda hf, out, inputs: {"heads": [out.logits.numpy()]},
        "bert/encoder/layer_2/attention/self/query/kernel",
    ),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    hf_cls, config_cls, overrides, model, heads, refs, google_name = CASES[request.param]
    config = getattr(transformers, config_cls)(**{**SIZES, **overrides})
    hf = perturb_(getattr(transformers, hf_cls)(config), seed=11)
    directory = str(tmp_path_factory.mktemp(request.param))
    hf.save_pretrained(directory)
    ids, segments, mask = ragged_batch(np.random.default_rng(7), 333, LENGTHS)
    inputs = {
        "input_ids": torch.as_tensor(ids, dtype=torch.long),
        "token_type_ids": torch.as_tensor(segments, dtype=torch.long),
        "attention_mask": torch.as_tensor(mask, dtype=torch.long),
    }
    out = hf_outputs(hf, ids, segments, mask)
    with torch.no_grad():
        ref = refs(hf, out, inputs)
    ref["sequence"] = out.hidden_states[-1].numpy()
    return dict(
        name=request.param,
        hf=hf,
        model=model,
        heads=heads,
        google_name=google_name,
        config=os.path.join(directory, "config.json"),
        weights=os.path.join(directory, "model.safetensors"),
        ids=ids,
        segments=segments,
        mask=mask,
        ref=ref,
    )


def _predict(model, case):
    out = model.predict([case["ids"], case["segments"]], verbose=0)
    return out if isinstance(out, list) else [out]


def _close(ours, ref, mask):
    if ours.ndim >= 3:  # sequence outputs: compare real tokens only
        return max_masked_diff(ours, ref, mask)
    return float(np.max(np.abs(ours - ref)))


def _check(case, checkpoint):
    mask = case["mask"]
    encoder = build_transformer_model(case["config"], checkpoint, model=case["model"])
    (seq,) = _predict(encoder, case)
    assert max_masked_diff(seq, case["ref"]["sequence"], mask) <= TOL

    with_heads = build_transformer_model(
        case["config"], checkpoint, model=case["model"], **case["heads"]
    )
    outputs = _predict(with_heads, case)
    assert len(outputs) == len(case["ref"]["heads"])
    for ours, ref in zip(outputs, case["ref"]["heads"], strict=True):
        assert ours.shape == ref.shape
        assert _close(ours, ref, mask) <= TOL

    if "pool" in case["ref"]:
        pool = build_transformer_model(
            case["config"], checkpoint, model=case["model"], with_pool=True
        )
        (pooled,) = _predict(pool, case)
        assert np.max(np.abs(pooled - case["ref"]["pool"])) <= TOL


def test_from_hf_safetensors(case):
    _check(case, case["weights"])


def test_from_google_checkpoint_written_by_us(case, tmp_path):
    builder = build_transformer_model(
        case["config"],
        case["weights"],
        model=case["model"],
        return_keras_model=False,
        **case["heads"],
    )
    prefix = str(tmp_path / "model.ckpt")
    builder.save_weights_as_checkpoint(prefix)
    with open_checkpoint(prefix) as reader:
        assert case["google_name"] in reader.names()
    _check(case, prefix)


def test_our_safetensors_load_in_transformers(case, tmp_path):
    builder = build_transformer_model(
        case["config"],
        case["weights"],
        model=case["model"],
        return_keras_model=False,
        **case["heads"],
    )
    builder.save_weights_as_checkpoint(str(tmp_path / "model.safetensors"))
    case["hf"].config.save_pretrained(str(tmp_path))
    reloaded = type(case["hf"]).from_pretrained(str(tmp_path)).eval()
    again = hf_outputs(reloaded, case["ids"], case["segments"], case["mask"])
    assert (
        max_masked_diff(again.hidden_states[-1].numpy(), case["ref"]["sequence"], case["mask"])
        <= TOL
    )
    logits = again.logits if hasattr(again, "logits") else again.prediction_logits
    first = case["ref"]["heads"][-1]
    assert _close(logits.numpy().reshape(first.shape), first, case["mask"]) <= TOL
