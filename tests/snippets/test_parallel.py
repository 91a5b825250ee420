"""parallel_apply / parallel_apply_generator: results, ordering, seeds, and failures that
raise (naming the input) instead of hanging or leaving worker processes behind."""

import contextlib
import itertools
import multiprocessing
import os
import signal
import time

import numpy as np
import pytest

from kerasformers.snippets import ParallelApplyError, parallel_apply, parallel_apply_generator

# Workers are forked; JAX warns about forking once its backend has started.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")

# Every call here must finish well within this many seconds; a hang fails the test.
DEADLINE = 30


@contextlib.contextmanager
def deadline(seconds=DEADLINE):
    def on_alarm(signum, frame):
        raise TimeoutError(f"parallel_apply hung for {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def our_workers():
    # active_children() also reaps finished children, so a zombie would not show here;
    # a worker that was never joined or terminated would.
    return [p for p in multiprocessing.active_children() if p.name.startswith("parallel_apply")]


def square(x):
    return x * x


def slow_square(x):
    time.sleep(0.01 * (x % 3))  # uneven durations so completion order can differ
    return x * x


def fail_on_three(x):
    if x == 3:
        raise ValueError(f"cannot handle {x}")
    time.sleep(0.05)
    return x


def pid_and_draw(x):
    time.sleep(0.05)  # keep every worker busy so each gets inputs
    return os.getpid(), int(np.random.randint(2**31))


@pytest.mark.parametrize("dummy", [False, True])
def test_ordered_unordered_and_generator(dummy):
    items = list(range(12))
    want = [x * x for x in items]
    with deadline():
        ordered = parallel_apply(slow_square, items, 3, 4, dummy=dummy, unordered=False)
        unordered = parallel_apply(slow_square, items, 3, 4, dummy=dummy)
        pairs = list(parallel_apply_generator(slow_square, items, 3, 4, dummy=dummy))
        streamed = list(
            parallel_apply_generator(slow_square, iter(items), 2, 2, dummy=dummy, unordered=False)
        )
        empty = parallel_apply(square, [], 2, 2, dummy=dummy)
    assert ordered == want
    assert sorted(unordered) == want
    assert sorted(pairs) == list(enumerate(want))
    assert streamed == list(enumerate(want))
    assert empty == []
    assert our_workers() == []


def test_lambda_and_closure_work_with_fork():
    offset = 10
    with deadline():
        got = parallel_apply(lambda x: x + offset, range(5), 2, 2, unordered=False)
    assert got == [10, 11, 12, 13, 14]


@pytest.mark.parametrize("unordered", [True, False])
def test_callback_receives_every_result(unordered):
    received = []
    with deadline():
        out = parallel_apply(
            slow_square, range(9), 2, 3, callback=received.append, unordered=unordered
        )
    assert out is None
    assert sorted(received) == [x * x for x in range(9)]
    if not unordered:
        assert received == [x * x for x in range(9)]


@pytest.mark.parametrize("dummy", [False, True])
def test_raising_worker_raises_naming_the_input(dummy):
    with deadline(), pytest.raises(ParallelApplyError) as info:
        parallel_apply(fail_on_three, range(20), 2, 3, dummy=dummy)
    error = info.value
    assert error.index == 3
    assert "func raised ValueError: cannot handle 3 on input 3 (3)" in str(error)
    assert "Worker traceback" in str(error) and "fail_on_three" in str(error)
    assert isinstance(error.__cause__, ValueError)
    assert our_workers() == []


def test_raising_callback_stops_the_workers():
    def callback(result):
        raise KeyError("callback failed")

    with deadline(), pytest.raises(KeyError, match="callback failed"):
        parallel_apply(slow_square, range(50), 2, 2, callback=callback)
    assert our_workers() == []


def test_dead_worker_is_reported():
    def die_on_two(x):
        if x == 2:
            os._exit(3)
        return x

    with deadline(), pytest.raises(ParallelApplyError, match=r"died \(exit code 3\)"):
        parallel_apply(die_on_two, range(6), 2, 2)
    assert our_workers() == []


def test_unpicklable_input_and_result_name_the_input():
    with deadline():
        with pytest.raises(ParallelApplyError, match="input 1 .* cannot be pickled"):
            parallel_apply(square, [1, lambda: 0, 3], 2, 2)
        with pytest.raises(ParallelApplyError, match="the result of func on input 0 .* pickled"):
            parallel_apply(lambda x: lambda: x, [1], 2, 2)
        # Threads need no pickling.
        assert parallel_apply(lambda f: f(), [lambda: 5], 2, 2, dummy=True) == [5]
    assert our_workers() == []


def test_generator_is_lazy_and_stops_workers_when_closed():
    consumed = itertools.count()
    source = (next(consumed) for _ in itertools.count())  # endless, counts what it gives
    with deadline():
        generator = parallel_apply_generator(square, source, 2, 3)
        got = list(itertools.islice(generator, 10))
        generator.close()
    assert len({i for i, _ in got}) == 10 and all(r == i * i for i, r in got)
    # Read ahead by at most max_queue_size + workers inputs in flight, plus one pending.
    assert next(consumed) <= 10 + 3 + 2 + 1
    assert our_workers() == []


def test_given_seeds_reseed_each_worker():
    seeds = [11, 22]
    with deadline():
        results = parallel_apply(pid_and_draw, range(8), 2, 2, random_seeds=seeds, unordered=False)
    draws = {}
    for pid, draw in results:  # in input order = each worker's processing order
        draws.setdefault(pid, []).append(draw)
    streams = {seed: np.random.RandomState(seed).randint(2**31, size=8).tolist() for seed in seeds}
    matched = []
    for seq in draws.values():
        owners = [s for s, stream in streams.items() if stream[: len(seq)] == seq]
        assert len(owners) == 1
        matched.append(owners[0])
    assert len(set(matched)) == len(matched)


def test_random_seeds_true_gives_workers_different_streams():
    with deadline():
        fresh = parallel_apply(pid_and_draw, range(8), 4, 4, unordered=False)
        inherited = parallel_apply(pid_and_draw, range(8), 4, 4, random_seeds=False)
    first = {}
    for pid, draw in fresh:
        first.setdefault(pid, draw)
    assert len(first) >= 2 and len(set(first.values())) == len(first)
    # Without reseeding, forked workers all continue the parent's numpy stream.
    parent_next = int(np.random.randint(2**31))
    first = {}
    for pid, draw in inherited:
        first.setdefault(pid, draw)
    assert set(first.values()) == {parent_next}


def test_spawn_needs_a_picklable_function():
    with deadline():
        assert parallel_apply(abs, [-1, 2, -3], 2, 2, start_method="spawn", unordered=False) == [
            1,
            2,
            3,
        ]
        with pytest.raises(TypeError, match="func must be picklable"):
            parallel_apply(lambda x: x, [1], 2, 2, start_method="spawn")
    assert our_workers() == []


def test_argument_errors():
    with pytest.raises(ValueError, match="workers must be an int >= 1, got 0"):
        parallel_apply(square, [1], 0, 2)
    with pytest.raises(ValueError, match="max_queue_size must be an int >= 1, got -1"):
        parallel_apply_generator(square, [1], 2, -1)
    with pytest.raises(TypeError, match="func must be callable"):
        parallel_apply(3, [1], 2, 2)
    with pytest.raises(ValueError, match="random_seeds has 1 seeds for 2 workers"):
        parallel_apply(square, [1], 2, 2, random_seeds=[1])
    with pytest.raises(ValueError, match=r"random_seeds\[1\]=-5 is not a valid numpy seed"):
        parallel_apply(square, [1], 2, 2, random_seeds=[1, -5])
    with pytest.raises(ValueError, match="start_method must be None or one of"):
        parallel_apply(square, [1], 2, 2, start_method="thread")
