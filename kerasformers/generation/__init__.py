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

`generate` is thread-safe: a pass keeps its state in its own `Decoding` and
never on the model, so concurrent calls on one model give their serial results.

Reference:
    Beam search and nucleus sampling: https://arxiv.org/abs/1904.09751
"""

import numpy as np
from keras import ops

from kerasformers.generation.autoregressive import AutoRegressiveDecoder
from kerasformers.generation.cached import Decoding, GraphPlan, graph_plan
from kerasformers.generation.checks import METHODS, check_prompts, check_seed, check_settings
from kerasformers.generation.loop import compiled
from kerasformers.snippets.inputs import check_inputs

__all__ = [
    "METHODS",
    "AutoRegressiveDecoder",
    "Decoding",
    "GraphPlan",
    "generate",
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
    return_logits=False,
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
        end_id: id that ends a sequence (excluded from the output).
        min_new_tokens: end_id is forbidden before this many new tokens.
        seed: int seed of sampling in [0, 2**31); the same seed gives the same
            output.
        length_penalty: beam scores are divided by length ** length_penalty.
        return_logits: also return the (batch, max_new_tokens, vocab) float32
            logits of every step (greedy and sampling only).

    Returns:
        A list with one list of generated ids per prompt (end_id excluded);
        with return_logits, (that list, the logits as a numpy array).

    Example:
        >>> model = build_transformer_model("config.json", "model.safetensors",
        ...                                 model="gpt2")
        >>> generate(model, [[464, 2068], [15496]], max_new_tokens=20,
        ...          method="beam", num_beams=4, end_id=50256)
    """
    plan = graph_plan(model)
    if not plan.causal:
        raise ValueError(
            "generate needs a language model, and no layer of this model declares a "
            "causal attention order; build it with application='lm' or 'unilm' (the gpt* "
            "models and t5 always are)"
        )
    vocab = plan.vocab_size
    prompts, segments = check_prompts(token_ids, segment_ids, vocab, "segments" in plan.roles)
    settings = check_settings(
        vocab,
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
    if return_logits and settings["method"] == "beam":
        raise ValueError("generate: return_logits is available for greedy and sampling only")
    seed = check_seed(seed)
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

    run = compiled(plan, settings)
    out = run(
        ops.convert_to_tensor(ids),
        ops.convert_to_tensor(segs),
        ops.convert_to_tensor(width - lengths),
        ops.convert_to_tensor(np.array([seed], dtype="int32")),
    )
    if return_logits:
        tokens, logits = out
        return _to_lists(tokens, settings["end_id"]), ops.convert_to_numpy(logits)
    return _to_lists(out, settings["end_id"])


def _to_lists(tokens, end_id):
    rows = []
    for row in ops.convert_to_numpy(tokens).tolist():
        if end_id is not None and end_id in row:
            row = row[: row.index(end_id)]
        rows.append(row)
    return rows
