"""Search strategies of `kerasformers.generation`: greedy, sampling, beam search.

Each strategy keeps its state in a dict of tensors (a loop variable of
`keras.ops.while_loop`): `initial(seen)` makes it (`seen`: None, or with a
repetition penalty the (rows, vocab) bool mask of the tokens so far, which the
state carries and updates), `choose(state, logits, step)`
picks the tokens of step `step` from the (rows, vocab) logits, `reorder` gives
the tokens to feed next and reorders the key/value caches (beams), `running`
says whether to go on, `result` gives the (batch, max_new_tokens) ids.
"""

import keras
from keras import ops

from kerasformers.backend import infinity, random_uniform

_NEG = -1.0e9  # HF's "impossible" beam score


def _is_end(tokens, end_ids):
    """Whether each id of the int tensor `tokens` is one of the (n,) `end_ids`."""
    return ops.any(ops.expand_dims(tokens, -1) == end_ids, axis=-1)


def _log_probs(logits, step, settings, options):
    """Log-softmax of the logits with every end id forbidden before min_new_tokens."""
    logits = ops.log_softmax(logits, axis=-1)
    end_ids = options.get("end_ids")
    if end_ids is not None and settings["min_new_tokens"] > 0:
        vocab = ops.shape(logits)[-1]
        forbid = ops.logical_and(
            _is_end(ops.arange(vocab), end_ids), step < settings["min_new_tokens"]
        )
        logits = ops.where(forbid[None, :], -infinity(), logits)
    return logits


def penalize(scores, seen, penalty):
    """HF's repetition penalty on (rows, vocab) scores: the score of every token
    already in the sequence (`seen`, (rows, vocab) bool) is divided by `penalty`
    where positive and multiplied by it where negative.

    Reference:
        CTRL, section 4.1: https://arxiv.org/abs/1909.05858
    """
    penalized = ops.where(scores < 0, scores * penalty, scores / penalty)
    return ops.where(seen, penalized, scores)


def mark_seen(seen, tokens):
    """`seen` (..., vocab) bool with `tokens` (...) int ids added."""
    vocab = ops.shape(seen)[-1]
    return ops.logical_or(seen, ops.arange(vocab) == ops.expand_dims(tokens, -1))


class TokenSearch:
    """Greedy decoding and sampling: one running sequence per prompt."""

    def __init__(self, settings, batch, seed, options):
        self.settings = settings
        self.batch = batch
        self.seed = seed
        self.options = options

    def initial(self, seen=None):
        new = self.settings["max_new_tokens"]
        state = {
            "tokens": ops.zeros((self.batch, new), "int32"),  # (batch, new)
            "done": ops.zeros((self.batch,), "bool"),
        }
        if seen is not None:
            state["seen"] = seen  # (batch, vocab)
        return state

    def running(self, state):
        return ops.logical_not(ops.all(state["done"]))

    def reorder(self, state, caches, step):
        # (batch, 1) the token chosen at step - 1
        return ops.take(state["tokens"], ops.reshape(step - 1, (1,)), axis=1), caches

    def chosen(self, state, step):
        """(batch,) ids chosen at `step`, and (batch,) whether each row has ended."""
        return ops.take(state["tokens"], ops.reshape(step, (1,)), axis=1)[:, 0], state["done"]

    def choose(self, state, logits, step):
        tokens, done = state["tokens"], state["done"]
        settings, options = self.settings, self.options
        if "seen" in state:  # on the raw logits, as HF's greedy search and sampling
            logits = penalize(logits, state["seen"], options["penalty"])
        scores = _log_probs(logits, step, settings, options)
        if settings["method"] == "sample":
            scores = _filter(scores / settings["temperature"], settings)
            noise = random_uniform(ops.shape(scores), self.seed, step)
            # Gumbel-max: argmax(scores + Gumbel noise) samples softmax(scores).
            gumbel = -ops.log(-ops.log(ops.clip(noise, 1e-20, 1.0 - 1e-7)))
            scores = scores + gumbel
        token = ops.cast(ops.argmax(scores, axis=-1), "int32")
        end_ids = options.get("end_ids")
        if end_ids is not None:
            token = ops.where(done, end_ids[0], token)
            done = ops.logical_or(done, _is_end(token, end_ids))
        column = ops.arange(settings["max_new_tokens"]) == step
        state = dict(state, tokens=ops.where(column[None, :], token[:, None], tokens), done=done)
        if "seen" in state:
            state["seen"] = mark_seen(state["seen"], token)
        return state

    def result(self, state):
        return state["tokens"]


def _filter(scores, settings):
    """Keeps the top_k / top_p candidates of (batch, vocab) log-probabilities."""
    top_k, top_p = settings["top_k"], settings["top_p"]
    if top_k is not None:
        kth = ops.top_k(scores, top_k)[0][:, -1:]
        scores = ops.where(scores < kth, -infinity(), scores)
    if top_p is not None and top_p < 1.0:
        ordered = ops.flip(ops.sort(scores, axis=-1), axis=-1)
        probs = ops.softmax(ordered, axis=-1)
        # probability mass strictly before each candidate, in descending order
        before = ops.cumsum(probs, axis=-1) - probs
        kept = ops.where(before < top_p, ordered, infinity())
        threshold = ops.min(kept, axis=-1, keepdims=True)
        scores = ops.where(scores < threshold, -infinity(), scores)
    return scores


