"""bert4keras' `parallel_apply`: map a function over an iterable with processes or threads.

bert4keras built this on a `multiprocessing.Pool` whose initializer looped forever; a
worker that raised died silently and the caller waited for its result for ever. Here
each worker reports every failure to the parent, which stops the other workers
(terminate + join: no hang, no zombie) and raises `ParallelApplyError` naming the
input. Inputs and results are pickled by the code that owns them, so an unpicklable
one is an error naming it rather than a message lost in a queue's feeder thread.

Processes start with `fork` where the platform has it (as bert4keras on Linux, so a
lambda or closure works as `func`) and `spawn` elsewhere; `start_method=` overrides.
"""

import contextlib
import multiprocessing
import pickle
import queue
import random as _py_random
import signal
import threading
import traceback

import numpy as np

__all__ = ["ParallelApplyError", "parallel_apply", "parallel_apply_generator"]

# How long the parent waits on the result queue before checking that workers live.
_POLL_SECONDS = 0.1
# How long a worker gets to exit after its stop signal before it is terminated/killed.
_JOIN_SECONDS = 5.0


class ParallelApplyError(RuntimeError):
    """`func` raised on an input, or a worker died, inside `parallel_apply`.

    Attributes:
        index: position of the failing input in the iterable (None if unknown).
    """

    def __init__(self, message, index=None):
        super().__init__(message)
        self.index = index


