"""Generation options against HF transformers' `generate` (live): repetition
penalty and lists of end ids, greedy and 4-beam search, GPT-2 and T5.

Random tiny HF models (odd sizes, perturbed so every weight matters) are
loaded from their safetensors. A ragged batch of 3 prompts goes through our
`generate` in one batch; HF generates each prompt alone, unpadded (so its
repetition penalty sees exactly the prompt, and for T5 the decoder's start
token). HF applies the penalty to the raw logits in greedy search and to the
log-probabilities in beam search; outputs must be equal token for token, with
a penalty above 1 (1.3) and below 1 (0.7, which favours repeats), and with
end_id a list of two ids the model really produces (HF's list eos_token_id).
"""

import itertools
import os

import numpy as np
import pytest

from kerasformers.generation import generate
from kerasformers.models import build_transformer_model
from tests.parity.hf_helpers import hf_generate_each, perturb_

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

NEW = 10


def _load(hf, directory, model):
    hf.save_pretrained(directory)
    return build_transformer_model(
        os.path.join(directory, "config.json"),
        os.path.join(directory, "model.safetensors"),
        model=model,
    )


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    config = transformers.GPT2Config(
        vocab_size=211,
        n_embd=36,
        n_layer=2,
        n_head=3,
        n_positions=40,
        n_inner=70,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
    )
    hf = perturb_(transformers.GPT2LMHeadModel(config), seed=9).eval()
    ours = _load(hf, str(tmp_path_factory.mktemp("gpt2_options")), "gpt2")
    rng = np.random.default_rng(21)
    # Prompts with repeats, so the penalty has prompt tokens to act on.
    prompts = [rng.integers(1, 211, n).tolist() for n in (6, 1, 9)]
    prompts[2][4:6] = prompts[2][:2]
    return hf, ours, prompts, None


@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    config = transformers.T5Config(
        vocab_size=203,
        d_model=36,
        d_kv=10,
        d_ff=50,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=3,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=20,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    hf = perturb_(transformers.T5ForConditionalGeneration(config), seed=4).eval()
    ours = _load(hf, str(tmp_path_factory.mktemp("t5_options")), "t5.1.1")
    rng = np.random.default_rng(8)
    prompts = [rng.integers(2, 203, n).tolist() for n in (5, 8, 2)]
    return hf, ours, prompts, 1  # T5's output starts with the decoder start token


def _hf_generate(hf, prompts, skip, end_ids=None, **kwargs):
    return hf_generate_each(hf, prompts, NEW, end_ids=end_ids, skip=skip, **kwargs)


def _with_end_ids(hf, prompts, skip, rows, **kwargs):
    """Two ids the model really produces, as end ids: (ids, HF rows).

    Chosen so that rows end at different steps, or failing that (beams with a
    penalty below 1 would rather repeat than end) so that the end ids at
    least change the output.
    """
    early = list(
        dict.fromkeys(t for step in range(4) for row in rows for t in row[step : step + 1])
    )
    fallback = None
    for pair in itertools.combinations(early, 2):
        reference = _hf_generate(hf, prompts, skip, list(pair), **kwargs)
        lengths = [len(row) for row in reference]
        if min(lengths) < NEW and len(set(lengths)) > 1:
            return list(pair), reference
        if fallback is None and reference != rows:
            fallback = list(pair), reference
    assert fallback is not None, f"no pair of {early} changes the output"
    return fallback


@pytest.mark.parametrize("family", ["gpt2", "t5"])
@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_repetition_penalty_and_end_id_lists_equal_hf(family, method, request):
    hf, model, prompts, skip = request.getfixturevalue(family)
    beams = {"num_beams": 4} if method == "beam" else {}
    kwargs = dict(max_new_tokens=NEW, method=method, **beams)
    plain = _hf_generate(hf, prompts, skip, **beams)
    # 0.7 < 1 favours the tokens already seen; both with two end ids that the
    # penalised model really produces (one compile: the values are inputs).
    for penalty in (0.7, 1.3):
        penalised = _hf_generate(hf, prompts, skip, repetition_penalty=penalty, **beams)
        assert penalised != plain, penalty  # the penalty changes the output
        end_ids, reference = _with_end_ids(
            hf, prompts, skip, penalised, repetition_penalty=penalty, **beams
        )
        ours = generate(model, prompts, end_id=end_ids, repetition_penalty=penalty, **kwargs)
        assert ours == reference, penalty
