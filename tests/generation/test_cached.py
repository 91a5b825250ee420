"""Cached generation equals full recomputation, for every decoder configuration.

The reference runs the keras.Model itself on the whole (right-padded) sequence
for every new token, one fixed width, and takes the logits at each row's last
real position. Cached, batched, left-padded decoding must give the same tokens
and the same per-step logits (<= 1e-4). Weights are randomised strongly
(tests/conftest.py) so that the next token depends on the whole context: the
mutation tests below plant a cache that forgets earlier tokens and zeroed
positions, and assert that these very checks then fail.
"""

import threading

import keras
import numpy as np
import pytest
from keras import ops

from kerasformers.generation import generate
from kerasformers.layers import attention, positions, rope
from tests.conftest import tiny_model

PROMPTS = [[5, 17, 33, 2, 60], [44], [9, 81, 23]]
NEW = 6
ATOL = 1e-4

# (id, model, application, builder arguments); every head gives logits.
LINEAR = {"with_mlm": "linear"}
GPT_LINEAR = {"final_activation": "linear"}
CASES = [
    ("bert-lm", "bert", "lm", LINEAR),
    ("bert-unilm", "bert", "unilm", LINEAR),
    ("bert-lm-realformer", "bert", "lm", dict(LINEAR, residual_attention_scores=True)),
    ("bert-lm-custom-positions", "bert", "lm", dict(LINEAR, custom_position_ids=True)),
    ("roberta-unilm", "roberta", "unilm", LINEAR),
    ("albert-lm", "albert", "lm", dict(LINEAR, embedding_size=24)),
    ("albert-unilm", "albert", "unilm", LINEAR),
    ("nezha-unilm", "nezha", "unilm", dict(LINEAR, max_relative_position=3)),
    ("roformer-lm", "roformer", "lm", LINEAR),
    ("roformer_v2-unilm", "roformer_v2", "unilm", LINEAR),
    ("electra-lm", "electra", "lm", LINEAR),
    ("gpt", "gpt", "lm", GPT_LINEAR),
    ("gpt2", "gpt2", "lm", GPT_LINEAR),
    ("gpt2_ml", "gpt2_ml", "lm", GPT_LINEAR),
    ("t5.1.0", "t5.1.0", "encoder", GPT_LINEAR),
    ("t5.1.1", "t5.1.1", "encoder", GPT_LINEAR),
    # LLM decoders: grouped-query caches at key/value-head size, half-rotation
    # rotary positions (scaled), sliding windows shorter than prompt + new tokens,
    # Qwen3's q/k norms and a head_dim != hidden / heads, Gemma's scaled embeddings.
    ("llama-gqa", "llama", "lm", dict(GPT_LINEAR, num_attention_heads=4, num_key_value_heads=2)),
    (
        "llama-llama3-rope",
        "llama",
        "lm",
        dict(
            GPT_LINEAR,
            rope_theta=300.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 4.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 4,
            },
        ),
    ),
    ("mistral-window", "mistral", "lm", dict(GPT_LINEAR, sliding_window=3, num_key_value_heads=1)),
    (
        "qwen2-yarn-window",
        "qwen2",
        "lm",
        dict(
            GPT_LINEAR,
            tie_word_embeddings=True,
            use_sliding_window=True,
            sliding_window=4,
            max_window_layers=1,
            rope_scaling={
                "rope_type": "yarn",
                "factor": 3.0,
                "original_max_position_embeddings": 8,
            },
        ),
    ),
    (
        "qwen3-head-dim",
        "qwen3",
        "lm",
        dict(GPT_LINEAR, num_attention_heads=4, num_key_value_heads=2, attention_head_size=12),
    ),
    ("gemma", "gemma", "lm", dict(GPT_LINEAR, attention_head_size=16, num_key_value_heads=1)),
]
IDS = [c[0] for c in CASES]
BY_ID = {c[0]: c for c in CASES}
# Cases whose decoding moves positions (absolute, rotary, relative or bucketed).
POSITIONED = [i for i in IDS if "custom-positions" not in i]
# The mutants run on one case per mechanism by default (UniLM's order cache,
# shared layers, pre-norm without a padding mask, rotary,
# relative and bucketed positions, cross-attention); on all with KF_RUN_SLOW=1.
FORGETTING_DEFAULT = ("bert-unilm", "albert-lm", "gpt2", "t5.1.1", "llama-gqa")
POSITIONS_DEFAULT = ("gpt2", "nezha-unilm", "roformer-lm", "t5.1.0", "llama-gqa")


def _subset(ids, default):
    return [i if i in default else pytest.param(i, marks=pytest.mark.slow) for i in ids]


