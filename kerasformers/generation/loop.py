"""The decode loop: the prefill pass, then one cached pass per new token.

Plain `keras.ops` over tensors with fixed shapes (each cache holds prompt +
new slots from the start), so the whole loop compiles once per backend (see
`kerasformers.backend.generation`). Streaming runs the same two parts, the
prefill and one step, as separately compiled functions driven from Python.
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


def compiled(plan, settings, kind="generate"):
    """A compiled generation function of the plan's model for these settings.

    Memoised per model (weakly: it goes with the model), per settings and per
    kind; safe to call from several threads.

    Args:
        plan: the model's `GraphPlan`.
        settings: the normalised settings of `generate`.
        kind: "generate", the whole generation,
            `(ids, segments, pad_lengths, seed, options) -> tokens [, logits]`;
            "prefill", the first pass and the choice of the first token,
            `(ids, segments, pad_lengths, seed, options) -> (carry, context, token, done)`;
            "step", one later pass (its carry, the caches and the search
            state, may be written in place),
            `(step, carry, context, seed, options) -> (carry, token, done)`.
            `token` and `done` are the (batch,) ids chosen at that step and
            whether each row has ended; `options` are the traced settings
            (`checks.Request.tensors`), so that they cost no new compile.
    """
    key = (kind,) + tuple(sorted(settings.items()))
    with _COMPILED_LOCK:
        functions = _COMPILED.setdefault(plan.model, {})
        if key not in functions:
            variables = plan.model.variables
            if kind == "generate":

                def fn(ids, segs, pad_lengths, seed, options):
                    return decode(plan, settings, ids, segs, pad_lengths, seed, options)

                functions[key] = compile_generation(fn, variables)
            elif kind == "prefill":

                def fn(ids, segs, pad_lengths, seed, options):
                    search, carry, context, _ = prefill(
                        plan, settings, ids, segs, pad_lengths, seed, options
                    )
                    return (carry, context) + search.chosen(carry[1], 0)

                functions[key] = compile_generation(fn, variables)
            elif kind == "step":

                def fn(step, carry, context, seed, options):
                    batch = ops.shape(carry[1]["tokens"])[0]
                    search = _search(settings, batch, seed, options)
                    carry = advance(plan, settings, search, step, carry, context)[:2]
                    return (carry,) + search.chosen(carry[1], step)

                functions[key] = compile_generation(fn, variables, donate=(1,))
            else:
                raise ValueError(f"compiled: unknown kind {kind!r}")
        return functions[key]


def _search(settings, batch, seed, options):
    if settings["num_beams"] > 1:
        return BeamSearch(settings, batch, options)
    return TokenSearch(settings, batch, seed, options)


def prefill(plan, settings, ids, segs, pad_lengths, seed, options):
    """The first pass over the prompts and the choice of the first new token.

    Returns:
        (search, carry, context, logits): the search strategy; carry =
        (caches, search state), what every step updates; context =
        (statics, per-row tensors, the slots), what every step reads; the
        (rows, vocab) logits of the first token.
    """
    batch, width = ops.shape(ids)
    new = settings["max_new_tokens"]
    beams = settings["num_beams"]
    if "source" in plan.roles:
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

    seen = options.get("seen")
    first = Decoding(0, ops.shape(prompt)[1], length, pad_lengths, {}, {})
    logits, frontier = plan.run(_feeds(prompt, segs, first.positions, source), first)
    caches, statics = first.caches, first.statics
    # Per-row tensors of every later pass (beams repeat them).
    rows = {"pad_lengths": pad_lengths, "next_segment": next_segment, "frontier": frontier}
    if beams > 1:
        # Every beam starts from its prompt's prefill.
        repeat = lambda t: None if t is None else ops.repeat(t, beams, axis=0)  # noqa: E731
        caches, statics, rows, logits, seen = keras.tree.map_structure(
            repeat, (caches, statics, rows, logits, seen)
        )
    search = _search(settings, batch, seed, options)
    state = search.choose(search.initial(seen), logits, 0)
    # The slots are static ints: the shape of an empty (start, length, 0)
    # tensor carries them into the separately compiled step.
    slots = ops.zeros((start, length, 0), "int8")
    return search, (caches, state), (statics, rows, slots), logits


def advance(plan, settings, search, step, carry, context):
    """One cached pass: feeds the token of step - 1, chooses the token of `step`.

    Returns (caches, state, logits).
    """
    caches, state = carry
    statics, rows, slots = context
    start, length, _ = ops.shape(slots)
    tokens, caches = search.reorder(state, caches, step)
    decoding = Decoding(start + step - 1, 1, length, rows["pad_lengths"], caches, statics)
    passes = _feeds(tokens, rows["next_segment"], decoding.positions, None)
    logits, _ = plan.run(passes, decoding, rows["frontier"])
    return decoding.caches, search.choose(state, logits, step), logits


def decode(plan, settings, ids, segs, pad_lengths, seed, options):
    """Prefill + the decode loop; returns (batch, max_new_tokens) ids, and with
    `settings["return_logits"]` also the (batch, max_new_tokens, vocab) logits."""
    new = settings["max_new_tokens"]
    search, (caches, state), context, logits = prefill(
        plan, settings, ids, segs, pad_lengths, seed, options
    )
    record = settings.get("return_logits", False)
    if record:
        batch, vocab = ops.shape(logits)
        history = ops.zeros((batch, new, vocab), "float32")
        state = (state, _record(history, logits, 0, new))

    def cond(step, caches, state):
        return ops.logical_and(step < new, search.running(state[0] if record else state))

    def body(step, caches, state):
        inner = state[0] if record else state
        caches, inner, logits = advance(plan, settings, search, step, (caches, inner), context)
        if record:
            return step + 1, caches, (inner, _record(state[1], logits, step, new))
        return step + 1, caches, inner

    _, _, state = ops.while_loop(cond, body, (ops.convert_to_tensor(1), caches, state))
    if record:
        return search.result(state[0]), state[1]
    return search.result(state)


def _feeds(tokens, segments, positions, source):
    return {"tokens": tokens, "segments": segments, "positions": positions, "source": source}


def _record(history, logits, step, new):
    # (batch, new, vocab): the logits of step `step` written in its column
    column = ops.arange(new) == step
    return ops.where(column[None, :, None], logits[:, None, :], history)
