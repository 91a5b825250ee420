"""Pretraining throughput (tokens/s) on jax and torch, and jax scaling from 1 to 4
virtual CPU devices, one run.

The model is the small Chinese RoBERTa of `examples/pretraining/README.md` by default (BERT
architecture, whole-word MLM head with logits, vocab 5376) or `--size tiny`; batches
are built by `MLMSampleBuilder` from random token streams (global batch 32 x 128);
the optimizer is the pretraining stack (AdamW + piecewise-linear LR, or LAMB).
Each row runs in its own process (one Keras backend per process); steps are
`model.train_on_batch` (jit-compiled on jax, eager on torch). Reported: tokens/s
(non-padding tokens of the global batch per second, median step time of the timed
steps after 2 warm-up steps).

Scaling rows use `XLA_FLAGS=--xla_force_host_platform_device_count=N` and
`keras.distribution.DataParallel` on the same global batch. The N virtual devices
are carved out of the same CPU cores (2 here), so they measure the *overhead* of the
sharded program (collectives, per-device dispatch), not a speed-up: efficiency =
tokens/s(N) / tokens/s(1), ideal 1.0 on shared cores (N on N real devices).

    nice -n 19 python benchmarks/pretraining.py               # all rows
    nice -n 19 python benchmarks/pretraining.py --quick       # tiny model, few steps
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {
    "small": dict(
        num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024
    ),
    "tiny": dict(
        num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512
    ),
}


def worker(args):
    sys.path.insert(0, ROOT)
    import keras
    import numpy as np

    from kerasformers import pretraining as P
    from kerasformers.models import build_transformer_model

    if keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(args.threads)
    P.configure_distribution(args.distribution)
    keras.utils.set_random_seed(0)
    vocab = {t: i for i, t in enumerate(P.SPECIAL_TOKENS)}
    vocab.update({f"t{i}": i for i in range(len(vocab), args.vocab)})
    config = dict(
        SIZES[args.size],
        vocab_size=args.vocab,
        hidden_act="gelu",
        max_position_embeddings=args.maxlen,
        type_vocab_size=2,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    model = build_transformer_model(config, with_mlm="linear")
    optimizer = P.pretraining_optimizer(
        1e-3, total_steps=1000, warmup_steps=10, optimizer=args.optimizer
    )
    P.compile_for_pretraining(model, optimizer)
    builder = P.MLMSampleBuilder(vocab, args.maxlen)
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(3):
        samples = []
        for _ in range(args.batch_size):
            ids = rng.integers(5, args.vocab, size=args.maxlen - 2)
            starts = "".join(rng.choice(["1", "0"], size=args.maxlen - 2, p=[0.6, 0.4]))
            samples.append(builder(ids, starts, rng))
        batches.append(P.collate(samples, args.maxlen))
    times = []
    for step in range(args.warmup + args.steps):
        x, y, w = batches[step % len(batches)]
        started = time.perf_counter()
        logs = model.train_on_batch(x, y, sample_weight=w, return_dict=True)
        float(logs["loss"])  # wait for the step
        if step >= args.warmup:
            times.append(time.perf_counter() - started)
    tokens = args.batch_size * args.maxlen
    median = float(np.median(times))
    devices = len(keras.distribution.list_devices()) if keras.backend.backend() == "jax" else 1
    print(
        "RESULT "
        + json.dumps(
            {
                "backend": keras.backend.backend(),
                "distribution": args.distribution,
                "devices": devices,
                "size": args.size,
                "params": int(model.count_params()),
                "step_s": median,
                "tokens_per_s": tokens / median,
            }
        ),
        flush=True,
    )


def run_row(args, backend, distribution="none", devices=None):
    env = dict(os.environ, KERAS_BACKEND=backend, OMP_NUM_THREADS=str(args.threads))
    env.pop("XLA_FLAGS", None)
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    command = [sys.executable, __file__, "--worker", "--distribution", distribution]
    command += ["--size", args.size, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    command += ["--batch-size", str(args.batch_size), "--maxlen", str(args.maxlen)]
    command += ["--optimizer", args.optimizer, "--threads", str(args.threads)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode:
        raise SystemExit(f"{backend} {distribution} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.split("RESULT ", 1)[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--distribution", default="none", help=argparse.SUPPRESS)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--vocab", type=int, default=5376)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--maxlen", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--optimizer", choices=["adam", "lamb"], default="adam")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny model, 3 timed steps")
    parser.add_argument("--only", nargs="*", default=None, help="rows: jax torch jax-dp1 jax-dp4")
    parser.add_argument("--output", help="write the rows as JSON here")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.quick:
        args.size, args.steps = "tiny", 3
    rows = {
        "jax": ("jax", "none", None),
        "torch": ("torch", "none", None),
        "jax-dp1": ("jax", "data", 1),
        "jax-dp4": ("jax", "data", 4),
    }
    results = []
    for name in args.only or rows:
        result = run_row(args, *rows[name])
        result["row"] = name
        results.append(result)
        print(json.dumps(result), flush=True)
    by_row = {r["row"]: r for r in results}
    shape = f"{args.size}, {args.batch_size} x {args.maxlen}"
    print(f"\n| row ({shape}) | devices | tokens/s | step (s) |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r['row']} | {r['devices']} | {r['tokens_per_s']:.0f} | {r['step_s']:.2f} |")
    if "jax" in by_row and "torch" in by_row:
        print(f"torch / jax: {by_row['torch']['tokens_per_s'] / by_row['jax']['tokens_per_s']:.2f}")
    if "jax-dp1" in by_row and "jax-dp4" in by_row:
        eff = by_row["jax-dp4"]["tokens_per_s"] / by_row["jax-dp1"]["tokens_per_s"]
        print(f"DataParallel 4 virtual devices / 1 (same 2 cores): {eff:.2f}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
