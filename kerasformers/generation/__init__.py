"""KV-cached, batched generation: greedy, beam search and sampling.

`generate` takes the keras.Model that `build_transformer_model` returned for a
language model (gpt, gpt2, gpt2_ml, any family with application="lm" or
"unilm") or a T5, and a ragged batch of prompts. Prompts are left-padded to
one length; each self-attention layer gets a (batch, prompt + new tokens,
heads, size) key/value cache that every step writes in place, so the shapes
never change and the whole loop compiles once (see `kerasformers.backend.
decoding` for how each backend runs it). The model's own template methods do
the forward passes (`kerasformers.generation.cached`), so every family decodes
the same way.

Beam search follows HF transformers' (length penalty, early stopping off: a
row stops when no running beam can beat its worst finished one, finished
scores are sum of log-probabilities / new length ** length_penalty).

Reference:
    Beam search and nucleus sampling: https://arxiv.org/abs/1904.09751
"""

import numpy as np
from keras import ops

from kerasformers.backend import compile_generation
from kerasformers.generation.cached import DecodeState, attention_calls, run_cached
from kerasformers.generation.search import BeamSearch, TokenSearch

METHODS = ("greedy", "beam", "sample")


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
        max_new_tokens=max_new_tokens,
        method=method,
        num_beams=num_beams,
        top_k=top_k,
        top_p=top_p,
        temperature=temperature,
        end_id=end_id,
        min_new_tokens=min_new_tokens,
        length_penalty=length_penalty,
    )
    seq2seq = _decoder(builder) is not builder
    if not seq2seq:
        _check_decoder(builder, prompts, max_new_tokens)

    lengths = np.array([len(p) for p in prompts], dtype="int32")
    width = int(lengths.max())
    pad_id = builder.pad_token_id or 0
    ids = np.full((len(prompts), width), pad_id, dtype="int32")
    segs = np.zeros((len(prompts), width), dtype="int32")
    for row, (prompt, segment) in enumerate(zip(prompts, segments, strict=True)):
        # Decoder-only prompts are left-padded (the new tokens follow every
        # prompt in the same slots); encoder inputs are right-padded.
        start = 0 if seq2seq else width - len(prompt)
        ids[row, start : start + len(prompt)] = prompt
        segs[row, start : start + len(prompt)] = segment
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


def _check_settings(builder, **settings):
    """Validates the decoding settings; returns them normalised (a dict)."""
    method, num_beams = settings["method"], settings["num_beams"]
    max_new_tokens, min_new_tokens = settings["max_new_tokens"], settings["min_new_tokens"]
    top_k, top_p, end_id = settings["top_k"], settings["top_p"], settings["end_id"]
    temperature = settings["temperature"]
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
        "length_penalty": float(settings["length_penalty"]),
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


def _plan(builder, settings, ids, segs, pad_lengths):
    """What the prefill and the loop run for this kind of model.

    Decoder-only: the left-padded prompts are the prefill and the causal /
    UniLM order rule runs over prompt + new slots. Seq2seq (T5): the encoder
    runs once on the (right-padded) inputs, every cross-attention layer gets
    its keys/values of the encoder output once, and the decoder starts from
    its start token.
    """
    batch, width = ops.shape(ids)
    new = settings["max_new_tokens"]
    decoder = _decoder(builder)
    if decoder is not builder:  # seq2seq
        context = builder.encoder(ids, training=False)
        context_mask = ops.cast(ops.not_equal(ids, builder.pad_token_id), "int32")
        static = {
            key: layer.project_key_value(context, context)
            for key, layer in attention_calls(decoder, cross=True)
        }
        slots = ops.arange(new, dtype="int32")
        return {
            "decoder": decoder,
            "prompt": ops.full((batch, 1), decoder.decoder_start_token_id, "int32"),
            "segments": None,
            "next_segment": None,
            "order": ops.broadcast_to(slots[None, :], (batch, new)),
            "valid": ops.ones((batch, new), "bool"),
            "pad_lengths": ops.zeros((batch,), "int32"),
            "rows": {"context": context, "context_mask": context_mask, "static": static},
            "inputs": lambda tokens, segments, positions, rows: [
                rows["context"],
                tokens,
                rows["context_mask"],
            ],
        }
    length = width + new
    slots = ops.arange(length, dtype="int32")
    # (batch, length): query slot i sees key slot j iff order[j] <= order[i]
    if builder.application == "unilm":
        prompt_order = ops.cumsum(segs, axis=1)
        tail = prompt_order[:, -1:] + ops.arange(1, new + 1, dtype="int32")[None]
        order = ops.concatenate([prompt_order, tail], axis=1)
        next_segment = ops.ones((batch, 1), "int32")
    else:
        order = ops.broadcast_to(slots[None, :], (batch, length))
        next_segment = segs[:, -1:]

    def inputs(tokens, segments, positions, rows):
        out = [tokens]
        if getattr(builder, "segment_vocab_size", 0) > 0:
            out.append(segments)
        if getattr(builder, "custom_position_ids", False):
            out.append(positions)
        return out

    return {
        "decoder": builder,
        "prompt": ids,
        "segments": segs,
        "next_segment": next_segment,
        "order": order,
        # (batch, length) False on left padding
        "valid": slots[None, :] >= pad_lengths[:, None],
        "pad_lengths": pad_lengths,
        "rows": {"static": {}},
        "inputs": inputs,
    }