class BeamSearch:
    """Batched beam search with HF transformers' scoring and stopping rule."""

    def __init__(self, settings, batch, options):
        self.settings = settings
        self.batch = batch
        self.beams = settings["num_beams"]
        self.options = options

    def initial(self, seen=None):
        batch, beams, new = self.batch, self.beams, self.settings["max_new_tokens"]
        first = ops.concatenate([ops.zeros((batch, 1)), ops.full((batch, beams - 1), _NEG)], axis=1)
        state = {
            "running": ops.zeros((batch, beams, new), "int32"),
            "running_scores": ops.cast(first, "float32"),
            "finished": ops.zeros((batch, beams, new), "int32"),
            "finished_scores": ops.full((batch, beams), _NEG, "float32"),
            "is_finished": ops.zeros((batch, beams), "bool"),
            "improvable": ops.ones((batch, 1), "bool"),
            "sources": ops.zeros((batch, beams), "int32"),
            "all_hit": ops.zeros((), "bool"),
        }
        if seen is not None:  # (batch * beams, vocab) -> (batch, beams, vocab)
            state["seen"] = ops.reshape(seen, (batch, beams, -1))
        return state

    def running(self, state):
        return ops.logical_and(ops.any(state["improvable"]), ops.logical_not(state["all_hit"]))

    def reorder(self, state, caches, step):
        batch, beams = self.batch, self.beams
        # (batch * beams,) rows of the beams each new beam continues
        rows = ops.reshape(state["sources"] + ops.arange(batch)[:, None] * beams, (-1,))
        caches = keras.tree.map_structure(lambda t: ops.take(t, rows, axis=0), caches)
        tokens = ops.take(state["running"], ops.reshape(step - 1, (1,)), axis=2)
        return ops.reshape(tokens, (batch * beams, 1)), caches

    def choose(self, state, logits, step):
        settings = self.settings
        batch, beams, new = self.batch, self.beams, settings["max_new_tokens"]
        end_ids = self.options.get("end_ids")
        # HF keeps enough candidates that `beams` of them survive every end id.
        keep = max(2, 1 + settings["num_end_ids"]) * beams
        scores = _log_probs(logits, step, settings, self.options)
        vocab = ops.shape(scores)[-1]
        if "seen" in state:  # on the log-probabilities, as HF's beam search
            seen = ops.reshape(state["seen"], (batch * beams, vocab))
            scores = penalize(scores, seen, self.options["penalty"])
        # (batch, beams * vocab) accumulated scores of every continuation
        scores = ops.reshape(scores, (batch, beams, vocab)) + state["running_scores"][:, :, None]
        top_scores, top_index = ops.top_k(ops.reshape(scores, (batch, beams * vocab)), keep)
        top_index = ops.cast(top_index, "int32")
        source = top_index // vocab
        token = top_index % vocab
        column = ops.arange(new) == step
        # (batch, keep, new) the candidates' sequences
        candidates = ops.take_along_axis(state["running"], source[:, :, None], axis=1)
        candidates = ops.where(column[None, None, :], token[:, :, None], candidates)
        hit = ops.broadcast_to(step >= new - 1, ops.shape(token))
        if end_ids is not None:
            hit = ops.logical_or(hit, _is_end(token, end_ids))

        # Running beams: the best `beams` candidates that did not just finish.
        running_scores = top_scores + ops.cast(hit, "float32") * _NEG
        best_running, pick = ops.top_k(running_scores, beams)
        pick = ops.cast(pick, "int32")
        running = ops.take_along_axis(candidates, pick[:, :, None], axis=1)
        sources = ops.take_along_axis(source, pick, axis=1)

        # Finished beams: merge the just-finished top-`beams` candidates in.
        in_top = ops.arange(keep) < beams
        just_finished = ops.logical_and(hit, in_top[None, :])
        penalty = ops.cast(step + 1, "float32") ** settings["length_penalty"]
        finished_scores = top_scores / penalty
        finished_scores += ops.cast(ops.logical_not(state["improvable"]), "float32") * _NEG
        finished_scores += ops.cast(ops.logical_not(just_finished), "float32") * _NEG
        merged = ops.concatenate([state["finished"], candidates], axis=1)
        merged_scores = ops.concatenate([state["finished_scores"], finished_scores], axis=1)
        merged_flags = ops.concatenate([state["is_finished"], just_finished], axis=1)
        kept_scores, kept = ops.top_k(merged_scores, beams)
        kept = ops.cast(kept, "int32")
        is_finished = ops.take_along_axis(merged_flags, kept, axis=1)

        # Can a running beam still beat the worst finished one?
        best_possible = best_running[:, :1] / penalty
        worst = ops.where(is_finished, ops.min(kept_scores, axis=1, keepdims=True), _NEG)
        improvable = ops.logical_and(
            state["improvable"], ops.any(best_possible > worst, axis=-1, keepdims=True)
        )
        state = {
            "running": running,
            "running_scores": best_running,
            "finished": ops.take_along_axis(merged, kept[:, :, None], axis=1),
            "finished_scores": kept_scores,
            "is_finished": is_finished,
            "improvable": improvable,
            "sources": sources,
            "all_hit": ops.all(hit),
            **self._seen(state, sources, ops.take_along_axis(token, pick, axis=1)),
        }
        return state

    def _seen(self, state, sources, tokens):
        """The seen-token masks of the new running beams: each continues its
        source beam's mask, plus its new token."""
        if "seen" not in state:
            return {}
        # (batch, beams, vocab)
        seen = ops.take_along_axis(state["seen"], sources[:, :, None], axis=1)
        return {"seen": mark_seen(seen, tokens)}

    def result(self, state):
        return state["finished"][:, 0]
