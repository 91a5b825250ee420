"""Cached generation (`kerasformers.generation.generate`) on every decoder family.

The reference is full recomputation without a cache: each prompt alone,
unpadded, run through the keras.Model itself for every new token (greedy
argmax of the last position). Cached, batched, left-padded decoding must give
the same tokens for every family that can be a language model ("lm" or
"unilm" application, the gpt* models), including RealFormer's residual scores.
HF parity of greedy / beam outputs is in tests/parity/test_generation_hf.py.
"""

import keras
import numpy as np
import pytest

from kerasformers.generation import generate
from kerasformers.models import build_transformer_model
from tests.conftest import TINY

CONFIG = TINY
PROMPTS = [[5, 17, 33, 2, 60], [44], [9, 81, 23]]
NEW = 7


def _build(name, application, extra, seed=1):
    keras.utils.set_random_seed(seed)
    config = dict(CONFIG, **extra)
    if name == "electra":
        config["with_mlm"] = True  # ELECTRA's generator head
    return build_transformer_model(config, model=name, application=application)


def _uncached_greedy(model, application, prompts, new, end_id=None):
    """Greedy decoding by running the whole model on the whole sequences each step.

    Rows are right-padded to one fixed width (one compiled shape): under the
    causal / UniLM masks nothing to the right of a position reaches it, and
    absolute positions still start at 0 in every row.
    """
    width = max(len(p) for p in prompts) + new
    ids = np.zeros((len(prompts), width), "int32")
    segments = np.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)] = prompt
        if application == "unilm":
            segments[row, len(prompt) :] = 1
    lengths = [len(p) for p in prompts]
    outs = [[] for _ in prompts]
    done = [False] * len(prompts)
    for _ in range(new):
        inputs = [ids, segments] if len(model.inputs) > 1 else [ids]
        probs = keras.ops.convert_to_numpy(model.predict_on_batch(inputs))
        for row in range(len(prompts)):
            if done[row]:
                continue
            token = int(np.argmax(probs[row, lengths[row] - 1]))
            if token == end_id:
                done[row] = True
                continue
            outs[row].append(token)
            ids[row, lengths[row]] = token
            lengths[row] += 1
    return outs


def _step_probs(model, prompts, continuations):
    """(rows, width, vocab) next-token probabilities of prompt + continuation, one
    right-padded causal pass (the lm models here have no segment input or use 0)."""
    width = max(len(p) + len(c) for p, c in zip(prompts, continuations, strict=True))
    ids = np.zeros((len(prompts), width), "int32")
    for row, (p, c) in enumerate(zip(prompts, continuations, strict=True)):
        ids[row, : len(p) + len(c)] = p + c
    inputs = [ids, np.zeros_like(ids)] if len(model.inputs) > 1 else [ids]
    return keras.ops.convert_to_numpy(model.predict_on_batch(inputs))


@pytest.mark.parametrize("name,application", [("albert", "unilm"), ("gpt2", "lm")])
def test_end_id_stops_rows_early(name, application):
    model = _build(name, application, {})
    first = generate(model, PROMPTS, max_new_tokens=NEW)
    end_id = first[0][2]  # a token the model produces in row 0
    ours = generate(model, PROMPTS, max_new_tokens=NEW, end_id=end_id)
    assert ours == _uncached_greedy(model, application, PROMPTS, NEW, end_id)
    assert len(ours[0]) == first[0].index(end_id)
    assert all(end_id not in row for row in ours)


def test_unilm_source_segments_and_min_new_tokens():
    model = _build("bert", "unilm", {})
    segments = [[0] * len(p) for p in PROMPTS]
    assert generate(model, PROMPTS, segment_ids=segments, max_new_tokens=4) == generate(
        model, PROMPTS, max_new_tokens=4
    )
    first = generate(model, PROMPTS, max_new_tokens=NEW)
    end_id = first[1][0]  # the very first token of row 1
    assert generate(model, PROMPTS, max_new_tokens=NEW, end_id=end_id)[1] == []
    forced = generate(model, PROMPTS, max_new_tokens=NEW, end_id=end_id, min_new_tokens=3)
    assert len(forced[1]) >= 3 and end_id not in forced[1]


def test_single_prompt_and_batch_of_one_agree():
    model = _build("gpt2", "lm", {})
    assert generate(model, PROMPTS[0], max_new_tokens=5) == generate(
        model, PROMPTS[:1], max_new_tokens=5
    )
    batched = generate(model, PROMPTS, max_new_tokens=5)
    assert [generate(model, [p], max_new_tokens=5)[0] for p in PROMPTS] == batched


def test_sampling_is_seeded_and_filters():
    model = _build("gpt2", "lm", {})
    kwargs = dict(max_new_tokens=NEW, method="sample", temperature=1.3)
    first = generate(model, PROMPTS, seed=11, **kwargs)
    assert generate(model, PROMPTS, seed=11, **kwargs) == first
    others = [generate(model, PROMPTS, seed=s, **kwargs) for s in (12, 13, 14)]
    assert any(o != first for o in others)  # the seed matters
    greedy = generate(model, PROMPTS, max_new_tokens=NEW)
    assert generate(model, PROMPTS, method="sample", top_k=1, seed=5, max_new_tokens=NEW) == greedy
    tiny_p = generate(model, PROMPTS, method="sample", top_p=1e-6, seed=5, max_new_tokens=NEW)
    assert tiny_p == greedy  # the nucleus holds the top token only
    # top_k=3: every sampled token is among the 3 most likely at its step.
    sampled = generate(model, PROMPTS, method="sample", top_k=3, seed=2, max_new_tokens=NEW)
    probs = _step_probs(model, PROMPTS, sampled)
    for prompt, row, p in zip(PROMPTS, sampled, probs, strict=True):
        for step, token in enumerate(row):
            assert token in np.argsort(p[len(prompt) - 1 + step])[-3:]


