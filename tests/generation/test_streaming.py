"""Streaming generation: `stream_generate` and `generate(..., streamer=...)`.

The reference is the fused `generate` (itself equal to HF and to full
recomputation, tests/generation/test_generate.py and tests/parity): the
streamed tokens of every row, joined, must be its output for the same
arguments, on a ragged batch whose rows end at different steps.
"""

import itertools
import threading

import pytest

from kerasformers.generation import generate, stream_generate, streaming
from tests.conftest import tiny_model

PROMPTS = [[5, 17, 33, 2, 60], [44], [9, 81, 23]]
NEW = 12


@pytest.fixture(scope="module")
def model():
    # One layer: jax compiles dominate these tests (each layer is checked
    # against full recomputation in test_generate.py).
    return tiny_model("gpt2", scale=2.0, num_hidden_layers=1)


def _end_ids(model, want, method, seeds=(3,)):
    """Two ids the model produces that, as end ids, end rows as `want(lengths)`
    asks: (generate's kwargs with them, the rows generated). End ids and seeds
    are inputs of the compiled functions: trying them compiles nothing new."""
    for seed in seeds:
        kwargs = dict(max_new_tokens=NEW, method=method, seed=seed)
        rows = generate(model, PROMPTS, end_id=[95, 96], **kwargs)
        early = list(
            dict.fromkeys(t for step in range(NEW) for row in rows for t in row[step : step + 1])
        )
        for pair in itertools.combinations(early[:12], 2):
            ended = generate(model, PROMPTS, end_id=list(pair), **kwargs)
            if want([len(row) for row in ended]):
                return dict(kwargs, end_id=list(pair)), ended
    raise AssertionError("no pair of ids ends the rows as wanted")


def _streamed(model, **kwargs):
    calls = []
    out = generate(model, PROMPTS, streamer=lambda step, new: calls.append((step, new)), **kwargs)
    return out, calls


def _joined(items):
    return [sum((item[row] for item in items), []) for row in range(len(PROMPTS))]


@pytest.mark.parametrize("method", ["greedy", "sample"])
def test_streamed_tokens_are_generates(model, method):
    # Rows that end at different steps, one of them not at all.
    kwargs, reference = _end_ids(
        model, lambda n: len(set(n)) == len(n) and max(n) == NEW and min(n) < NEW - 2, method
    )
    items = list(stream_generate(model, PROMPTS, **kwargs))
    assert _joined(items) == reference
    out, calls = _streamed(model, **kwargs)
    assert out == reference
    assert [step for step, _ in calls] == list(range(NEW))
    assert [new for _, new in calls] == items
    for row, tokens in enumerate(reference):
        # The row's tokens are those of its first len(tokens) steps; after its
        # end id (never streamed) it gets empty lists.
        assert all(item[row] == [token] for item, token in zip(items, tokens, strict=False))
        assert not any(item[row] for item in items[len(tokens) :])
        assert all(len(item) == len(PROMPTS) for item in items)


@pytest.mark.parametrize("method", ["greedy", "sample"])
def test_stream_stops_when_every_row_has_ended(model, method):
    kwargs, ended = _end_ids(
        model, lambda n: max(n) < NEW - 2 and len(set(n)) > 1, method, seeds=range(5, 40)
    )
    out, calls = _streamed(model, **kwargs)
    assert out == ended
    # The steps actually run: until the step that produced the last end id.
    assert len(calls) == max(len(row) for row in ended) + 1
    assert calls[-1][1] == [[], [], []]
    assert _joined(list(stream_generate(model, PROMPTS, **kwargs))) == ended


def test_stream_yields_as_it_goes(model, monkeypatch):
    # End ids no row produces: all NEW steps run.
    produced = generate(model, PROMPTS, max_new_tokens=NEW, end_id=[95, 96])
    assert all(len(row) == NEW for row in produced)
    kwargs = dict(max_new_tokens=NEW, end_id=[95, 96])
    steps_run = []
    original = streaming.compiled

    def counting(plan, settings, kind):
        function = original(plan, settings, kind)
        if kind != "step":
            return function

        def step(*args):
            steps_run.append(1)
            return function(*args)

        return step

    monkeypatch.setattr(streaming, "compiled", counting)
    seen = []
    for _ in stream_generate(model, PROMPTS, **kwargs):
        seen.append(len(steps_run))
    assert len(seen) == NEW
    # A generator that computed everything before its first yield would have run
    # all NEW - 1 steps by then; this one runs at most the next one ahead.
    assert seen[0] <= 1 and seen[-1] == NEW - 1, seen


def test_streaming_refuses_beams_and_propagates_errors(model):
    with pytest.raises(ValueError, match="streaming is available for method='greedy' and 'sample'"):
        generate(model, PROMPTS, method="beam", streamer=print)
    with pytest.raises(ValueError, match="stream_generate: streaming is available"):
        stream_generate(model, PROMPTS, method="beam")
    with pytest.raises(ValueError, match="return_logits is not available while streaming"):
        generate(model, PROMPTS, streamer=print, return_logits=True)
    with pytest.raises(TypeError, match="streamer must be a callable"):
        generate(model, PROMPTS, streamer=3)
    with pytest.raises(TypeError, match=r"unexpected argument\(s\) \['max_tokens'\]"):
        stream_generate(model, PROMPTS, max_tokens=3)
    with pytest.raises(ValueError, match="end_id is an empty list"):
        stream_generate(model, PROMPTS, end_id=[])  # checked at the call, not at next()

    class Stop(Exception):
        pass

    seen = []

    def streamer(step, new_tokens):
        seen.append(step)
        if step == 2:
            raise Stop("client went away")

    with pytest.raises(Stop, match="client went away"):
        generate(model, PROMPTS, max_new_tokens=NEW, end_id=[7, 8], streamer=streamer)
    assert seen == [0, 1, 2]


def test_concurrent_streams_give_their_serial_results(model):
    cases = [
        dict(max_new_tokens=NEW, method="sample", seed=seed, end_id=[7, 8]) for seed in (3, 4, 5)
    ]
    cases.append(dict(max_new_tokens=NEW, method="greedy", end_id=[7, 8]))
    serial = [generate(model, PROMPTS, **kwargs) for kwargs in cases]
    results = [None] * (2 * len(cases))

    def work(index):
        kwargs = cases[index % len(cases)]
        if index < len(cases):
            results[index] = _joined(list(stream_generate(model, PROMPTS, **kwargs)))
        else:
            results[index] = generate(model, PROMPTS, **kwargs)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(results))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == serial + serial
