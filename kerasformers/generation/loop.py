"""The decode loop: the prefill pass, then one cached pass per new token.

Plain `keras.ops` over tensors with fixed shapes (each cache holds prompt +
new slots from the start), so the whole loop compiles once per backend (see
`kerasformers.backend.generation`).
"""

import threading
import weakref

import keras
from keras import ops

from kerasformers.backend import compile_generation
from kerasformers.generation.cached import Decoding
from kerasformers.generation.search import BeamSearch, TokenSearch

_COMPILED = weakref.WeakKeyDictionary()
_COMPILED_LOCK = threading.Lock()


def compiled(plan, settings):
    """The compiled generation function of the plan's model for these settings.

    Memoised per model (weakly: it goes with the model) and per settings; safe
    to call from several threads.
    """
    key = tuple(sorted(settings.items()))
    with _COMPILED_LOCK:
        functions = _COMPILED.setdefault(plan.model, {})
        if key not in functions:

            def fn(ids, segs, pad_lengths, seed):
                return decode(plan, settings, ids, segs, pad_lengths, seed)

            functions[key] = compile_generation(fn, plan.model.variables)
        return functions[key]


def decode(plan, settings, ids, segs, pad_lengths, seed):
    """Prefill + the decode loop; returns (batch, max_new_tokens) ids, and with
    `settings["return_logits"]` also the (batch, max_new_tokens, vocab) logits."""
    batch, width = ops.shape(ids)
    new = settings["max_new_tokens"]
    beams = settings["num_beams"]
    seq2seq = "source" in plan.roles
    if seq2seq:
        # The encoder reads the (right-padded) ids once; the decoder starts from
        # its start token and owns every slot.
        source = ids
        prompt = ops.full((batch, 1), settings["decoder_start_id"], "int32")
        length, start = new, 1
        pad_lengths = ops.zeros((batch,), "int32")
        next_segment = None
    else:
        source, prompt = None, ids
        length, start = width + new, width
        if plan.decode_segment is None:
            next_segment = segs[:, -1:]
        else:
            next_segment = ops.full((batch, 1), plan.decode_segment, "int32")

    def feeds(tokens, segments, positions, source):
        return {"tokens": tokens, "segments": segments, "positions": positions, "source": source}

    first = Decoding(0, ops.shape(prompt)[1], length, pad_lengths, {}, {})
    logits, frontier = plan.run(feeds(prompt, segs, first.positions, source), first)
    caches, statics = first.caches, first.statics
    # Per-row tensors of every later pass (beams repeat them).
    rows = {"pad_lengths": pad_lengths, "next_segment": next_segment, "frontier": frontier}
    if beams > 1:
        # Every beam starts from its prompt's prefill.
        repeat = lambda t: None if t is None else ops.repeat(t, beams, axis=0)  # noqa: E731
        caches, statics, rows, logits = keras.tree.map_structure(
            repeat, (caches, statics, rows, logits)
        )
        search = BeamSearch(settings, batch)
    else:
        search = TokenSearch(settings, batch, seed)

    record = settings.get("return_logits", False)
    state = search.choose(search.initial(), logits, 0)
    if record:
        vocab = ops.shape(logits)[-1]
        history = ops.zeros((batch, new, vocab), "float32")
        state = (state, _record(history, logits, 0, new))

    def cond(step, caches, state):
        return ops.logical_and(step < new, search.running(state[0] if record else state))

    def body(step, caches, state):
        inner = state[0] if record else state
        tokens, caches = search.reorder(inner, caches, step)
        decoding = Decoding(start + step - 1, 1, length, rows["pad_lengths"], caches, statics)
        passes = feeds(tokens, rows["next_segment"], decoding.positions, None)
        logits, _ = plan.run(passes, decoding, rows["frontier"])
        inner = search.choose(inner, logits, step)
        if record:
            return step + 1, decoding.caches, (inner, _record(state[1], logits, step, new))
        return step + 1, decoding.caches, inner

    _, _, state = ops.while_loop(cond, body, (ops.convert_to_tensor(1), caches, state))
    if record:
        return search.result(state[0]), state[1]
    return search.result(state)


def _record(history, logits, step, new):
    # (batch, new, vocab): the logits of step `step` written in its column
    column = ops.arange(new) == step
    return ops.where(column[None, :, None], logits[:, None, :], history)
