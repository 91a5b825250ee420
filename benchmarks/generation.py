"""Generation throughput: kerasformers vs HF transformers vs keras-hub, one run.

GPT-2 small size (12 layers, hidden 768, 12 heads, vocab 50257), random
weights, a 16-token prompt and exactly 64 new tokens (no end token), 2 threads:
greedy at batch 1 and batch 8, and 4-beam search at batch 1. Each row runs in
its own process (one Keras backend per process); the table reports new tokens
per second (batch x 64 / seconds; for beams the 64 tokens of the best beam) and
the ratio to HF `generate(use_cache=True)` on torch in the same configuration.

    python benchmarks/generation.py
    python benchmarks/generation.py --only hf ours-torch --repeats 5

keras-hub (GPT2CausalLM fed token ids) is optional:
`pip install --no-deps keras-hub absl-py regex rich packaging`.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import run_worker, sync, time_median  # noqa: E402

THREADS = "2"
CONFIG = dict(
    vocab_size=50257,
    n_embd=768,
    n_layer=12,
    n_head=12,
    n_positions=1024,
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
    activation_function="gelu_new",
)
PROMPT, NEW = 16, 64
# (label, batch, beams)
CASES = [("greedy b1", 1, 1), ("greedy b8", 8, 1), ("beam4 b1", 1, 4)]


def _prompts(batch):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.integers(1, CONFIG["vocab_size"], (batch, PROMPT)).astype("int32")


def worker_ours(warmup, repeats):
    from kerasformers.generation import generate
    from kerasformers.models import build_transformer_model

    model = build_transformer_model(dict(CONFIG, model_type="gpt2"), model="gpt2")
    results = {}
    for label, batch, beams in CASES:
        prompts = _prompts(batch).tolist()
        method = "beam" if beams > 1 else "greedy"

        def run(prompts=prompts, method=method, beams=beams):
            out = generate(model, prompts, max_new_tokens=NEW, method=method, num_beams=beams)
            assert all(len(row) == NEW for row in out)

        results[label] = batch * NEW / time_median(run, warmup, repeats)
    return results


def worker_hf(warmup, repeats):
    import torch
    import transformers

    torch.set_num_threads(int(THREADS))
    config = transformers.GPT2Config(**CONFIG)
    model = transformers.GPT2LMHeadModel(config).eval()
    model.generation_config.eos_token_id = None
    results = {}
    for label, batch, beams in CASES:
        ids = torch.as_tensor(_prompts(batch), dtype=torch.long)
        mask = torch.ones_like(ids)

        def run(ids=ids, mask=mask, beams=beams):
            with torch.inference_mode():
                out = model.generate(
                    ids,
                    attention_mask=mask,
                    max_new_tokens=NEW,
                    min_new_tokens=NEW,
                    do_sample=False,
                    num_beams=beams,
                    use_cache=True,
                    pad_token_id=0,
                )
            assert out.shape[1] == PROMPT + NEW

        results[label] = batch * NEW / time_median(run, warmup, repeats)
    return results


def worker_kerashub(warmup, repeats):
    import keras_hub
    import numpy as np

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=CONFIG["vocab_size"],
        num_layers=CONFIG["n_layer"],
        num_heads=CONFIG["n_head"],
        hidden_dim=CONFIG["n_embd"],
        intermediate_dim=4 * CONFIG["n_embd"],
        dropout=0.0,
        max_sequence_length=CONFIG["n_positions"],
    )
    results = {}
    for label, batch, beams in CASES:
        sampler = keras_hub.samplers.BeamSampler(num_beams=beams) if beams > 1 else "greedy"
        lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
        lm.compile(sampler=sampler)
        ids = np.zeros((batch, PROMPT + NEW), "int32")
        ids[:, :PROMPT] = _prompts(batch)
        mask = np.zeros_like(ids, dtype=bool)
        mask[:, :PROMPT] = True
        inputs = {"token_ids": ids, "padding_mask": mask}

        def run(lm=lm, inputs=inputs):
            sync(lm.generate(inputs, stop_token_ids=None))

        results[label] = batch * NEW / time_median(run, warmup, repeats)
    return results


WORKERS = {"ours": worker_ours, "hf": worker_hf, "kerashub": worker_kerashub}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=sorted(WORKERS))
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="rows: hf ours-jax ours-torch kerashub-jax ...")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.warmup, args.repeats)))
        return

    rows = [
        ("hf", "torch"),
        ("ours", "jax"),
        ("ours", "torch"),
        ("kerashub", "jax"),
        ("kerashub", "torch"),
    ]
    if args.only:
        rows = [r for r in rows if f"{r[0]}-{r[1]}" in args.only or r[0] in args.only]
    results = {}
    for kind, backend in rows:
        extra = ["--warmup", str(args.warmup), "--repeats", str(args.repeats)]
        res = run_worker(__file__, kind, backend, THREADS, extra)
        print(f"  {kind}-{backend:6s} {res}", file=sys.stderr, flush=True)
        results[f"{kind}-{backend}"] = res

    print(
        f"\nGeneration, GPT-2 small (random weights), prompt {PROMPT} + {NEW} new tokens, "
        f"{THREADS} threads (new tokens/s; ratio = / HF generate(use_cache=True))"
    )
    labels = [label for label, _, _ in CASES]
    print(f"{'implementation':16s}" + "".join(f"{label:>22s}" for label in labels))
    hf = results.get("hf-torch", {})
    for name, res in results.items():
        if "error" in res:
            print(f"{name:16s} n/a ({res['error'][:100]})")
            continue
        cells = []
        for label in labels:
            ratio = f" ({res[label] / hf[label]:.2f}x)" if label in hf else ""
            cells.append(f"{res[label]:8.1f}{ratio}")
        print(f"{name:16s}" + "".join(f"{c:>22s}" for c in cells))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
