"""Encoder forward throughput: kerasformers vs HF transformers vs keras-hub, one run.

BERT-base size (12 layers, hidden 768, 12 heads, intermediate 3072, vocab 21128),
and with --models also ALBERT-base (embedding 128, vocab 30000, one shared block)
and RoFormer-base (rotary positions, vocab 50000), random weights, batch 8 x 128
tokens, 2 threads. Each configuration runs in its own
process (one Keras backend per process); the table reports sequences/s and the ratio
to HF transformers on torch in the same dtype.

    python benchmarks/encoder.py                 # everything available
    python benchmarks/encoder.py --repeats 10 --only pair ours-jax
    python benchmarks/encoder.py --models albert roformer --dtypes float32

keras-hub is optional (`pip install --no-deps keras-hub absl-py regex rich packaging`);
its rows are skipped when it is not installed.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import run_worker, sync, time_median  # noqa: E402

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
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
# Per family: (our model name, HF config/model class prefix, config overrides).
FAMILIES = {
    "bert": ("bert", "Bert", {}),
    "albert": ("albert", "Albert", dict(embedding_size=128, vocab_size=30000)),
    "roformer": ("roformer", "RoFormer", dict(vocab_size=50000)),
}
MODEL, HF_PREFIX = "bert", "Bert"
BATCH, SEQ = 8, 128


def _use_family(name):
    """Points CONFIG / MODEL / HF_PREFIX at one family (workers run one each)."""
    global MODEL, HF_PREFIX
    MODEL, HF_PREFIX, overrides = FAMILIES[name]
    CONFIG.update(overrides)


def _hf_model():
    import transformers

    config = getattr(transformers, f"{HF_PREFIX}Config")(**CONFIG)
    return getattr(transformers, f"{HF_PREFIX}Model")(config).eval()


def _inputs():
    import numpy as np

    rng = np.random.default_rng(0)
    ids = rng.integers(1, CONFIG["vocab_size"], (BATCH, SEQ)).astype("int32")
    return ids, np.zeros_like(ids)


def worker_ours(dtype, warmup, repeats):
    import keras

    from kerasformers.models import build_transformer_model

    keras.config.set_dtype_policy(dtype)
    model = build_transformer_model(CONFIG, model=MODEL)
    ids, segments = _inputs()
    seconds = time_median(lambda: sync(model.predict_on_batch([ids, segments])), warmup, repeats)
    return BATCH / seconds


def worker_kerashub(dtype, warmup, repeats):
    import keras
    import keras_hub

    keras.config.set_dtype_policy(dtype)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=CONFIG["vocab_size"],
        num_layers=CONFIG["num_hidden_layers"],
        num_heads=CONFIG["num_attention_heads"],
        hidden_dim=CONFIG["hidden_size"],
        intermediate_dim=CONFIG["intermediate_size"],
        dropout=0.0,
        max_sequence_length=CONFIG["max_position_embeddings"],
        dtype=dtype,
    )
    ids, segments = _inputs()
    inputs = {"token_ids": ids, "segment_ids": segments, "padding_mask": (ids != 0)}
    seconds = time_median(lambda: sync(backbone.predict_on_batch(inputs)), warmup, repeats)
    return BATCH / seconds


def worker_hf(dtype, warmup, repeats):
    import torch

    torch.set_num_threads(int(THREADS))
    model = _hf_model()
    if dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    ids, segments = (torch.as_tensor(a, dtype=torch.long) for a in _inputs())
    mask = torch.ones_like(ids)

    def run():
        with torch.inference_mode():
            return model(input_ids=ids, token_type_ids=segments, attention_mask=mask)

    return BATCH / time_median(run, warmup, repeats)


def worker_pair(dtype, warmup, repeats):
    """HF and ours on torch in one process, timed alternately (same machine state)."""
    import keras
    import torch

    from kerasformers.models import build_transformer_model

    torch.set_num_threads(int(THREADS))
    keras.config.set_dtype_policy(dtype)
    ours = build_transformer_model(CONFIG, model=MODEL)
    hf = _hf_model()
    if dtype == "bfloat16":
        hf = hf.to(torch.bfloat16)
    ids, segments = _inputs()
    t_ids, t_segments = (torch.as_tensor(a, dtype=torch.long) for a in (ids, segments))
    mask = torch.ones_like(t_ids)
    times = {"hf": [], "ours": []}
    for step in range(warmup + repeats):
        start = time.perf_counter()
        with torch.inference_mode():
            hf(input_ids=t_ids, token_type_ids=t_segments, attention_mask=mask)
        hf_s = time.perf_counter() - start
        start = time.perf_counter()
        ours.predict_on_batch([ids, segments])
        ours_s = time.perf_counter() - start
        if step >= warmup:
            times["hf"].append(hf_s)
            times["ours"].append(ours_s)
    return {k: BATCH / sorted(v)[len(v) // 2] for k, v in times.items()}


WORKERS = {
    "ours": worker_ours,
    "kerashub": worker_kerashub,
    "hf": worker_hf,
    "pair": worker_pair,
}


def run_family_worker(kind, backend, dtype, warmup, repeats, family="bert"):
    extra = ["--models", family, "--dtype", dtype, "--warmup", str(warmup)]
    return run_worker(__file__, kind, backend, THREADS, [*extra, "--repeats", str(repeats)])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=sorted(WORKERS))
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--only", nargs="*", help="rows to run: ours-jax ours-torch hf kerashub-jax kerashub-torch"
    )
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--models", nargs="*", default=["bert"], choices=sorted(FAMILIES))
    parser.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"])
    args = parser.parse_args()

    if args.worker:
        _use_family(args.models[0])
        result = WORKERS[args.worker](args.dtype, args.warmup, args.repeats)
        print(json.dumps(result if isinstance(result, dict) else {"seq_per_s": result}))
        return

    # One process per row; the "pair" row runs HF and ours-torch in one process,
    # timed alternately, so that both see the same machine state (its rows are
    # starred and compared with the HF figure of the same process).
    rows = [
        ("hf", "torch"),
        ("ours", "jax"),
        ("ours", "torch"),
        ("kerashub", "jax"),
        ("kerashub", "torch"),
        ("pair", "torch"),
    ]
    if args.only:
        rows = [r for r in rows if f"{r[0]}-{r[1]}" in args.only or r[0] in args.only]
    results = {}
    for family in args.models:
        for dtype in args.dtypes:
            for kind, backend in rows:
                if kind == "kerashub" and family != "bert":
                    continue  # keras-hub anchors the BERT rows only
                res = run_family_worker(kind, backend, dtype, args.warmup, args.repeats, family)
                print(
                    f"  {family} {kind}-{backend:9s} {dtype:9s} {res}", file=sys.stderr, flush=True
                )
                if kind == "pair" and "error" not in res:
                    results[(family, "hf-torch*", dtype)] = {"seq_per_s": res["hf"]}
                    results[(family, "ours-torch*", dtype)] = {"seq_per_s": res["ours"]}
                else:
                    results[(family, f"{kind}-{backend}", dtype)] = res

    print(
        f"\nEncoder forward (base size), batch {BATCH} x {SEQ}, {THREADS} threads "
        f"(seq/s; ratio = ours / HF transformers same model and dtype; "
        f"* = same process, alternating)"
    )
    print(f"{'model':9s} {'implementation':16s} {'dtype':9s} {'seq/s':>8s} {'vs HF':>7s}")
    for (family, label, dtype), res in results.items():
        anchor = "hf-torch*" if label.endswith("*") else "hf-torch"
        hf = results.get((family, anchor, dtype), {}).get("seq_per_s")
        if "error" in res:
            print(f"{family:9s} {label:16s} {dtype:9s} {'n/a':>8s}  ({res['error'][:80]})")
            continue
        ratio = f"{res['seq_per_s'] / hf:6.2f}x" if hf else "   n/a"
        print(f"{family:9s} {label:16s} {dtype:9s} {res['seq_per_s']:8.2f} {ratio:>7s}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"/".join(k): v for k, v in results.items()}, f, indent=1)


if __name__ == "__main__":
    main()
