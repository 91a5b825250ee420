"""Dynamic batching: concurrent requests decoded together in one cached generate.

One worker thread owns the model. Requests queue up; when the worker is free it
takes the oldest request and, for a short collection window, every other
queued request with the same sampling settings (up to `max_batch`), and
decodes them as one batch with `stream_generate`. A row that finishes (its end
token, a stop string, its own max_tokens, or a client that went away) is
answered at once and stops counting; the batch ends as soon as every row has
finished. New requests join at the next batch, not at the next step: our
caches are laid out per batch (every row shares the slots of one prefill), so
a row cannot enter a running batch without a second prefill of a different
length.

On backends that compile per shape (jax), the batch is rounded up to a power
of two (filled with copies of its first prompt, whose output is dropped) and
the prompt width and the number of new tokens to multiples of `BUCKET`, so
that a server compiles a handful of shapes instead of one per request.
"""

import collections
import itertools
import secrets
import threading
import time

from kerasformers.backend import compiles_per_shape
from kerasformers.generation import stream_generate

BUCKET = 16


class ServerClosing(RuntimeError):
    """The server is shutting down and takes no new request."""


class Job:
    """One prompt to complete, and how its progress reaches the client.

    Args:
        ids: the prompt ids.
        max_tokens: the most tokens to generate.
        sampling: {"method", "temperature", "top_k", "top_p",
            "repetition_penalty"} (batched together only when equal).
        stops: strings that end the completion (not included in it).
        seed: None, or the sampling seed; a seeded request is decoded alone,
            so that its output depends on nothing but its own arguments.
        emit: a thread-safe callable receiving the events
            {"type": "delta", "text"} and, once, {"type": "done",
            "finish_reason", "text", "completion_tokens"} or
            {"type": "error", "message"}.
    """

    _ids = itertools.count()

    def __init__(self, ids, max_tokens, sampling, emit, stops=(), seed=None):
        self.ids = list(ids)
        self.max_tokens = int(max_tokens)
        self.sampling = dict(sampling)
        self.stops = [s for s in stops if s]
        self.seed = seed
        self.emit = emit
        self.cancelled = False
        self.finished = False
        self.tokens = []
        self.sent = ""
        unique = next(self._ids) if seed is not None else None
        self.key = tuple(sorted(self.sampling.items())) + (("alone", unique),)

    def cancel(self):
        """Called by the client's side when it goes away: the row stops counting."""
        self.cancelled = True