def test_beam_search_one_beam_is_greedy_and_beams_score_higher():
    model = _build("bert", "lm", {})
    greedy = generate(model, PROMPTS, max_new_tokens=NEW)
    assert generate(model, PROMPTS, max_new_tokens=NEW, method="beam", num_beams=1) == greedy
    beams = generate(model, PROMPTS, max_new_tokens=NEW, method="beam", num_beams=4)

    def log_probs(rows):
        probs = _step_probs(model, PROMPTS, rows)
        return [
            sum(np.log(p[len(prompt) - 1 + step, token]) for step, token in enumerate(row))
            for prompt, row, p in zip(PROMPTS, rows, probs, strict=True)
        ]

    assert all(len(b) == NEW for b in beams)
    for beam_score, greedy_score in zip(log_probs(beams), log_probs(greedy), strict=True):
        assert beam_score >= greedy_score - 1e-5


def test_bad_inputs():
    model = _build("gpt2", "lm", {})
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(model, [[1, 2], []])
    with pytest.raises(ValueError, match="holds no prompt"):
        generate(model, [])
    with pytest.raises(ValueError, match="max_position"):
        generate(model, [[1] * 40], max_new_tokens=10)
    with pytest.raises(ValueError, match="unknown method 'topk'"):
        generate(model, [[1, 2]], method="topk")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(model, [[1, 200]])
    with pytest.raises(ValueError, match="top_p must be a number in"):
        generate(model, [[1, 2]], method="sample", top_p=1.5)
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 1"):
        generate(model, [[1, 2]], max_new_tokens=0)
    with pytest.raises(ValueError, match="min_new_tokens"):
        generate(model, [[1, 2]], max_new_tokens=2, min_new_tokens=3)
    with pytest.raises(ValueError, match="has no segment input"):
        generate(model, [[1, 2]], segment_ids=[[0, 0]])
    with pytest.raises(ValueError, match="end_id 500 is outside"):
        generate(model, [[1, 2]], end_id=500)
    encoder = _build("bert", "encoder", {"with_mlm": True})
    with pytest.raises(ValueError, match="application='lm' or 'unilm'"):
        generate(encoder, [[1, 2]])
    bert = _build("bert", "unilm", {})
    with pytest.raises(ValueError, match="segment_ids must have the shape"):
        generate(bert, [[1, 2]], segment_ids=[[0]])
    plain = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(9, 4)])
    with pytest.raises(ValueError, match="functional keras.Model"):
        generate(plain, [[1, 2]])


@pytest.mark.parametrize(
    "token_ids,error,match",
    [
        ([[1.0, 2.0]], TypeError, r"token_ids\[0\]\[0\] must be an integer id, got 1.0"),
        ([1, 2.5], TypeError, r"token_ids\[0\]\[1\] must be an integer id, got 2.5"),
        ([["a", "b"]], TypeError, "must be an integer id, got 'a'"),
        ("hello", TypeError, "got str"),
        (None, TypeError, "got None"),
        ([[[1, 2]]], TypeError, r"token_ids\[0\]\[0\] must be an integer id, got \[1, 2\]"),
        ([[1, True]], TypeError, "must be an integer id, got True"),
        (np.array([[1.0, 2.0]]), TypeError, "integer array, got an array of dtype float64"),
        ([[1, None]], TypeError, "must be an integer id, got None"),
    ],
)
def test_bad_prompt_types(token_ids, error, match):
    model = _build("gpt2", "lm", {})
    with pytest.raises(error, match=match):
        generate(model, token_ids, max_new_tokens=2)


@pytest.mark.parametrize(
    "settings,match",
    [
        ({"method": "beam", "length_penalty": float("nan")}, "length_penalty must be a finite"),
        ({"method": "beam", "length_penalty": float("inf")}, "length_penalty must be a finite"),
        ({"method": "beam", "length_penalty": "1"}, "length_penalty must be a finite"),
        ({"method": "sample", "top_p": "0.9"}, "top_p must be a number in"),
        ({"method": "sample", "top_p": True}, "top_p must be a number in"),
        ({"method": "sample", "seed": 2**32}, r"seed must be an integer in \[0, 2\*\*31\)"),
        ({"method": "sample", "seed": -1}, "seed must be an integer"),
        ({"method": "sample", "seed": 1.5}, "seed must be an integer"),
        ({"method": "sample", "temperature": float("nan")}, "temperature must be a finite"),
        ({"top_k": 2.0, "method": "sample"}, "top_k must be an integer"),
        ({"end_id": 3.0}, "end_id must be an integer"),
    ],
)
def test_bad_settings(settings, match):
    model = _build("gpt2", "lm", {})
    with pytest.raises(ValueError, match=match):
        generate(model, [[1, 2]], max_new_tokens=2, **settings)


def test_segment_ids_outside_the_table_are_refused():
    model = _build("bert", "unilm", {})
    with pytest.raises(ValueError, match="Input-Segment holds id 5"):
        generate(model, [[1, 2]], segment_ids=[[0, 5]], max_new_tokens=2)
