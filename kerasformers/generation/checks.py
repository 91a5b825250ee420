"""Validation of `generate`'s host-side inputs: prompts, segments and settings,
and the padded host arrays of one call (`Request`).

Everything is checked here, before anything is compiled: a compiled jax graph
cannot raise, so an id outside the vocabulary would otherwise decode silently
into NaN or garbage.
"""

import math
import numbers

import numpy as np
from keras import ops

from kerasformers.generation.cached import graph_plan
from kerasformers.snippets.inputs import check_inputs

METHODS = ("greedy", "beam", "sample")
SEED_LIMIT = 2**31  # seeds travel as int32


def _is_int(value):
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(
        value, (bool, np.bool_)
    )


def _is_real(value):
    return isinstance(value, (numbers.Real, np.floating, np.integer)) and not isinstance(
        value, (bool, np.bool_)
    )


def _rows(value, name):
    """A batch of id rows from a list of lists, one list, or a 1-D / 2-D int array."""
    if value is None:
        raise TypeError(f"generate: {name} must be a list of ids or a list of such lists, got None")
    if isinstance(value, np.ndarray):
        if value.ndim not in (1, 2) or not (
            value.size == 0 or np.issubdtype(value.dtype, np.integer)
        ):
            raise TypeError(
                f"generate: {name} must be a 1-D or 2-D integer array, got an array of "
                f"dtype {value.dtype} and shape {value.shape}"
            )
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise TypeError(
            f"generate: {name} must be a list of ids or a list of such lists, "
            f"got {type(value).__name__}"
        )
    value = list(value)
    if value and not isinstance(value[0], (list, tuple, np.ndarray)):
        value = [value]  # one prompt
    rows = []
    for row_index, row in enumerate(value):
        if isinstance(row, np.ndarray):
            row = row.tolist()
        if not isinstance(row, (list, tuple)):
            raise TypeError(
                f"generate: {name}[{row_index}] must be a list of ids, got {type(row).__name__}"
            )
        for column, item in enumerate(row):
            if not _is_int(item):
                raise TypeError(
                    f"generate: {name}[{row_index}][{column}] must be an integer id, got "
                    f"{item!r} ({type(item).__name__})"
                )
        rows.append([int(t) for t in row])
    return rows


def check_prompts(token_ids, segment_ids, vocab_size, has_segments):
    """Validated (prompts, segments): lists of int lists, one per batch row."""
    prompts = _rows(token_ids, "token_ids")
    if not prompts:
        raise ValueError("generate: token_ids holds no prompt")
    for row, prompt in enumerate(prompts):
        if not prompt:
            raise ValueError(f"generate: prompt {row} is empty; give at least one token")
        bad = [t for t in prompt if not 0 <= t < vocab_size]
        if bad:
            raise ValueError(
                f"generate: prompt {row} holds id {bad[0]} outside the vocabulary [0, {vocab_size})"
            )
    if segment_ids is None:
        return prompts, [[0] * len(p) for p in prompts]
    if not has_segments:
        raise ValueError("generate: segment_ids given, but the model has no segment input")
    segments = _rows(segment_ids, "segment_ids")
    if [len(s) for s in segments] != [len(p) for p in prompts]:
        raise ValueError(
            "generate: segment_ids must have the shape of token_ids, got lengths "
            f"{[len(s) for s in segments]} for prompts of lengths {[len(p) for p in prompts]}"
        )
    return prompts, segments


def _check_int(value, name, minimum):
    if not _is_int(value) or value < minimum:
        raise ValueError(f"generate: {name} must be an integer >= {minimum}, got {value!r}")