def _model(case_id, seed=1):
    _, name, application, extra = BY_ID[case_id]
    if name.startswith("t5"):
        extra = dict(extra)
        if name == "t5.1.1":
            extra.update(feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    return tiny_model(name, application, seed=seed, scale=1.5, **extra)


def _full_logits(model, case_id, rows):
    """(batch, width, vocab) logits of whole right-padded sequences, one pass."""
    name = BY_ID[case_id][1]
    if name.startswith("t5"):
        source, target = rows
        return keras.ops.convert_to_numpy(model.predict_on_batch([source, target]))
    ids, segments, position_ids = rows
    inputs = [ids]
    if len(model.inputs) > 1 and "Segment" in model.inputs[1].name:
        inputs.append(segments)
    if any("Position" in t.name for t in model.inputs):
        inputs.append(position_ids)
    return keras.ops.convert_to_numpy(model.predict_on_batch(inputs))


def uncached_greedy(model, case_id, prompts=PROMPTS, new=NEW):
    """Greedy tokens and (batch, new, vocab) step logits by full recomputation."""
    name, application = BY_ID[case_id][1], BY_ID[case_id][2]
    batch = len(prompts)
    if name.startswith("t5"):
        source = np.zeros((batch, max(map(len, prompts))), "int32")
        for row, prompt in enumerate(prompts):
            source[row, : len(prompt)] = prompt
        target = np.zeros((batch, new), "int32")  # the start token (pad id 0) first
        steps = []
        for step in range(new):
            logits = _full_logits(model, case_id, (source, target))[:, step]
            steps.append(logits)
            if step + 1 < new:
                target[:, step + 1] = logits.argmax(-1)
        logits = np.stack(steps, 1)
        return logits.argmax(-1).tolist(), logits
    width = max(len(p) for p in prompts) + new
    ids = np.zeros((batch, width), "int32")
    segments = np.zeros_like(ids)
    position_ids = np.broadcast_to(np.arange(width, dtype="int32"), ids.shape).copy()
    lengths = [len(p) for p in prompts]
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)] = prompt
        if application == "unilm":
            segments[row, len(prompt) :] = 1
    steps = []
    for _ in range(new):
        full = _full_logits(model, case_id, (ids, segments, position_ids))
        logits = np.stack([full[row, lengths[row] - 1] for row in range(batch)])
        steps.append(logits)
        for row in range(batch):
            ids[row, lengths[row]] = logits[row].argmax()
            lengths[row] += 1
    logits = np.stack(steps, 1)
    return logits.argmax(-1).tolist(), logits


_REFERENCES = {}


def reference(case_id):
    """The uncached result of case `case_id` (computed once per session and backend)."""
    if case_id not in _REFERENCES:
        _REFERENCES[case_id] = uncached_greedy(_model(case_id), case_id)
    return _REFERENCES[case_id]


def assert_cached_matches(model, case_id):
    """The check every decoder configuration must pass: cached == uncached."""
    tokens, logits = reference(case_id)
    ours, our_logits = generate(model, PROMPTS, max_new_tokens=NEW, return_logits=True)
    assert ours == tokens, f"{case_id}: cached tokens {ours} != uncached {tokens}"
    error = float(np.abs(our_logits - logits).max())
    assert error <= ATOL, f"{case_id}: step logits differ by {error:.3g} > {ATOL}"


@pytest.mark.parametrize("case_id", IDS)
def test_cached_equals_uncached(case_id):
    assert_cached_matches(_model(case_id), case_id)


def _forgetting_update(original):
    def update(cache, index, value):
        # A cache that keeps only the newest tokens: every earlier slot is lost.
        return original(ops.zeros_like(cache), index, value)

    return update


@pytest.mark.parametrize("case_id", _subset(IDS, FORGETTING_DEFAULT))
def test_mutant_forgetting_cache_is_caught(case_id, monkeypatch):
    monkeypatch.setattr(attention, "update_cache", _forgetting_update(attention.update_cache))
    with pytest.raises(AssertionError):
        assert_cached_matches(_model(case_id), case_id)


def _zero_positions(monkeypatch):
    """Every position layer sees position / slot 0 while decoding."""

    def absolute(self, decoding, inputs, position_ids=None):
        if self.custom_position_ids:
            inputs, _ = inputs
        return type(self).call(self, inputs, position_ids=ops.zeros_like(decoding.positions))

    def relative(self, decoding, inputs):
        return type(self).call(
            self,
            inputs,
            query_positions=ops.zeros_like(decoding.query_slots),
            key_positions=ops.zeros_like(decoding.key_slots),
        )

    for cls in (
        positions.PositionEmbedding,
        positions.SinusoidalPositionEmbedding,
        rope.RotaryEmbedding,
    ):
        monkeypatch.setattr(cls, "decode_call", absolute)
    for cls in (positions.RelativePositionEmbedding, positions.RelativePositionEmbeddingT5):
        monkeypatch.setattr(cls, "decode_call", relative)


@pytest.mark.parametrize("case_id", _subset(POSITIONED, POSITIONS_DEFAULT))
def test_mutant_zeroed_positions_are_caught(case_id, monkeypatch):
    reference(case_id)  # computed with the real positions
    _zero_positions(monkeypatch)
    with pytest.raises(AssertionError):
        assert_cached_matches(_model(case_id), case_id)


@pytest.mark.parametrize("case_id", ["gpt2", "bert-unilm", "t5.1.1"])
def test_keras_file_round_trip_generates(case_id, tmp_path):
    model = _model(case_id)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert generate(loaded, PROMPTS, max_new_tokens=NEW) == reference(case_id)[0]
    if case_id == "gpt2":
        beams = dict(max_new_tokens=4, method="beam", num_beams=3)
        assert generate(loaded, PROMPTS, **beams) == generate(model, PROMPTS, **beams)


@pytest.mark.parametrize("case_id", ["gpt2", "bert-unilm"])
def test_concurrent_generate_equals_serial(case_id):
    model = _model(case_id)
    jobs = [(PROMPTS[: 1 + i % 3], 3 + i % 3) for i in range(6)]
    results, errors = [None] * len(jobs), []

    def work(index):
        prompts, new = jobs[index]
        try:
            results[index] = generate(model, prompts, max_new_tokens=new)
        except Exception as err:  # surfaced below with its job
            errors.append((index, repr(err)))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    serial = [generate(model, prompts, max_new_tokens=new) for prompts, new in jobs]
    assert results == serial


@pytest.mark.parametrize("policy", ["bfloat16", "mixed_bfloat16"])
def test_bfloat16_policies_cached_equals_uncached(policy):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = tiny_model("gpt2", "lm")
        ours = generate(model, PROMPTS, max_new_tokens=4)
        tokens, _ = uncached_greedy(model, "gpt2", new=4)
        assert ours == tokens
    finally:
        keras.config.set_dtype_policy(previous)
