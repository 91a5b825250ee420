"""Random tiny HF models with non-trivial weights, for parity tests."""

import re

import numpy as np

torch = None
transformers = None


def _import():
    global torch, transformers
    if torch is None:
        import torch as _torch
        import transformers as _transformers

        torch, transformers = _torch, _transformers


def perturb_(model, seed=0):
    """Random weights everywhere: LayerNorm gains in [0.5, 1.5], non-zero biases."""
    _import()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "embed_positions" in name:
                continue  # RoFormer's fixed sinusoidal table
            if name.endswith(("LayerNorm.weight", "layer_norm.weight")) or re.search(
                r"(^|\.)ln_(\d+|f)\.weight$", name
            ):  # GPT / GPT-2 name them ln_1, ln_2, ln_f
                param.copy_(torch.rand(param.shape, generator=gen) + 0.5)
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    model.eval()
    return model


def tiny_bert_config(**overrides):
    """Odd sizes on purpose: hidden 48, 3 heads, intermediate 100, vocab 333."""
    _import()
    kwargs = dict(
        vocab_size=333,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=100,
        max_position_embeddings=40,
        type_vocab_size=2,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    kwargs.update(overrides)
    return transformers.BertConfig(**kwargs)


def ragged_batch(rng, vocab_size, lengths, pad_id=0, low=5):
    """Token ids (batch, max_len) padded with pad_id, segment ids, and the 0/1 mask."""
    max_len = max(lengths)
    ids = np.full((len(lengths), max_len), pad_id, dtype="int32")
    segments = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(low, vocab_size, n)
        segments[row, n // 2 : n] = 1
    mask = (np.arange(max_len)[None, :] < np.asarray(lengths)[:, None]).astype("int32")
    return ids, segments, mask


def hf_outputs(model, ids, segments, mask):
    """Runs an HF model and returns its outputs as float32 numpy arrays."""
    _import()
    with torch.no_grad():
        out = model(
            input_ids=torch.as_tensor(ids, dtype=torch.long),
            token_type_ids=torch.as_tensor(segments, dtype=torch.long),
            attention_mask=torch.as_tensor(mask, dtype=torch.long),
            output_hidden_states=True,
        )
    return out


def max_masked_diff(a, b, mask):
    """Largest |a - b| over positions where mask is 1 (sequence tensors)."""
    a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    keep = np.asarray(mask).astype(bool)
    return float(np.max(np.abs(a[keep] - b[keep])))


def hf_generate_each(hf, prompts, new, end_ids=None, skip=None, **kwargs):
    """HF `generate` (greedy unless kwargs say otherwise) on each prompt alone, with
    no padding at all: the reference for our left-padded, batched decoding.

    Returns the new ids of each prompt, cut before its first end id. `end_ids`
    is an int, a list or None; `skip` is how many leading output ids are not
    generated (default: the prompt, as for a decoder-only model; 1 for T5's
    decoder start token).
    """
    _import()
    ends = [] if end_ids is None else [end_ids] if isinstance(end_ids, int) else list(end_ids)
    rows = []
    for prompt in prompts:
        ids = torch.tensor([prompt])
        with torch.no_grad():
            out = hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new,
                do_sample=False,
                eos_token_id=end_ids,
                pad_token_id=0,
                **kwargs,
            )
        row = out[0, len(prompt) if skip is None else skip :].tolist()
        stops = [i for i, token in enumerate(row) if token in ends]
        rows.append(row[: stops[0]] if stops else row)
    return rows
