"""The batcher in-process (no HTTP): every row of a batch gets its solo greedy
answer, with and without shape buckets, for a decoder LLM, T5 and a UniLM BERT."""

import threading

import pytest

from kerasformers.serving import load_served_model
from kerasformers.serving.batcher import Batcher, Job
from tests.serving.helpers import make_embedding_dir, make_t5_dir, solo

PROMPTS = ["Hello, world", "你好", "the cat sat on the mat and then", "a b", "x", "mixed 中文"]


def run_batch(served, prompts, lengths, bucket, max_batch=8, stops=()):
    """Submits every prompt at once; returns {index: done event}, the stats."""
    done, events = {}, threading.Event()

    def emit_for(i):
        def emit(event):
            if event["type"] != "delta":
                done[i] = event
                if len(done) == len(prompts):
                    events.set()

        return emit

    batcher = Batcher(served, max_batch=max_batch, window=0.5, bucket=bucket)
    try:
        for i, (text, n) in enumerate(zip(prompts, lengths, strict=True)):
            ids = served.encode_prompt(text)
            batcher.submit(Job(ids, n, {"method": "greedy"}, emit_for(i), stops))
        assert events.wait(120), f"only {len(done)} of {len(prompts)} answered"
    finally:
        batcher.close(60)
    return done, batcher.stats


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    return make_t5_dir(tmp_path_factory.mktemp("served") / "tiny-t5")


@pytest.fixture(scope="module")
def unilm_dir(tmp_path_factory):
    return make_embedding_dir(tmp_path_factory.mktemp("served") / "tiny-unilm", "unilm")


# Unbucketed T5 / UniLM batches take the same path as unbucketed qwen2 (slow on jax:
# a compile per shape), so they run with KF_RUN_SLOW=1 only.
@pytest.mark.parametrize(
    "kind, bucket",
    [
        ("qwen2", False),
        ("qwen2", True),
        ("t5", True),
        ("unilm", True),
        pytest.param("t5", False, marks=pytest.mark.slow),
        pytest.param("unilm", False, marks=pytest.mark.slow),
    ],
)
def test_batched_rows_equal_solo_generate(kind, bucket, request, generation_dir):
    if kind == "qwen2":
        served = load_served_model(str(generation_dir))
    elif kind == "t5":
        served = load_served_model(str(request.getfixturevalue("t5_dir")))
    else:
        served = load_served_model(str(request.getfixturevalue("unilm_dir")), application="unilm")
    assert served.kind == "generation"
    lengths = [5, 12, 9, 16, 3, 7]
    done, stats = run_batch(served, PROMPTS, lengths, bucket)
    assert stats["batches"] == 1 and stats["largest_batch"] == len(PROMPTS)
    for i, (text, n) in enumerate(zip(PROMPTS, lengths, strict=True)):
        expected, count = solo(served, text, n)
        assert done[i]["type"] == "done"
        assert done[i]["text"] == expected, (kind, i)
        assert done[i]["completion_tokens"] == count
        assert done[i]["finish_reason"] == ("length" if count == n else "stop")


def test_max_batch_splits_and_cancelled_jobs_leave(generation_dir):
    served = load_served_model(str(generation_dir))
    done, stats = run_batch(served, PROMPTS, [4] * len(PROMPTS), bucket=True, max_batch=4)
    assert stats["batches"] == 2 and stats["largest_batch"] == 4
    assert [done[i]["text"] for i in range(len(PROMPTS))] == [
        solo(served, p, 4)[0] for p in PROMPTS
    ]
    # A job cancelled while queued is never decoded.
    batcher = Batcher(served, max_batch=4, window=0.2)
    try:
        seen = []
        job = Job(served.encode_prompt("hi"), 4, {"method": "greedy"}, seen.append)
        job.cancel()
        batcher.submit(job)
        other = threading.Event()
        batcher.submit(
            Job(served.encode_prompt("ok"), 2, {"method": "greedy"},
                lambda e: e["type"] == "done" and other.set())
        )  # fmt: skip
        assert other.wait(60)
    finally:
        batcher.close(60)
    assert seen == [] and batcher.stats["cancelled"] == 1
