"""KV-cached, batched generation: greedy, beam search and sampling.

`generate` takes the keras.Model that `build_transformer_model` returned for a
language model (gpt, gpt2, gpt2_ml, any family with application="lm" or
"unilm") or a T5, and a ragged batch of prompts. Prompts are left-padded to
one length; each self-attention layer gets a (batch, prompt + new tokens,
heads, size) key/value cache that every step writes in place, so the shapes
never change and the whole loop compiles once (see `kerasformers.backend.
decoding` for how each backend runs it). The model's own template methods do
the forward passes (`kerasformers.models.decoding`), so every family decodes
the same way.

Beam search follows HF transformers' (length penalty, early stopping off: a
row stops when no running beam can beat its worst finished one, finished
scores are sum of log-probabilities / new length ** length_penalty).

Reference:
    Beam search and nucleus sampling: https://arxiv.org/abs/1904.09751
"""

import numpy as np
from keras import ops

from kerasformers.backend import compile_generation, infinity, random_uniform
from kerasformers.models.decoding import DecodeState, attention_cache_specs, run_cached

METHODS = ("greedy", "beam", "sample")
_NEG = -1.0e9  # HF's "impossible" beam score


def generate(
    model,
    token_ids,
    segment_ids=None,
    max_new_tokens=32,
    method="greedy",
    num_beams=4,
    top_k=None,
    top_p=None,
    temperature=1.0,
    end_id=None,
    min_new_tokens=0,
    seed=None,
    length_penalty=1.0,
):
    """Generates continuations of a batch of prompts with a key/value cache.

    Args:
        model: a language model built by `build_transformer_model` (gpt, gpt2,
            gpt2_ml, a family with application="lm" or "unilm", or a t5).
        token_ids: the prompts, a list of lists of ids (ragged; the library
            pads) or one list of ids. For t5 they are the encoder inputs.
        segment_ids: per-prompt segment ids (same shapes) for models with a
            segment input; default all 0. With application="unilm" the prompt
            is the source and generated tokens are segment 1.
        max_new_tokens: how many tokens to generate at most.
        method: "greedy", "beam" or "sample".
        num_beams: beams per prompt (method="beam").
        top_k: sample among the k most likely tokens only (method="sample").
        top_p: sample among the smallest set of tokens whose probability
            reaches top_p (nucleus sampling; method="sample").
        temperature: divide logits by it before sampling.
        end_id: id that ends a sequence (excluded from the output).
        min_new_tokens: end_id is forbidden before this many new tokens.
        seed: int seed of sampling; the same seed gives the same output.
        length_penalty: beam scores are divided by length ** length_penalty.

    Returns:
        A list with one list of generated ids per prompt (end_id excluded).

    Example:
        >>> model = build_transformer_model("config.json", "model.safetensors",
        ...                                 model="gpt2")
        >>> generate(model, [[464, 2068], [15496]], max_new_tokens=20,
        ...          method="beam", num_beams=4, end_id=50256)
    """
    builder = _builder_of(model)
    prompts, segments = _check_prompts(token_ids, segment_ids, builder)
    settings = _check_settings(
        builder,
        max_new_tokens,
        method,
        num_beams,
        top_k,
        top_p,
        temperature,
        end_id,
        min_new_tokens,
        length_penalty,
    )
    if getattr(builder, "decoder_builder", None) is not None:
        from kerasformers._generation_seq2seq import generate_seq2seq

        return generate_seq2seq(builder, prompts, settings, seed)
    _check_decoder(builder, prompts, max_new_tokens)

    lengths = np.array([len(p) for p in prompts], dtype="int32")
    width = int(lengths.max())
    pad_id = builder.pad_token_id or 0
    ids = np.full((len(prompts), width), pad_id, dtype="int32")
    segs = np.zeros((len(prompts), width), dtype="int32")
    for row, (prompt, segment) in enumerate(zip(prompts, segments, strict=True)):
        ids[row, width - len(prompt) :] = prompt
        segs[row, width - len(prompt) :] = segment
    seed = np.random.randint(0, 2**31 - 1) if seed is None else int(seed)

    run = _compiled(builder, settings)
    tokens = run(
        ops.convert_to_tensor(ids),
        ops.convert_to_tensor(segs),
        ops.convert_to_tensor(width - lengths),
        ops.convert_to_tensor(np.array([seed], dtype="int32")),
    )
    return _to_lists(tokens, end_id)


