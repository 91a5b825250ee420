"""Validation of `generate`'s host-side inputs: prompts, segments and settings.

Everything is checked here, before anything is compiled: a compiled jax graph
cannot raise, so an id outside the vocabulary would otherwise decode silently
into NaN or garbage.
"""

import math
import numbers

import numpy as np

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
    top_k, top_p, end_id = settings["top_k"], settings["top_p"], settings["end_id"]
    temperature, length_penalty = settings["temperature"], settings["length_penalty"]
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
    if end_id is not None:
        _check_int(end_id, "end_id", 0)
        if end_id >= vocab_size:
            raise ValueError(
                f"generate: end_id {end_id} is outside the vocabulary [0, {vocab_size})"
            )
    return {
        "max_new_tokens": int(max_new_tokens),
        "method": method,
        "num_beams": int(num_beams),
        "top_k": None if top_k is None else min(int(top_k), vocab_size),
        "top_p": None if top_p is None else float(top_p),
        "temperature": float(temperature),
        "end_id": None if end_id is None else int(end_id),
        "min_new_tokens": int(min_new_tokens),
        "length_penalty": float(length_penalty),
    }


def check_seed(seed):
    """An int seed in [0, 2**31); a random one for None."""
    if seed is None:
        return int(np.random.randint(0, SEED_LIMIT - 1))
    if not _is_int(seed) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"generate: seed must be an integer in [0, 2**31), got {seed!r}")
    return int(seed)