def _decode(builder, settings, ids, segs, pad_lengths, seed):
    """Prefill + the decode loop, in keras.ops; returns (batch, max_new_tokens) ids."""
    batch = ops.shape(ids)[0]
    new = settings["max_new_tokens"]
    beams = settings["num_beams"]
    plan = _plan(builder, settings, ids, segs, pad_lengths)
    decoder = plan["decoder"]
    width = ops.shape(plan["prompt"])[1]
    length = ops.shape(plan["order"])[1]
    caches = {
        key: (
            ops.zeros((batch, length, layer.heads, layer.key_size), layer.compute_dtype),
            ops.zeros((batch, length, layer.heads, layer.head_size), layer.compute_dtype),
        )
        for key, layer in attention_calls(decoder)
    }
    skip = _skip_layers(decoder)
    # Per-row tensors (beams repeat them).
    rows = dict(plan["rows"], order=plan["order"], valid=plan["valid"])
    rows["pad_lengths"] = plan["pad_lengths"]
    rows["next_segment"] = plan["next_segment"]

    def forward(tokens, caches, index, rows, segments):
        state = DecodeState(
            caches,
            index,
            ops.shape(tokens)[1],
            rows["order"],
            rows["valid"],
            rows["pad_lengths"],
            static_caches=rows["static"],
            skip_layers=skip,
        )
        inputs = plan["inputs"](tokens, segments, state.position_ids, rows)
        logits = run_cached(decoder, inputs, state)
        return ops.cast(logits, "float32"), state.caches

    logits, caches = forward(plan["prompt"], caches, 0, rows, plan["segments"])
    if beams > 1:
        # Every beam starts from its prompt's prefill.
        repeat = lambda t: None if t is None else ops.repeat(t, beams, axis=0)  # noqa: E731
        caches = {k: tuple(repeat(t) for t in kv) for k, kv in caches.items()}
        logits = repeat(logits)
        rows = {
            k: {n: tuple(repeat(t) for t in kv) for n, kv in v.items()}
            if k == "static"
            else repeat(v)
            for k, v in rows.items()
        }
        search = BeamSearch(settings, batch)
    else:
        search = TokenSearch(settings, batch, seed)

    state = search.choose(search.initial(), logits, 0)

    def cond(step, caches, state):
        return ops.logical_and(step < new, search.running(state))

    def body(step, caches, state):
        tokens, caches = search.reorder(state, caches, step)
        logits, caches = forward(tokens, caches, width + step - 1, rows, rows["next_segment"])
        return step + 1, caches, search.choose(state, logits, step)

    _, _, state = ops.while_loop(cond, body, (ops.convert_to_tensor(1), caches, state))
    return search.result(state)


def _to_lists(tokens, end_id):
    rows = []
    for row in ops.convert_to_numpy(tokens).tolist():
        if end_id is not None and end_id in row:
            row = row[: row.index(end_id)]
        rows.append(row)
    return rows