# ---------------------------------------------------------------- validation
def _builder_of(model):
    builder = getattr(model, "_kf_builder", None)
    if builder is None:
        raise ValueError(
            "generate needs a model built by kerasformers' build_transformer_model (it "
            "reuses the builder's template methods for the cached passes); this model has "
            "none (e.g. a model loaded from .keras: rebuild it with build_transformer_model "
            "and load_weights)"
        )
    return builder


def _check_prompts(token_ids, segment_ids, builder):
    if isinstance(token_ids, np.ndarray):
        token_ids = token_ids.tolist()
    token_ids = list(token_ids)
    if token_ids and not isinstance(token_ids[0], (list, tuple, np.ndarray)):
        token_ids = [token_ids]  # one prompt
    if not token_ids:
        raise ValueError("generate: token_ids holds no prompt")
    prompts = [[int(t) for t in p] for p in token_ids]
    for row, prompt in enumerate(prompts):
        if not prompt:
            raise ValueError(f"generate: prompt {row} is empty; give at least one token")
    vocab = builder.vocab_size
    for row, prompt in enumerate(prompts):
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise ValueError(
                f"generate: prompt {row} holds id {bad[0]} outside the vocabulary [0, {vocab})"
            )
    if segment_ids is None:
        return prompts, [[0] * len(p) for p in prompts]
    if getattr(builder, "decoder_builder", None) is not None or not getattr(
        builder, "segment_vocab_size", 0
    ):
        raise ValueError(
            f"generate: segment_ids given, but {type(builder).__name__} has no segment input"
        )
    if isinstance(segment_ids, np.ndarray):
        segment_ids = segment_ids.tolist()
    segment_ids = list(segment_ids)
    if segment_ids and not isinstance(segment_ids[0], (list, tuple, np.ndarray)):
        segment_ids = [segment_ids]
    segments = [[int(s) for s in row] for row in segment_ids]
    if [len(s) for s in segments] != [len(p) for p in prompts]:
        raise ValueError(
            "generate: segment_ids must have the shape of token_ids, got lengths "
            f"{[len(s) for s in segments]} for prompts of lengths {[len(p) for p in prompts]}"
        )
    return prompts, segments


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"generate: {name} must be an integer >= {minimum}, got {value!r}")


def _check_settings(
    builder,
    max_new_tokens,
    method,
    num_beams,
    top_k,
    top_p,
    temperature,
    end_id,
    min_new_tokens,
    length_penalty,
):
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
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"generate: top_p must be in (0, 1], got {top_p!r}")
    if not temperature > 0:
        raise ValueError(f"generate: temperature must be > 0, got {temperature!r}")
    vocab = _decoder(builder).vocab_size
    if end_id is not None:
        _check_int(end_id, "end_id", 0)
        if end_id >= vocab:
            raise ValueError(f"generate: end_id {end_id} is outside the vocabulary [0, {vocab})")
    return {
        "max_new_tokens": int(max_new_tokens),
        "method": method,
        "num_beams": int(num_beams),
        "top_k": None if top_k is None else min(int(top_k), vocab),
        "top_p": None if top_p is None else float(top_p),
        "temperature": float(temperature),
        "end_id": end_id,
        "min_new_tokens": int(min_new_tokens),
        "length_penalty": float(length_penalty),
    }


def _decoder(builder):
    return getattr(builder, "decoder_builder", None) or builder


def _check_decoder(builder, prompts, max_new_tokens):
    if builder.application not in ("lm", "unilm"):
        what = "a custom callable" if callable(builder.application) else repr(builder.application)
        raise ValueError(
            f"generate needs a language model: this {type(builder).__name__} was built with "
            f"application={what}; build it with application='lm' or 'unilm' (the gpt* models "
            "always are)"
        )
    positions = builder.layers.get(builder.prefix + "Embedding-Position")
    if positions is not None and not getattr(positions, "hierarchical", None):
        longest = max(len(p) for p in prompts)
        if longest + max_new_tokens > positions.input_dim:
            raise ValueError(
                f"generate: the longest prompt ({longest} tokens) plus max_new_tokens "
                f"({max_new_tokens}) exceeds the model's {positions.input_dim} positions "
                "(max_position); shorten the prompt or max_new_tokens"
            )