def _round_up(n, multiple):
    return -(-n // multiple) * multiple


class Batcher:
    """The worker thread decoding queued jobs in batches.

    Args:
        served: the `ServedModel` (kind "generation").
        max_batch: the most rows decoded together (1: one request at a time).
        window: seconds to wait, after the first request of a batch arrives,
            for more to join.
        bucket: round shapes up (default: where the backend compiles per
            shape).
    """

    def __init__(self, served, max_batch=8, window=0.01, bucket=None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.served = served
        self.max_batch = int(max_batch)
        self.window = float(window)
        self.bucket = compiles_per_shape() if bucket is None else bool(bucket)
        self._queue = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._running = 0
        self.stats = {"batches": 0, "largest_batch": 0, "completed": 0, "cancelled": 0}
        self._thread = threading.Thread(target=self._work, name="kerasformers-batcher")
        self._thread.daemon = True
        self._thread.start()

    # ------------------------------------------------------------ client side
    def submit(self, job):
        with self._cond:
            if self._closing:
                raise ServerClosing("the server is shutting down")
            self._queue.append(job)
            self._cond.notify_all()

    def status(self):
        with self._cond:
            queued = sum(not job.cancelled for job in self._queue)
            return dict(self.stats, queued=queued, running=self._running)

    def close(self, timeout=None):
        """Takes no new job, finishes the queued and running ones, stops the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # ------------------------------------------------------------ worker side
    def _take(self):
        """The next batch: the oldest job and those that can join it."""
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            first = self._queue.popleft()
            batch = [first]
            deadline = time.monotonic() + self.window
            while len(batch) < self.max_batch:
                for job in list(self._queue):
                    if len(batch) == self.max_batch:
                        break
                    if job.key == first.key:
                        self._queue.remove(job)
                        batch.append(job)
                left = deadline - time.monotonic()
                if len(batch) == self.max_batch or left <= 0 or self._closing:
                    break
                self._cond.wait(left)
            live = [job for job in batch if not job.cancelled]
            self.stats["cancelled"] += len(batch) - len(live)
            self._running = len(live)
            return live

    def _work(self):
        while True:
            batch = self._take()
            if batch is None:
                return
            if batch:
                try:
                    self._decode(batch)
                except Exception as error:  # answer every waiting client, keep serving
                    for job in batch:
                        if not job.finished:
                            job.finished = True
                            _send(job, {"type": "error", "message": f"generation failed: {error}"})
            with self._cond:
                self._running = 0

    def _shapes(self, batch):
        """(prompts, max_new_tokens, pad_to) of the batch, bucketed if asked."""
        prompts = [job.ids for job in batch]
        new = max(job.max_tokens for job in batch)
        width = max(len(p) for p in prompts)
        if not self.bucket:
            return prompts, new, None
        rows = min(1 << (len(prompts) - 1).bit_length(), self.max_batch)
        prompts = prompts + [prompts[0]] * (rows - len(prompts))
        new_b, width_b = _round_up(new, BUCKET), _round_up(width, BUCKET)
        context = self.served.context
        if context is not None and not self.served.seq2seq:
            new_b = max(new, min(new_b, context - width))
            width_b = max(width, min(width_b, context - new_b))
        return prompts, new_b, width_b

    def _decode(self, batch):
        self.stats["batches"] += 1
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
        prompts, new, pad_to = self._shapes(batch)
        sampling = dict(batch[0].sampling)
        seed = batch[0].seed
        if sampling["method"] == "sample" and seed is None:
            seed = secrets.randbelow(2**31)
        end_ids = list(self.served.end_ids) or None
        steps = stream_generate(
            self.served.model,
            prompts,
            max_new_tokens=new,
            end_id=end_ids,
            seed=seed if sampling["method"] == "sample" else None,
            pad_to=pad_to,
            **sampling,
        )
        try:
            for new_tokens in steps:
                for job, tokens in zip(batch, new_tokens, strict=False):  # fillers last
                    if job.finished:
                        continue
                    if job.cancelled:
                        self._finish(job, None)
                    elif not tokens:
                        self._finish(job, "stop")
                    else:
                        self._advance(job, tokens[0])
                if all(job.finished for job in batch):
                    break
            for job in batch:  # the rows still running when the steps ran out
                if not job.finished:
                    self._finish(job, "stop" if len(job.tokens) < job.max_tokens else "length")
        finally:
            steps.close()

    def _advance(self, job, token):
        job.tokens.append(token)
        text = self.served.decode(job.tokens)
        for stop in job.stops:
            at = text.find(stop)
            if at >= 0:
                self._finish(job, "stop", text[:at])
                return
        if len(job.tokens) >= job.max_tokens:
            self._finish(job, "length", text)
            return
        shown = _shown(text, job.stops)
        if len(shown) > len(job.sent) and shown.startswith(job.sent):
            _send(job, {"type": "delta", "text": shown[len(job.sent) :]})
            job.sent = shown

    def _finish(self, job, reason, text=None):
        job.finished = True
        if reason is None:  # the client went away
            self.stats["cancelled"] += 1
            return
        if text is None:
            text = self.served.decode(job.tokens)
        if text.startswith(job.sent) and len(text) > len(job.sent):
            _send(job, {"type": "delta", "text": text[len(job.sent) :]})
        self.stats["completed"] += 1
        _send(
            job,
            {
                "type": "done",
                "finish_reason": reason,
                "text": text,
                "completion_tokens": len(job.tokens),
            },
        )


def _shown(text, stops):
    """The part of `text` safe to send: no half-decoded character at its end,
    no tail that may yet grow into a stop string."""
    text = text.rstrip("\ufffd")
    hold = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                hold = max(hold, n)
                break
    return text[: len(text) - hold]


def _send(job, event):
    try:
        job.emit(event)
    except RuntimeError:  # the client's event loop is gone (server stopping)
        job.cancelled = True