def check_settings(vocab_size, **settings):
    """Validates the decoding settings; returns them normalised (a dict)."""
    method, num_beams = settings["method"], settings["num_beams"]
    max_new_tokens, min_new_tokens = settings["max_new_tokens"], settings["min_new_tokens"]
    top_k, top_p = settings["top_k"], settings["top_p"]
    temperature, length_penalty = settings["temperature"], settings["length_penalty"]
    repetition_penalty = settings["repetition_penalty"]
    if method not in METHODS:
        raise ValueError(f"generate: unknown method {method!r}; choose one of {METHODS}")
    _check_int(max_new_tokens, "max_new_tokens", 1)
    _check_int(min_new_tokens, "min_new_tokens", 0)
    if min_new_tokens > max_new_tokens:
        raise ValueError(
            f"generate: min_new_tokens ({min_new_tokens}) > max_new_tokens ({max_new_tokens})"
        )
    if method == "beam":
        _check_int(num_beams, "num_beams", 1)
    else:
        num_beams = 1
    if top_k is not None:
        _check_int(top_k, "top_k", 1)
    if top_p is not None and not (_is_real(top_p) and 0.0 < top_p <= 1.0):
        raise ValueError(f"generate: top_p must be a number in (0, 1], got {top_p!r}")
    if not (_is_real(temperature) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"generate: temperature must be a finite number > 0, got {temperature!r}")
    if not (_is_real(length_penalty) and math.isfinite(length_penalty)):
        raise ValueError(
            f"generate: length_penalty must be a finite number, got {length_penalty!r}"
        )
    if not (
        _is_real(repetition_penalty)
        and math.isfinite(repetition_penalty)
        and repetition_penalty > 0
    ):
        raise ValueError(
            "generate: repetition_penalty must be a finite number > 0 (1.0 = off), got "
            f"{repetition_penalty!r}"
        )
    return {
        "max_new_tokens": int(max_new_tokens),
        "method": method,
        "num_beams": int(num_beams),
        "top_k": None if top_k is None else min(int(top_k), vocab_size),
        "top_p": None if top_p is None else float(top_p),
        "temperature": float(temperature),
        "end_id": check_end_ids(settings["end_id"], vocab_size),
        "min_new_tokens": int(min_new_tokens),
        "length_penalty": float(length_penalty),
        "repetition_penalty": float(repetition_penalty),
    }


def check_end_ids(end_id, vocab_size):
    """None, or the end ids as a tuple of distinct ints (from one id or a list)."""
    if end_id is None:
        return None
    if isinstance(end_id, np.ndarray):
        end_id = end_id.tolist()
    if isinstance(end_id, (list, tuple)):
        if not end_id:
            raise ValueError("generate: end_id is an empty list; give at least one id, or None")
        names = [f"end_id[{i}]" for i in range(len(end_id))]
        ids = list(end_id)
    else:
        names, ids = ["end_id"], [end_id]
    for name, value in zip(names, ids, strict=True):
        if not _is_int(value):
            raise ValueError(
                f"generate: {name} must be an integer id (or end_id a list of them), got "
                f"{value!r} ({type(value).__name__})"
            )
        if not 0 <= value < vocab_size:
            raise ValueError(
                f"generate: {name} {value} is outside the vocabulary [0, {vocab_size})"
            )
    return tuple(dict.fromkeys(int(i) for i in ids))


def check_seed(seed):
    """An int seed in [0, 2**31); a random one for None."""
    if seed is None:
        return int(np.random.randint(0, SEED_LIMIT - 1))
    if not _is_int(seed) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"generate: seed must be an integer in [0, 2**31), got {seed!r}")
    return int(seed)


