"""Generation against HF transformers' `generate` (live): GPT-2 greedy and beam search.

A random tiny GPT2LMHeadModel with odd sizes (n_embd 48 = 3 heads x 16,
n_inner 100, vocab 333, 3 layers), perturbed so every weight matters, is
loaded from its safetensors. Several prompts of different lengths go through
our `generate` in ONE ragged batch; HF generates each prompt alone (no padding
at all), so its output is the reference for our left-padded, cached, batched
decoding. Outputs must be equal token for token: greedy, and 4-beam search
with HF's default length penalty 1.0, with and without an end token that the
model really produces (so beams finish at different lengths).
"""

import os

import numpy as np
import pytest

from kerasformers.generation import generate
from kerasformers.models import build_transformer_model
from tests.parity.hf_helpers import hf_generate_each, perturb_

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

NEW = 12
PROMPT_LENGTHS = (6, 1, 11, 3)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    config = transformers.GPT2Config(
        vocab_size=333,
        n_embd=48,
        n_layer=3,
        n_head=3,
        n_positions=40,
        n_inner=100,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
    )
    hf = perturb_(transformers.GPT2LMHeadModel(config), seed=7).eval()
    directory = str(tmp_path_factory.mktemp("gpt2_generate"))
    hf.save_pretrained(directory)
    ours = build_transformer_model(
        os.path.join(directory, "config.json"),
        os.path.join(directory, "model.safetensors"),
        model="gpt2",
    )
    rng = np.random.default_rng(11)
    prompts = [rng.integers(0, 333, n).tolist() for n in PROMPT_LENGTHS]
    return hf, ours, prompts


def _hf_generate(hf, prompts, end_id=None, skip=None, **kwargs):
    return hf_generate_each(hf, prompts, NEW, end_ids=end_id, skip=skip, **kwargs)


def test_greedy_equals_hf(gpt2):
    hf, ours, prompts = gpt2
    reference = _hf_generate(hf, prompts)
    assert generate(ours, prompts, max_new_tokens=NEW) == reference
    end_id = reference[0][3]
    reference = _hf_generate(hf, prompts, end_id=end_id)
    assert len(reference[0]) <= 3  # the end token really ends row 0 early
    assert generate(ours, prompts, max_new_tokens=NEW, end_id=end_id) == reference


def test_beam_search_equals_hf(gpt2):
    hf, ours, prompts = gpt2
    reference = _hf_generate(hf, prompts, num_beams=4)
    ours_rows = generate(ours, prompts, max_new_tokens=NEW, method="beam", num_beams=4)
    assert ours_rows == reference
    # With an end token the beams finish at different lengths and the length
    # penalty decides between them.
    end_id = reference[2][4]
    reference = _hf_generate(hf, prompts, end_id=end_id, num_beams=4)
    assert any(len(row) < NEW for row in reference)
    ours_rows = generate(
        ours, prompts, max_new_tokens=NEW, method="beam", num_beams=4, end_id=end_id
    )
    assert ours_rows == reference
    for penalty in (0.0, 2.0):
        reference = _hf_generate(hf, prompts, end_id=end_id, num_beams=3, length_penalty=penalty)
        ours_rows = generate(
            ours,
            prompts,
            max_new_tokens=NEW,
            method="beam",
            num_beams=3,
            end_id=end_id,
            length_penalty=penalty,
        )
        assert ours_rows == reference, penalty


def test_min_new_tokens_equals_hf(gpt2):
    hf, ours, prompts = gpt2
    end_id = _hf_generate(hf, prompts)[1][0]  # row 1 would end at once
    reference = _hf_generate(hf, prompts, end_id=end_id, min_new_tokens=4)
    assert len(reference[1]) >= 4
    ours_rows = generate(ours, prompts, max_new_tokens=NEW, end_id=end_id, min_new_tokens=4)
    assert ours_rows == reference


T5_VERSIONS = {"t5.1.1": ("gated-gelu", False), "t5.1.0": ("relu", True)}


@pytest.fixture(scope="module", params=sorted(T5_VERSIONS))
def t5(request, tmp_path_factory):
    """Random tiny T5ForConditionalGeneration (odd sizes), both T5 versions.

    Encoder and decoder have the same depth: transformers' cache for
    generate() sizes itself by num_layers and breaks otherwise.
    """
    version = request.param
    projection, tied = T5_VERSIONS[version]
    config = transformers.T5Config(
        vocab_size=301,
        d_model=36,
        d_kv=10,
        d_ff=50,
        num_layers=3,
        num_decoder_layers=3,
        num_heads=3,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=20,
        dropout_rate=0.0,
        feed_forward_proj=projection,
        tie_word_embeddings=tied,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    hf = perturb_(transformers.T5ForConditionalGeneration(config), seed=3).eval()
    directory = str(tmp_path_factory.mktemp(version))
    hf.save_pretrained(directory)
    ours = build_transformer_model(
        os.path.join(directory, "config.json"),
        os.path.join(directory, "model.safetensors"),
        model=version,
    )
    rng = np.random.default_rng(5)
    prompts = [rng.integers(2, 301, n).tolist() for n in (5, 9, 2)]
    return hf, ours, prompts


def test_t5_greedy_and_beam_equal_hf(t5):
    hf, ours, prompts = t5
    reference = _hf_generate(hf, prompts, None, skip=1)
    assert generate(ours, prompts, max_new_tokens=NEW) == reference
    end_id = reference[1][2]
    reference = _hf_generate(hf, prompts, end_id, skip=1)
    assert len(reference[1]) <= 2
    assert generate(ours, prompts, max_new_tokens=NEW, end_id=end_id) == reference
    for end in (None, end_id):
        reference = _hf_generate(hf, prompts, end, skip=1, num_beams=4)
        beams = generate(ours, prompts, max_new_tokens=NEW, method="beam", num_beams=4, end_id=end)
        assert beams == reference, end


def test_t5_rejects_segment_ids(t5):
    _, ours, prompts = t5
    with pytest.raises(ValueError, match="has no segment input"):
        generate(ours, prompts, segment_ids=[[0] * len(p) for p in prompts])
