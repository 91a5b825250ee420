"""Fine-tuning step throughput and memory: kerasformers vs HF transformers, one run.

A BERT-base-size classifier (12 layers, hidden 768, 12 heads, intermediate 3072,
vocab 21128, dropout 0.1, a 2-class head on the pooled output), random weights,
batch 8 x 128 tokens, AdamW (lr 2e-5, weight decay 0.01), 2 threads. Each row runs
in its own process (one Keras backend per process):

* ours: `build_transformer_model(config, with_pool=True)` + Dense logits, compiled
  with `keras.optimizers.AdamW`, stepped with `model.train_on_batch` (jit-compiled on
  jax, eager on torch); "recompute" rows build it with `recompute=True` (gradient
  checkpointing of every attention, feed-forward and norm layer);
* HF: `BertForSequenceClassification` + `torch.optim.AdamW`, zero_grad / forward /
  backward / step; its "recompute" row uses `gradient_checkpointing_enable()`.

Reported: steps/s (median of the timed steps after the warm-up ones), the ratio to
HF without recompute, the timing process's peak resident memory over the whole run
(Linux VmHWM), and from a second process per row the memory one forward + backward
needs above the resting process: on torch, VmHWM minus VmRSS just before it (VmHWM
reset through /proc/self/clear_refs, glibc's mmap threshold pinned so freed
activations leave the resident set); on jax, the temporary buffers XLA reports for
the compiled gradient program (XLA's CPU runtime keeps its buffers, hiding them from
RSS). That last figure is what gradient checkpointing trades for time.

    python benchmarks/training.py                   # BERT-base, 2 warm-up + 5 timed steps
    python benchmarks/training.py --quick           # tiny config, 2 repeats (smoke run)
    python benchmarks/training.py --only hf ours-jax --repeats 9
"""

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import time_median  # noqa: E402

THREADS = "2"
CONFIG = dict(
    vocab_size=21128,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    hidden_act="gelu",
    max_position_embeddings=512,
    type_vocab_size=2,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
)
QUICK_CONFIG = dict(
    CONFIG,
    vocab_size=1000,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
)
BATCH, SEQ, NUM_LABELS = 8, 128, 2
LEARNING_RATE, WEIGHT_DECAY = 2e-5, 0.01


def _inputs(config):
    import numpy as np

    rng = np.random.default_rng(0)
    ids = rng.integers(1, config["vocab_size"], (BATCH, SEQ)).astype("int32")
    labels = rng.integers(0, NUM_LABELS, (BATCH,)).astype("int32")
    return ids, np.zeros_like(ids), labels


def _status(field):
    """A /proc/self/status memory field, in MB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current VmRSS


def _time_steps(step, warmup, repeats):
    """Median steps/s after `warmup` steps, and the process's peak memory (VmHWM)."""
    seconds = time_median(step, warmup, repeats)
    return {"steps_per_s": 1.0 / seconds, "peak_mb": _status("VmHWM")}


def _rss_peak(fn):
    """MB that `fn()` needs at its peak above the resident memory before it (run in a
    process whose malloc returns freed blocks: see MALLOC_MMAP_THRESHOLD_ below)."""
    fn()  # warm-up: one-off allocations (kernels, caches) are not the step's
    before = _status("VmRSS")
    _reset_peak()
    fn()
    return _status("VmHWM") - before


def _build_ours(config, recompute):
    import keras

    from kerasformers.models import build_transformer_model

    bert = build_transformer_model(config, with_pool=True, recompute=recompute)
    logits = keras.layers.Dense(NUM_LABELS, name="Classifier")(bert.output)
    model = keras.Model(bert.inputs, logits)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        loss=loss,
        optimizer=keras.optimizers.AdamW(
            learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY, epsilon=1e-8
        ),
    )
    return model, loss


def worker_ours(config, recompute, args):
    import keras

    model, loss_fn = _build_ours(config, recompute)
    ids, segments, labels = _inputs(config)
    x = [ids, segments]
    if not args.memory:
        # train_on_batch returns Python floats: every step is finished when timed.
        return _time_steps(lambda: model.train_on_batch(x, labels), args.warmup, args.repeats)
    model.train_on_batch(x, labels)  # builds the optimizer state
    if keras.backend.backend() == "jax":
        import jax

        # XLA's CPU allocator keeps its buffers, so RSS cannot show a step's
        # transient memory: ask the compiled program for its temporary buffers.
        def loss_of(trainable, non_trainable):
            out, _ = model.stateless_call(trainable, non_trainable, x, training=True)
            return loss_fn(labels, out)

        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
        )
        compiled = jax.jit(jax.grad(loss_of)).lower(*state).compile()
        return {"fwd_bwd_mb": compiled.memory_analysis().temp_size_in_bytes / 2**20}
    import torch

    weights = [v.value for v in model.trainable_variables]

    def forward_backward():
        loss = loss_fn(labels, model(x, training=True))
        return torch.autograd.grad(loss, weights)

    return {"fwd_bwd_mb": _rss_peak(forward_backward)}