class Request:
    """One validated `generate` call: the plan, the settings and the host arrays.

    Attributes:
        plan: the model's `GraphPlan`.
        settings: the normalised settings (`check_settings`, plus the decoder
            start id of a seq2seq model and return_logits).
        ids: (batch, width) int32 prompts, left-padded (decoder-only) or
            right-padded (T5's encoder input).
        segments: (batch, width) int32 segment ids.
        pad_lengths: (batch,) int32 left padding of each row.
        seed: (1,) int32 sampling seed.
        end_ids: None, or the tuple of end ids.
        penalty: the repetition penalty (1.0: off).
        seen: None, or with a repetition penalty the (batch, vocab) bool mask
            of the tokens already in each sequence: the prompt's real tokens
            (never its padding), or a T5 decoder's start token.

    The end ids and the penalty are inputs of the compiled functions, not
    settings: `settings` keeps only how many end ids there are
    ("num_end_ids") and whether repeats are penalised ("penalise_repeats"),
    so a server that varies them per request compiles once.
    """

    def __init__(self, model, token_ids, segment_ids, seed, return_logits, pad_to=None, **settings):
        plan = graph_plan(model)
        if not plan.causal:
            raise ValueError(
                "generate needs a language model, and no layer of this model declares a "
                "causal attention order; build it with application='lm' or 'unilm' (the "
                "gpt* models and t5 always are)"
            )
        vocab = plan.vocab_size
        prompts, segments = check_prompts(token_ids, segment_ids, vocab, "segments" in plan.roles)
        settings = check_settings(vocab, **settings)
        if return_logits and settings["method"] == "beam":
            raise ValueError("generate: return_logits is available for greedy and sampling only")
        seq2seq = "source" in plan.roles
        builder = getattr(model, "_kf_builder", None)
        # Models loaded from .keras carry no builder: T5's pad and start id are 0.
        pad_id = getattr(builder, "pad_token_id", None) or 0
        if seq2seq:
            decoder = getattr(builder, "decoder_builder", None)
            settings["decoder_start_id"] = int(getattr(decoder, "decoder_start_token_id", 0) or 0)
        settings["return_logits"] = bool(return_logits)

        lengths = np.array([len(p) for p in prompts], dtype="int32")
        width = int(lengths.max())
        if pad_to is not None:
            if not _is_int(pad_to) or pad_to < 1:
                raise ValueError(f"generate: pad_to must be a positive int or None, got {pad_to!r}")
            width = max(width, int(pad_to))
        ids = np.full((len(prompts), width), pad_id, dtype="int32")
        segs = np.zeros((len(prompts), width), dtype="int32")
        for row, (prompt, segment) in enumerate(zip(prompts, segments, strict=True)):
            # Decoder-only prompts are left-padded (the new tokens follow every
            # prompt in the same slots); encoder inputs are right-padded.
            start = 0 if seq2seq else width - len(prompt)
            ids[row, start : start + len(prompt)] = prompt
            segs[row, start : start + len(prompt)] = segment

        # The host-side check of every id against its table (a compiled jax graph
        # cannot raise: an id past a table would decode silently into NaN).
        host = {
            "tokens": ids,
            "segments": segs,
            "positions": np.maximum(np.arange(width)[None, :] - (width - lengths)[:, None], 0),
            "source": ids,
        }
        if seq2seq:  # the decoder's first input is its start token
            host["tokens"] = np.full((len(prompts), 1), settings["decoder_start_id"], "int32")
        check_inputs(model, [host[role] for role in plan.roles])

        self.end_ids = settings.pop("end_id")
        self.penalty = settings.pop("repetition_penalty")
        settings["num_end_ids"] = 0 if self.end_ids is None else len(self.end_ids)
        settings["penalise_repeats"] = self.penalty != 1.0
        self.seen = None
        if settings["penalise_repeats"]:
            # HF penalises every id of the decoder's input so far: a decoder-only
            # model's prompt, T5's decoder start token (never the encoder input).
            self.seen = np.zeros((len(prompts), vocab), dtype="bool")
            for row, prompt in enumerate(prompts):
                self.seen[row, [settings["decoder_start_id"]] if seq2seq else prompt] = True
        self.plan = plan
        self.settings = settings
        self.ids = ids
        self.segments = segs
        self.pad_lengths = (width - lengths).astype("int32")
        self.seed = np.array([check_seed(seed)], dtype="int32")

    def tensors(self):
        """(ids, segments, pad_lengths, seed, options): the compiled functions'
        inputs; options holds "end_ids" (n,) int32 with end ids, and "penalty"
        () float32 and "seen" with a repetition penalty."""
        options = {}
        if self.end_ids is not None:
            options["end_ids"] = ops.convert_to_tensor(np.array(self.end_ids, dtype="int32"))
        if self.seen is not None:
            options["penalty"] = ops.convert_to_tensor(np.float32(self.penalty))
            options["seen"] = ops.convert_to_tensor(self.seen)
        return (
            ops.convert_to_tensor(self.ids),
            ops.convert_to_tensor(self.segments),
            ops.convert_to_tensor(self.pad_lengths),
            ops.convert_to_tensor(self.seed),
            options,
        )


def cut_at_end(rows, end_ids):
    """Each row of ids up to (without) its first end id of any kind."""
    if end_ids is None:
        return rows
    ends = set(end_ids)
    out = []
    for row in rows:
        stop = next((i for i, token in enumerate(row) if token in ends), len(row))
        out.append(row[:stop])
    return out