def _short_repr(item, limit=200):
    text = repr(item)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_exception(err):
    """(type name, message, traceback text, pickled exception or None) for the parent."""
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    try:
        blob = pickle.dumps(err, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(blob)  # some exceptions pickle but cannot be rebuilt
    except Exception:
        blob = None
    return type(err).__name__, str(err), text, blob


def _reseed(reseed, seed):
    if reseed:
        np.random.seed(seed)
        _py_random.seed(seed)


def _process_worker(func, tasks, results, reseed, seed):
    # Ctrl-C reaches the whole process group; only the parent should handle it (it
    # then terminates the workers).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _reseed(reseed, seed)
    while True:
        task = tasks.get()
        if task is None:
            return
        index, payload = task
        try:
            result = func(pickle.loads(payload))
        except BaseException as err:  # every failure goes back to the parent
            results.put(pickle.dumps((index, False, ("raised",) + _describe_exception(err))))
            continue
        try:
            message = pickle.dumps((index, True, result), protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as err:
            message = pickle.dumps((index, False, ("unpicklable",) + _describe_exception(err)))
        results.put(message)


def _thread_worker(func, tasks, results, stop):
    while True:
        task = tasks.get()
        if task is None or stop.is_set():
            return
        index, item = task
        try:
            results.put((index, True, func(item)))
        except BaseException as err:  # every failure goes back to the caller
            name, message, text, _ = _describe_exception(err)
            results.put((index, False, ("raised", name, message, text, err)))


def _failure(index, item, description, dummy):
    stage, name, message, text, cause = description
    if not dummy and cause is not None:
        try:
            cause = pickle.loads(cause)
        except Exception:  # e.g. the exception class only exists in the worker
            cause = None
    where = f"input {index} ({_short_repr(item)})"
    if stage == "raised":
        head = f"func raised {name}: {message} on {where}."
    else:
        head = (
            f"the result of func on {where} cannot be pickled to send it back from the "
            f"worker process ({name}: {message}); use dummy=True (threads) for it."
        )
    error = ParallelApplyError(f"parallel_apply: {head}\nWorker traceback:\n{text}", index=index)
    return error, cause


class _ProcessWorkers:
    """Worker processes fed through a bounded task queue."""

    dummy = False

    def __init__(self, func, workers, max_queue_size, seeds, start_method):
        context = multiprocessing.get_context(start_method)
        self.tasks = context.Queue(max_queue_size)
        self.results = context.Queue()
        self.procs = []
        try:
            for k, (reseed, seed) in enumerate(seeds):
                proc = context.Process(
                    target=_process_worker,
                    args=(func, self.tasks, self.results, reseed, seed),
                    name=f"parallel_apply-{k}",
                    daemon=True,
                )
                proc.start()
                self.procs.append(proc)
        except BaseException as err:
            self.close(graceful=False)
            if not isinstance(err, (pickle.PicklingError, AttributeError, TypeError)):
                raise
            # spawn/forkserver pickle the worker's arguments, func included.
            raise TypeError(
                f"parallel_apply: could not start worker processes with "
                f"start_method={start_method!r}: {err!r}. With 'spawn' or 'forkserver' "
                "func must be picklable (a module-level function, not a lambda or "
                "closure); use start_method='fork' or dummy=True (threads) otherwise."
            ) from err

    def encode(self, index, item):
        try:
            return index, pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:
            raise ParallelApplyError(
                f"parallel_apply: input {index} ({_short_repr(item)}) cannot be pickled "
                f"to send to a worker process: {err!r}. Use dummy=True (threads) for "
                "such inputs.",
                index=index,
            ) from err

    def put_nowait(self, task):
        self.tasks.put(task, block=False)

    def get(self, timeout):
        return pickle.loads(self.results.get(timeout=timeout))

    def check_alive(self):
        # Workers only leave their loop on the stop signal, sent after the last result.
        for proc in self.procs:
            if proc.exitcode is not None:
                raise ParallelApplyError(
                    f"parallel_apply: worker process {proc.pid} died (exit code "
                    f"{proc.exitcode}) while inputs were still being processed."
                )

    def close(self, graceful):
        if graceful:
            try:
                for _ in self.procs:
                    self.tasks.put(None, timeout=_JOIN_SECONDS)
            except queue.Full:
                pass
            for proc in self.procs:
                proc.join(_JOIN_SECONDS)
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            proc.join(_JOIN_SECONDS)
            if proc.is_alive():
                proc.kill()
                proc.join()
        # Tasks still buffered for dead workers must not block interpreter exit.
        self.tasks.cancel_join_thread()
        self.tasks.close()
        self.results.close()


class _ThreadWorkers:
    """Worker threads fed through a bounded task queue (bert4keras' `dummy=True`)."""

    dummy = True

    def __init__(self, func, workers, max_queue_size):
        self.tasks = queue.Queue(max_queue_size)
        self.results = queue.Queue()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(
                target=_thread_worker,
                args=(func, self.tasks, self.results, self.stop),
                name=f"parallel_apply-{k}",
                daemon=True,
            )
            for k in range(workers)
        ]
        for thread in self.threads:
            thread.start()

    def encode(self, index, item):
        return index, item

    def put_nowait(self, task):
        self.tasks.put_nowait(task)

    def get(self, timeout):
        return self.results.get(timeout=timeout)

    def check_alive(self):
        for thread in self.threads:
            if not thread.is_alive():
                raise ParallelApplyError(
                    f"parallel_apply: worker thread {thread.name} stopped while inputs "
                    "were still being processed."
                )

    def close(self, graceful):
        # Threads cannot be killed: drop the queued work, then let each finish its
        # current call and exit on the stop flag or sentinel.
        if not graceful:
            self.stop.set()
            with contextlib.suppress(queue.Empty):
                while True:
                    self.tasks.get_nowait()
        with contextlib.suppress(queue.Full):
            for _ in self.threads:
                self.tasks.put(None, timeout=_JOIN_SECONDS)
        for thread in self.threads:
            thread.join(_JOIN_SECONDS)


def _check_arguments(func, workers, max_queue_size, random_seeds, start_method):
    if not callable(func):
        raise TypeError(f"parallel_apply: func must be callable, got {type(func).__name__}")
    for name, value in (("workers", workers), ("max_queue_size", max_queue_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"parallel_apply: {name} must be an int >= 1, got {value!r}")
    if start_method is not None:
        allowed = multiprocessing.get_all_start_methods()
        if start_method not in allowed:
            raise ValueError(
                f"parallel_apply: start_method must be None or one of {allowed}, "
                f"got {start_method!r}"
            )
    if random_seeds is True or random_seeds is False or random_seeds is None:
        return
    if isinstance(random_seeds, (str, bytes)) or not hasattr(random_seeds, "__len__"):
        raise TypeError(
            "parallel_apply: random_seeds must be True, False/None or a list with one "
            f"seed per worker, got {random_seeds!r}"
        )
    if len(random_seeds) != workers:
        raise ValueError(
            f"parallel_apply: random_seeds has {len(random_seeds)} seeds for "
            f"{workers} workers; give one per worker"
        )
    for k, seed in enumerate(random_seeds):
        try:
            np.random.RandomState(seed)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"parallel_apply: random_seeds[{k}]={seed!r} is not a valid numpy seed "
                f"(an int in [0, 2**32) or None): {err}"
            ) from err


def _worker_seeds(random_seeds, workers):
    """(reseed, seed) per worker."""
    if random_seeds is True:
        # Fresh entropy, split so that no two workers can share a stream (forked
        # workers would otherwise all inherit the parent's numpy state).
        children = np.random.SeedSequence().spawn(workers)
        return [(True, int(child.generate_state(1)[0])) for child in children]
    if random_seeds is False or random_seeds is None:
        return [(False, None)] * workers
    return [(True, seed) for seed in random_seeds]


def _default_start_method():
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _generate(make_workers, iterable, unordered, capacity):
    workers = make_workers()
    finished = False
    try:
        items = enumerate(iterable)
        in_flight = {}  # index -> input, to name it if func fails on it
        waiting = {}  # ordered mode: results that arrived before an earlier one
        next_index = 0
        pending, exhausted = None, False
        while True:
            # Top up the work without blocking; at most `capacity` inputs are queued,
            # being processed or finished but not yet collected, which bounds both the
            # read-ahead of the iterable and the results piling up.
            while not exhausted and len(in_flight) < capacity:
                if pending is None:
                    try:
                        index, item = next(items)
                    except StopIteration:
                        exhausted = True
                        break
                    pending = index, item, workers.encode(index, item)
                try:
                    workers.put_nowait(pending[2])
                except queue.Full:
                    break
                in_flight[pending[0]] = pending[1]
                pending = None
            if exhausted and not in_flight:
                break
            try:
                done, ok, value = workers.get(_POLL_SECONDS)
            except queue.Empty:
                workers.check_alive()
                continue
            source = in_flight.pop(done, None)
            if not ok:
                error, cause = _failure(done, source, value, workers.dummy)
                raise error from cause
            if unordered:
                yield done, value
                continue
            waiting[done] = value
            while next_index in waiting:
                yield next_index, waiting.pop(next_index)
                next_index += 1
        finished = True
    finally:
        workers.close(graceful=finished)


def parallel_apply_generator(
    func,
    iterable,
    workers,
    max_queue_size,
    dummy=False,
    random_seeds=True,
    unordered=True,
    start_method=None,
):
    """Applies `func` to every item of `iterable` in parallel, yielding `(index, result)`.

    The iterable is read lazily (at most `max_queue_size` inputs wait in the queue), so it
    may be a large or endless generator. Workers start at the first `next()`; they are
    stopped when the generator finishes, raises, or is closed (leaving a `for` loop early
    closes it once the generator is garbage-collected; call `.close()` to be prompt).

    Args:
        func: function of one argument. With processes, inputs and results must be
            picklable; so must `func` itself unless the start method is `fork`.
        iterable: the inputs.
        workers: number of worker processes (threads with `dummy=True`).
        max_queue_size: how many inputs may wait for a free worker.
        dummy: False for processes, True for threads (`multiprocessing.dummy`).
        random_seeds: True reseeds numpy's and Python's global RNG in each worker process
            with a different fresh seed; a list gives one seed per worker (None in it
            means fresh entropy); False/None leaves the inherited state (forked workers
            then draw the same numbers). Threads share one global state: not reseeded.
        unordered: True yields results as they complete (bert4keras); False yields them
            in input order, holding back any result that overtakes an earlier input.
        start_method: multiprocessing start method; None means "fork" where available
            (closures and lambdas then work as `func`), else "spawn".

    Yields:
        `(index, func(iterable[index]))` pairs.

    Raises:
        ParallelApplyError: `func` raised (names the input's index, with the worker's
            traceback and the original exception as `__cause__`), an input or result
            could not be pickled, or a worker died.

    Example:
        >>> for i, n in parallel_apply_generator(len, ["a", "bb"], 2, 4, dummy=True,
        ...                                      unordered=False):
        ...     print(i, n)
        0 1
        1 2
    """
    _check_arguments(func, workers, max_queue_size, random_seeds, start_method)
    if dummy:

        def make_workers():
            return _ThreadWorkers(func, workers, max_queue_size)

    else:
        seeds = _worker_seeds(random_seeds, workers)
        method = start_method or _default_start_method()

        def make_workers():
            return _ProcessWorkers(func, workers, max_queue_size, seeds, method)

    return _generate(make_workers, iterable, unordered, max_queue_size + workers)


def parallel_apply(
    func,
    iterable,
    workers,
    max_queue_size,
    callback=None,
    dummy=False,
    random_seeds=True,
    unordered=True,
    start_method=None,
):
    """Applies `func` to every item of `iterable` with a pool of processes or threads.

    Args:
        func, iterable, workers, max_queue_size, dummy, random_seeds, start_method: as in
            `parallel_apply_generator`.
        callback: if given, called on each result in the parent (in completion order, or
            input order with `unordered=False`) and nothing is returned.
        unordered: True returns results in completion order (bert4keras' default); False
            in input order.

    Returns:
        The list of results, or None when `callback` is given.

    Raises:
        ParallelApplyError: see `parallel_apply_generator`; the other workers are
            stopped before it propagates.

    Example:
        >>> parallel_apply(abs, [-1, 2, -3], workers=2, max_queue_size=4, unordered=False)
        [1, 2, 3]
    """
    generator = parallel_apply_generator(
        func,
        iterable,
        workers,
        max_queue_size,
        dummy=dummy,
        random_seeds=random_seeds,
        unordered=unordered,
        start_method=start_method,
    )
    # closing(): a raising callback must stop the workers now, not when the
    # traceback that keeps this frame alive is freed.
    with contextlib.closing(generator):
        if callback is None:
            return [result for _, result in generator]
        for _, result in generator:
            callback(result)
    return None
