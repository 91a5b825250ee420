"""KV-cached, batched generation: greedy, beam search and sampling.

`generate` takes a language model built by `build_transformer_model` (gpt,
gpt2, gpt2_ml, any family with application="lm" or "unilm", a T5) — or the
same model saved as `.keras` and loaded back — and a ragged batch of prompts.
Prompts are left-padded to one length; each self-attention layer keeps a
(batch, prompt + new tokens, heads, size) key/value cache that every step
writes in place, so the shapes never change and the whole loop compiles once
(`kerasformers.backend.generation` says how each backend runs it). The passes
walk the model's own graph (`kerasformers.generation.cached`); layers that act
differently while decoding say so through their `decode_call` hook, so every
family decodes the same way and a new family needs no generation code.

Beam search follows HF transformers' (length penalty, early stopping off: a
row stops when no running beam can beat its worst finished one, finished
scores are sum of log-probabilities / new length ** length_penalty).

`stream_generate` (and `generate(..., streamer=...)`) hands out each step's
tokens as soon as the step is done (`kerasformers.generation.streaming`).

`generate` is thread-safe: a pass keeps its state in its own `Decoding` and
never on the model, so concurrent calls on one model give their serial results.

Reference:
    Beam search and nucleus sampling: https://arxiv.org/abs/1904.09751
"""

from keras import ops

from kerasformers.generation.autoregressive import AutoRegressiveDecoder
from kerasformers.generation.cached import Decoding, GraphPlan
from kerasformers.generation.checks import METHODS, Request, cut_at_end
from kerasformers.generation.loop import compiled
from kerasformers.generation.streaming import check_streaming, steps

__all__ = [
    "METHODS",
    "AutoRegressiveDecoder",
    "Decoding",
    "GraphPlan",
    "generate",
    "stream_generate",
]


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
    repetition_penalty=1.0,
    return_logits=False,
    streamer=None,
    pad_to=None,
):
    """Generates continuations of a batch of prompts with a key/value cache.

    Args:
        model: a language model built by `build_transformer_model` (gpt, gpt2,
            gpt2_ml, a family with application="lm" or "unilm", or a t5), or
            such a model loaded with `keras.saving.load_model`.
        token_ids: the prompts, a list of lists of int ids (ragged; the library
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
        end_id: an id, or a list of ids, that ends a sequence (any of them;
            excluded from the output).
        min_new_tokens: every end id is forbidden before this many new tokens.
        seed: int seed of sampling in [0, 2**31); the same seed gives the same
            output.
        length_penalty: beam scores are divided by length ** length_penalty.
        repetition_penalty: a number > 0 (1.0: off), HF's rule: the logit of
            every token already in the sequence (the prompt's, or a T5
            decoder's start token, and the generated ones) is divided by it
            where positive and multiplied by it where negative; beam search
            applies it to the log-probabilities, as HF does.
        return_logits: also return the (batch, max_new_tokens, vocab) float32
            logits of every step (greedy and sampling only).
        streamer: a callable `streamer(step, new_tokens)` called after every
            step with one list per prompt: [the id produced at that step], or
            [] for a row that has ended (greedy and sampling only; see
            `stream_generate`).
        pad_to: left-pad the prompts to at least this many tokens (T5: its
            encoder input, right-padded). The output is the same; a server
            rounds lengths up with it so that jax compiles once per bucket
            instead of once per prompt length.

    Returns:
        A list with one list of generated ids per prompt (end ids excluded);
        with return_logits, (that list, the logits as a numpy array).

    Example:
        >>> model = build_transformer_model("config.json", "model.safetensors",
        ...                                 model="gpt2")
        >>> generate(model, [[464, 2068], [15496]], max_new_tokens=20,
        ...          method="beam", num_beams=4, end_id=50256)
    """
    request = Request(
        model,
        token_ids,
        segment_ids,
        seed,
        return_logits,
        max_new_tokens=max_new_tokens,
        method=method,
        num_beams=num_beams,
        top_k=top_k,
        top_p=top_p,
        temperature=temperature,
        end_id=end_id,
        min_new_tokens=min_new_tokens,
        length_penalty=length_penalty,
        repetition_penalty=repetition_penalty,
        pad_to=pad_to,
    )
    settings = request.settings
    if streamer is not None:
        if not callable(streamer):
            raise TypeError(
                "generate: streamer must be a callable streamer(step, new_tokens), got "
                f"{type(streamer).__name__}"
            )
        check_streaming(settings, "generate")
        rows = [[] for _ in request.ids]
        for step, new_tokens in enumerate(steps(request)):
            streamer(step, new_tokens)
            for row, tokens in zip(rows, new_tokens, strict=True):
                row.extend(tokens)
        return rows
    out = compiled(request.plan, settings)(*request.tensors())
    if return_logits:
        tokens, logits = out
        return _to_lists(tokens, request.end_ids), ops.convert_to_numpy(logits)
    return _to_lists(out, request.end_ids)


def stream_generate(model, token_ids, **kwargs):
    """Generates like `generate`, yielding each step's new tokens as soon as
    the step is done (for a server that forwards tokens as they come).

    The arguments are validated at the call, before the first step; the
    iterator then yields, after every step, a list with one entry per prompt:
    [the id produced at that step], or [] for a row that has ended (the end
    id itself is never yielded). It stops when every row has ended or after
    max_new_tokens steps. Joined, the streamed tokens of each row are
    `generate`'s output for the same arguments (the same seed for sampling).

    Args:
        model: as for `generate`.
        token_ids: as for `generate`.
        **kwargs: `generate`'s other arguments, except `return_logits` and
            `streamer`; method "greedy" or "sample" (beams reorder).

    Returns:
        An iterator (generator) of per-step lists.

    Example:
        >>> for new_tokens in stream_generate(model, [[464, 2068]], end_id=50256):
        ...     print(tokenizer.decode(new_tokens[0]), end="", flush=True)
    """
    for name in ("streamer", "return_logits"):
        if name in kwargs:
            raise TypeError(f"stream_generate: {name} is not an argument of stream_generate")
    settings = {
        "segment_ids": None,
        "max_new_tokens": 32,
        "method": "greedy",
        "num_beams": 4,
        "top_k": None,
        "top_p": None,
        "temperature": 1.0,
        "end_id": None,
        "min_new_tokens": 0,
        "seed": None,
        "length_penalty": 1.0,
        "repetition_penalty": 1.0,
        "pad_to": None,
    }
    unknown = sorted(set(kwargs) - set(settings))
    if unknown:
        raise TypeError(f"stream_generate: unexpected argument(s) {unknown}")
    settings.update(kwargs)
    segment_ids, seed = settings.pop("segment_ids"), settings.pop("seed")
    request = Request(model, token_ids, segment_ids, seed, False, **settings)
    check_streaming(request.settings, "stream_generate")
    return steps(request)


def _to_lists(tokens, end_ids):
    return cut_at_end(ops.convert_to_numpy(tokens).tolist(), end_ids)