# ---------------------------------------------------------------- the loop
def _compiled(builder, settings):
    """The compiled generation function of `builder` for these settings (memoised)."""
    memo = vars(builder).setdefault("_generation_functions", {})
    key = tuple(sorted(settings.items()))
    if key not in memo:

        def fn(ids, segs, pad_lengths, seed):
            return _decode(builder, settings, ids, segs, pad_lengths, seed)

        memo[key] = compile_generation(fn, builder.model.variables)
    return memo[key]


def _skip_layers(builder):
    name = getattr(builder, "lm_activation_layer", None)
    layer = builder.layers.get(builder.prefix + name) if name else None
    if layer is None:
        return ()
    activation = getattr(layer.activation, "__name__", str(layer.activation))
    if activation not in ("softmax", "linear"):
        raise ValueError(
            f"generate needs a softmax or linear LM head, but {layer.name} applies {activation!r}"
        )
    return (layer.name,)


def _step_inputs(builder, tokens, segments, positions):
    inputs = [tokens]
    if getattr(builder, "segment_vocab_size", 0) > 0:
        inputs.append(segments)
    if getattr(builder, "custom_position_ids", False):
        inputs.append(positions)
    return inputs


def _decode(builder, settings, ids, segs, pad_lengths, seed):
    """Prefill + the decode loop, in keras.ops; returns (batch, max_new_tokens) ids."""
    batch, width = ops.shape(ids)
    new = settings["max_new_tokens"]
    beams = settings["num_beams"]
    length = width + new
    slots = ops.arange(length, dtype="int32")
    # (batch, length) False on left padding
    valid = slots[None, :] >= pad_lengths[:, None]
    # (batch, length): query slot i sees key slot j iff order[j] <= order[i]
    if builder.application == "unilm":
        prompt_order = ops.cumsum(segs, axis=1)
        order = ops.concatenate(
            [prompt_order, prompt_order[:, -1:] + ops.arange(1, new + 1, dtype="int32")[None]],
            axis=1,
        )
        next_segment = ops.ones((batch * beams, 1), "int32")
    else:
        order = ops.broadcast_to(slots[None, :], (batch, length))
        next_segment = ops.repeat(segs[:, -1:], beams, axis=0)
    dtype = _attention_dtype(builder)
    caches = {
        name: (
            ops.zeros((batch, length, heads, key_size), dtype),
            ops.zeros((batch, length, heads, value_size), dtype),
        )
        for name, heads, key_size, value_size in attention_cache_specs(builder)
    }
    skip = _skip_layers(builder)

    def forward(tokens, caches, index, order, valid, pad_lengths, segments):
        state = DecodeState(
            caches, index, ops.shape(tokens)[1], order, valid, pad_lengths, skip_layers=skip
        )
        inputs = _step_inputs(builder, tokens, segments, state.position_ids)
        logits = run_cached(builder, inputs, state)
        return ops.cast(logits, "float32"), state.caches

    logits, caches = forward(ids, caches, 0, order, valid, pad_lengths, segs)
    if beams > 1:
        # Every beam starts from its prompt's prefill.
        caches = {k: tuple(ops.repeat(t, beams, axis=0) for t in kv) for k, kv in caches.items()}
        logits = ops.repeat(logits, beams, axis=0)
        order, valid, pad_lengths = (
            ops.repeat(t, beams, axis=0) for t in (order, valid, pad_lengths)
        )
        search = _BeamSearch(settings, batch)
    else:
        search = _TokenSearch(settings, batch, seed)

    state = search.choose(search.initial(), logits, 0)

    def cond(step, caches, state):
        return ops.logical_and(step < new, search.running(state))

    def body(step, caches, state):
        tokens, caches = search.reorder(state, caches, step)
        logits, caches = forward(
            tokens, caches, width + step - 1, order, valid, pad_lengths, next_segment
        )
        return step + 1, caches, search.choose(state, logits, step)

    _, _, state = ops.while_loop(cond, body, (ops.convert_to_tensor(1), caches, state))
    return search.result(state)


def _attention_dtype(builder):
    for layer in builder.layers.values():
        if hasattr(layer, "project_key_value"):
            return layer.compute_dtype
    return "float32"


def _log_probs(logits, step, settings):
    """Log-softmax of the logits with end_id forbidden before min_new_tokens."""
    logits = ops.log_softmax(logits, axis=-1)
    end_id = settings["end_id"]
    if end_id is not None and settings["min_new_tokens"] > 0:
        vocab = ops.shape(logits)[-1]
        forbid = ops.logical_and(ops.arange(vocab) == end_id, step < settings["min_new_tokens"])
        logits = ops.where(forbid[None, :], -infinity(), logits)
    return logits