def worker_hf(config, recompute, args):
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(
        transformers.BertConfig(**config, num_labels=NUM_LABELS)
    ).train()
    if recompute:
        model.gradient_checkpointing_enable()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY, eps=1e-8
    )
    ids, segments, labels = (torch.as_tensor(a, dtype=torch.long) for a in _inputs(config))
    mask = torch.ones_like(ids)

    def loss():
        out = model(input_ids=ids, token_type_ids=segments, attention_mask=mask, labels=labels)
        return out.loss

    def step():
        optimizer.zero_grad(set_to_none=True)
        value = loss()
        value.backward()
        optimizer.step()
        return value.item()

    if not args.memory:
        return _time_steps(step, args.warmup, args.repeats)
    step()
    params = list(model.parameters())
    return {"fwd_bwd_mb": _rss_peak(lambda: torch.autograd.grad(loss(), params))}


WORKERS = {"ours": worker_ours, "hf": worker_hf}


def _worker_main(args):
    # 2 threads everywhere: torch's intra-op pool, and (for jax, whose XLA CPU
    # pool follows the visible cores) the process pinned to 2 cores.
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))[: int(THREADS)]
        os.sched_setaffinity(0, cpus)
    if args.worker == "hf" or os.environ.get("KERAS_BACKEND") == "torch":
        import torch

        torch.set_num_threads(int(THREADS))
    config = QUICK_CONFIG if args.quick else CONFIG
    print(json.dumps(WORKERS[args.worker](config, args.recompute, args)))


def run_worker(kind, backend, recompute, args, memory=False):
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        OMP_NUM_THREADS=THREADS,
        MKL_NUM_THREADS=THREADS,
        TF_CPP_MIN_LOG_LEVEL="3",
        RECOMPUTE="0",  # only the rows that ask for it
    )
    if memory:
        # A fixed mmap threshold: glibc then hands every freed block above 128 KiB
        # back to the OS, so the resident set follows the live tensors (with the
        # default, adaptive threshold freed activations stay resident and a step's
        # peak is invisible). Only in the memory runs: it costs page faults.
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    cmd = [sys.executable, __file__, "--worker", kind]
    cmd += ["--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    cmd += ["--recompute"] * recompute + ["--quick"] * args.quick + ["--memory"] * memory
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail)}
    return json.loads(lines[-1])


ROWS = [
    ("hf", "torch", False),
    ("ours", "jax", False),
    ("ours", "torch", False),
    ("hf", "torch", True),
    ("ours", "jax", True),
    ("ours", "torch", True),
]


def _label(kind, backend, recompute):
    name = "hf" if kind == "hf" else f"{kind}-{backend}"
    return name + ("-recompute" if recompute else "")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=sorted(WORKERS))
    parser.add_argument("--recompute", action="store_true")
    parser.add_argument("--memory", action="store_true", help="worker: measure memory only")
    parser.add_argument("--quick", action="store_true", help="tiny config, 2 repeats")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--only",
        nargs="*",
        help="rows: hf ours-jax ours-torch (with their -recompute rows), or one row by "
        "its full name, e.g. ours-jax-recompute",
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.quick and not args.worker:
        args.warmup, args.repeats = 1, 2

    if args.worker:
        _worker_main(args)
        return

    rows = ROWS
    if args.only:
        rows = [r for r in rows if _label(*r) in args.only or _label(*r[:2], False) in args.only]
    results = {}
    for row in rows:
        res = run_worker(*row, args)
        if "error" not in res:
            res.update(run_worker(*row, args, memory=True))
        print(f"  {_label(*row):22s} {res}", file=sys.stderr, flush=True)
        results[_label(*row)] = res

    config = QUICK_CONFIG if args.quick else CONFIG
    print(
        f"\nFine-tuning step, {config['num_hidden_layers']} layers x {config['hidden_size']}, "
        f"batch {BATCH} x {SEQ}, AdamW, {THREADS} threads (vs HF = steps/s ratio to HF "
        "without recompute; peak = process VmHWM; fwd+bwd = transient MB of forward + "
        "backward: RSS on torch, XLA temp buffers on jax)"
    )
    print(
        f"{'implementation':22s} {'steps/s':>8s} {'vs HF':>7s} {'peak MB':>8s} {'fwd+bwd MB':>11s}"
    )
    hf = results.get("hf", {}).get("steps_per_s")
    for name, res in results.items():
        if "error" in res or "fwd_bwd_mb" not in res:
            print(f"{name:22s} {'n/a':>8s}  ({res.get('error', '')[:80]})")
            continue
        ratio = f"{res['steps_per_s'] / hf:6.2f}x" if hf else "   n/a"
        print(
            f"{name:22s} {res['steps_per_s']:8.3f} {ratio:>7s} "
            f"{res['peak_mb']:8.0f} {res['fwd_bwd_mb']:11.0f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