class _TokenSearch:
    """Greedy decoding and sampling: one running sequence per prompt."""

    def __init__(self, settings, batch, seed):
        self.settings = settings
        self.batch = batch
        self.seed = seed

    def initial(self):
        new = self.settings["max_new_tokens"]
        # tokens (batch, new), done (batch,)
        return (ops.zeros((self.batch, new), "int32"), ops.zeros((self.batch,), "bool"))

    def running(self, state):
        return ops.logical_not(ops.all(state[1]))

    def reorder(self, state, caches, step):
        tokens, _ = state
        # (batch, 1) the token chosen at step - 1
        return ops.take(tokens, ops.reshape(step - 1, (1,)), axis=1), caches

    def choose(self, state, logits, step):
        tokens, done = state
        settings = self.settings
        scores = _log_probs(logits, step, settings)
        if settings["method"] == "sample":
            scores = _filter(scores / settings["temperature"], settings)
            noise = random_uniform(ops.shape(scores), self.seed, step)
            # Gumbel-max: argmax(scores + Gumbel noise) samples softmax(scores).
            gumbel = -ops.log(-ops.log(ops.clip(noise, 1e-20, 1.0 - 1e-7)))
            scores = scores + gumbel
        token = ops.cast(ops.argmax(scores, axis=-1), "int32")
        end_id = settings["end_id"]
        if end_id is not None:
            token = ops.where(done, end_id, token)
            done = ops.logical_or(done, token == end_id)
        column = ops.arange(settings["max_new_tokens"]) == step
        tokens = ops.where(column[None, :], token[:, None], tokens)
        return tokens, done

    def result(self, state):
        return state[0]


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


class _BeamSearch:
    """Batched beam search with HF transformers' scoring and stopping rule."""

    def __init__(self, settings, batch):
        self.settings = settings
        self.batch = batch
        self.beams = settings["num_beams"]

    def initial(self):
        batch, beams, new = self.batch, self.beams, self.settings["max_new_tokens"]
        first = ops.concatenate([ops.zeros((batch, 1)), ops.full((batch, beams - 1), _NEG)], axis=1)
        return {
            "running": ops.zeros((batch, beams, new), "int32"),
            "running_scores": ops.cast(first, "float32"),
            "finished": ops.zeros((batch, beams, new), "int32"),
            "finished_scores": ops.full((batch, beams), _NEG, "float32"),
            "is_finished": ops.zeros((batch, beams), "bool"),
            "improvable": ops.ones((batch, 1), "bool"),
            "sources": ops.zeros((batch, beams), "int32"),
            "all_hit": ops.zeros((), "bool"),
        }

    def running(self, state):
        return ops.logical_and(ops.any(state["improvable"]), ops.logical_not(state["all_hit"]))

    def reorder(self, state, caches, step):
        batch, beams = self.batch, self.beams
        # (batch * beams,) rows of the beams each new beam continues
        rows = ops.reshape(state["sources"] + ops.arange(batch)[:, None] * beams, (-1,))
        caches = {k: tuple(ops.take(t, rows, axis=0) for t in kv) for k, kv in caches.items()}
        tokens = ops.take(state["running"], ops.reshape(step - 1, (1,)), axis=2)
        return ops.reshape(tokens, (batch * beams, 1)), caches

    def choose(self, state, logits, step):
        settings = self.settings
        batch, beams, new = self.batch, self.beams, settings["max_new_tokens"]
        keep = 2 * beams
        scores = _log_probs(logits, step, settings)
        vocab = ops.shape(scores)[-1]
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
        if settings["end_id"] is not None:
            hit = ops.logical_or(hit, token == settings["end_id"])

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
        return {
            "running": running,
            "running_scores": best_running,
            "finished": ops.take_along_axis(merged, kept[:, :, None], axis=1),
            "finished_scores": kept_scores,
            "is_finished": is_finished,
            "improvable": improvable,
            "sources": sources,
            "all_hit": ops.all(hit),
        }

    def result(self, state):
        return state["finished"][:, 0]


def _to_lists(tokens, end_id):
    rows = []
    for row in ops.convert_to_numpy(tokens).tolist():
        if end_id is not None and end_id in row:
            row = row[: row.index(end_id)]
        rows.append(row)
    return rows
