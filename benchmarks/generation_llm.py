"""LLM decoding throughput: kerasformers vs HF transformers vs keras-hub, one run.

A Qwen2.5-0.5B-size decoder (24 layers, hidden 896, 14 query / 2 key-value heads,
intermediate 4864, vocab 151936, tied embeddings, rope_theta 1e6) with random
weights: HF `Qwen2ForCausalLM` is built once, saved as safetensors (bfloat16, as the
real release) to a temporary directory, and every implementation loads those files,
so all run the same weights. A 16-token prompt and exactly 64 new tokens (no end
token), greedy, at batch 1 and batch 8, in float32 and bfloat16, 2 threads. Each
row runs in its own process (one Keras backend per process); the table reports new
tokens per second (batch x 64 / seconds, median after one warm-up call, whose time,
compilation included on jax, is reported separately) and the ratio to HF `generate`
on torch in the same dtype. Also: the machine's memory read bandwidth (numpy sum of
a 2 GB array), what fraction of the weight-reading limit the best rows reach, and
load time / peak memory of ours vs HF `from_pretrained` in bfloat16.

    python benchmarks/generation_llm.py
    python benchmarks/generation_llm.py --quick          # 16 new tokens, batch 1
    python benchmarks/generation_llm.py --only hf ours-torch --dtypes bfloat16

keras-hub (`QwenCausalLM` on `QwenBackbone.from_preset(<the HF directory>)`, fed
token ids) is optional: `pip install --no-deps keras-hub`.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import cpu_description, run_worker, sync, time_median  # noqa: E402

THREADS = "2"
CONFIG = dict(
    vocab_size=151936,
    hidden_size=896,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    intermediate_size=4864,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    use_sliding_window=False,
    sliding_window=32768,
    max_window_layers=24,
    hidden_act="silu",
    attention_dropout=0.0,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
)
PROMPT = 16


def _settings():
    """(new tokens, batches) from the environment the parent sets."""
    new = int(os.environ["KF_BENCH_NEW"])
    batches = [int(b) for b in os.environ["KF_BENCH_BATCHES"].split(",")]
    return new, batches


def _prompts(batch):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.integers(1, CONFIG["vocab_size"], (batch, PROMPT)).astype("int32")


def _timed(run, warmup, repeats, batch, new):
    """{"tok_s", "first_s"}: median throughput after `warmup` calls, first call's time."""
    start = time.perf_counter()
    first = run()
    first_s = time.perf_counter() - start
    seconds = time_median(run, max(warmup - 1, 0), repeats)
    return {"tok_s": batch * new / seconds, "first_s": first_s}, first


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker_ours(directory, dtype, warmup, repeats):
    import keras

    keras.config.set_dtype_policy(dtype)
    from kerasformers.generation import generate
    from kerasformers.models import build_transformer_model

    # dtype= explicitly: without it the builder follows the checkpoint's "dtype"
    # (bfloat16 here), whatever the global policy says.
    model = build_transformer_model(
        directory + "/config.json", directory, model="qwen2", dtype=dtype
    )
    assert {str(w.dtype) for w in model.weights} == {dtype}
    new, batches = _settings()
    results = {}
    for batch in batches:
        prompts = _prompts(batch).tolist()

        def run(prompts=prompts):
            out = generate(model, prompts, max_new_tokens=new, method="greedy")
            assert all(len(row) == new for row in out)
            return out

        res, out = _timed(run, warmup, repeats, batch, new)
        res["tokens"] = out[0]
        results[f"b{batch}"] = res
    results["peak_mb"] = _rss_mb()
    return results


def worker_hf(directory, dtype, warmup, repeats):
    import torch
    import transformers

    torch.set_num_threads(int(THREADS))
    model = transformers.Qwen2ForCausalLM.from_pretrained(directory, dtype=getattr(torch, dtype))
    model = model.eval()
    model.generation_config.eos_token_id = None
    new, batches = _settings()
    results = {}
    for batch in batches:
        ids = torch.as_tensor(_prompts(batch), dtype=torch.long)
        mask = torch.ones_like(ids)

        def run(ids=ids, mask=mask):
            with torch.inference_mode():
                out = model.generate(
                    ids,
                    attention_mask=mask,
                    max_new_tokens=new,
                    min_new_tokens=new,
                    do_sample=False,
                    use_cache=True,
                    pad_token_id=0,
                )
            assert out.shape[1] == PROMPT + new
            return out[:, PROMPT:].tolist()

        res, out = _timed(run, warmup, repeats, batch, new)
        res["tokens"] = out[0]
        results[f"b{batch}"] = res
    results["peak_mb"] = _rss_mb()
    return results


def worker_kerashub(directory, dtype, warmup, repeats):
    import keras_hub
    import numpy as np

    backbone = keras_hub.models.QwenBackbone.from_preset(directory, dtype=dtype)
    lm = keras_hub.models.QwenCausalLM(backbone=backbone, preprocessor=None)
    lm.compile(sampler="greedy")
    new, batches = _settings()
    results = {}
    for batch in batches:
        ids = np.zeros((batch, PROMPT + new), "int32")
        ids[:, :PROMPT] = _prompts(batch)
        mask = np.zeros_like(ids, dtype=bool)
        mask[:, :PROMPT] = True
        inputs = {"token_ids": ids, "padding_mask": mask}

        def run(inputs=inputs):
            out = sync(lm.generate(inputs, stop_token_ids=None))
            return np.asarray(out["token_ids"])[:, PROMPT:].tolist()

        res, out = _timed(run, warmup, repeats, batch, new)
        res["tokens"] = out[0]
        results[f"b{batch}"] = res
    results["peak_mb"] = _rss_mb()
    return results


_LOAD_CHILD = r"""
import json, sys, time
kind, directory = sys.argv[1], sys.argv[2]

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

if kind == "hf":
    import torch, transformers
    torch.set_num_threads(2)
else:
    import keras
    keras.config.set_dtype_policy("bfloat16")
    from kerasformers.models import build_transformer_model
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM to the current resident size
before = status("VmRSS")
start = time.perf_counter()
if kind == "hf":
    model = transformers.Qwen2ForCausalLM.from_pretrained(directory, dtype=torch.bfloat16)
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()})
else:
    model = build_transformer_model(directory + "/config.json", directory, model="qwen2",
                                    dtype="bfloat16")
    dtypes = sorted({str(w.dtype) for w in model.weights})
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_mb": (status("VmHWM") - before) / 2**20,
                  "rss_mb": status("VmRSS") / 2**20, "dtypes": dtypes}))
"""


def measure_load(kind, backend, directory):
    env = dict(os.environ, KERAS_BACKEND=backend, OMP_NUM_THREADS=THREADS, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_CHILD, kind, directory],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        return {"error": " | ".join(proc.stderr.strip().splitlines()[-3:])}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def read_bandwidth_gbs(gigabytes=2.0, repeats=5):
    """Best single-thread read bandwidth of a numpy sum over a `gigabytes` float32 array."""
    import numpy as np

    x = np.ones(int(gigabytes * 2**30) // 4, dtype=np.float32)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - start)
    return x.nbytes / best / 1e9


def prepare(directory):
    """Random HF Qwen2 weights, saved as bfloat16 safetensors + config.json."""
    code = f"""
import torch, transformers
torch.manual_seed(0)
config = transformers.Qwen2Config(**{CONFIG!r})
model = transformers.Qwen2ForCausalLM(config).to(torch.bfloat16)
model.save_pretrained({directory!r}, safe_serialization=True)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])


WORKERS = {"ours": worker_ours, "hf": worker_hf, "kerashub": worker_kerashub}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=sorted(WORKERS))
    parser.add_argument("--dir", help="(worker) the checkpoint directory")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="16 new tokens, batch 1, 1 repeat")
    parser.add_argument("--only", nargs="*", help="rows: hf ours-jax ours-torch kerashub-jax ...")
    parser.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"])
    parser.add_argument("--no-load", action="store_true", help="skip the load-time rows")
    parser.add_argument("--keep", help="checkpoint directory to reuse (created if missing)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    if args.worker:
        result = WORKERS[args.worker](args.dir, args.dtype, args.warmup, args.repeats)
        print(json.dumps(result))
        return

    new, batches = (16, [1]) if args.quick else (64, [1, 8])
    repeats = 1 if args.quick else args.repeats
    os.environ["KF_BENCH_NEW"] = str(new)
    os.environ["KF_BENCH_BATCHES"] = ",".join(map(str, batches))
    print(f"CPU: {cpu_description()}", flush=True)
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    bandwidth = read_bandwidth_gbs()
    print(f"read bandwidth (numpy sum, 2 GB, 1 thread): {bandwidth:.1f} GB/s", flush=True)

    tmp = None
    directory = args.keep
    if directory is None:
        tmp = tempfile.TemporaryDirectory(prefix="kf_qwen_")
        directory = tmp.name
    if not os.path.exists(os.path.join(directory, "config.json")):
        start = time.perf_counter()
        prepare(directory)
        print(f"checkpoint written in {time.perf_counter() - start:.1f} s", flush=True)

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
    for dtype in args.dtypes:
        for kind, backend in rows:
            extra = ["--dir", directory, "--dtype", dtype]
            extra += ["--warmup", str(args.warmup), "--repeats", str(repeats)]
            res = run_worker(__file__, kind, backend, THREADS, extra)
            short = {k: v for k, v in res.items() if k != "tokens"}
            print(f"  {kind}-{backend:6s} {dtype:8s} {short}", file=sys.stderr, flush=True)
            results[f"{kind}-{backend} {dtype}"] = res

    loads = {}
    if not args.no_load:
        for kind, backend in [("hf", "torch"), ("ours", "jax"), ("ours", "torch")]:
            loads[f"{kind}-{backend}"] = measure_load(kind, backend, directory)
            print(f"  load {kind}-{backend}: {loads[f'{kind}-{backend}']}", file=sys.stderr)

    print(f"load average after: {os.getloadavg()[0]:.2f}")
    report(results, loads, bandwidth, new, batches)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "loads": loads, "bandwidth": bandwidth}, f, indent=1)


def report(results, loads, bandwidth, new, batches):
    # Bytes read per decoding step: every weight once (the tied table serves both the
    # embedding gather, a few rows, and the LM head, all of it).
    c = CONFIG
    h, kv = (
        c["hidden_size"],
        c["num_key_value_heads"] * c["hidden_size"] // c["num_attention_heads"],
    )
    per_layer = h * (h + 2 * kv) + h * h + 3 * h * c["intermediate_size"]
    params = c["num_hidden_layers"] * per_layer + c["vocab_size"] * h
    print(
        f"\nGeneration, Qwen2.5-0.5B size (random weights, {params / 1e6:.0f}M matmul "
        f"parameters), prompt {PROMPT} + {new} new tokens, greedy, {THREADS} threads "
        "(new tokens/s; ratio = / HF generate in the same dtype; first = first call's "
        "seconds, compilation included)"
    )
    labels = [f"b{b}" for b in batches]
    print(f"{'implementation':26s}" + "".join(f"{'batch ' + lb[1:]:>26s}" for lb in labels))
    for name, res in results.items():
        if "error" in res:
            print(f"{name:26s} n/a ({res['error'][:160]})")
            continue
        dtype = name.split()[1]
        hf = results.get(f"hf-torch {dtype}", {})
        cells = []
        for label in labels:
            r = res[label]
            ratio = f" ({r['tok_s'] / hf[label]['tok_s']:.2f}x)" if label in hf else ""
            cells.append(f"{r['tok_s']:7.2f}{ratio} first {r['first_s']:5.1f}s")
        print(f"{name:26s}" + "".join(f"{cell:>26s}" for cell in cells))
    print(f"\nWeight-read limit at batch 1 ({bandwidth:.1f} GB/s):")
    for dtype, size in (("float32", 4), ("bfloat16", 2)):
        limit = bandwidth * 1e9 / (params * size)
        print(f"  {dtype}: {params * size / 1e9:.2f} GB per token -> {limit:.1f} tok/s", end="")
        for name, res in results.items():
            if name.endswith(dtype) and "b1" in res:
                print(f"; {name.split()[0]} {res['b1']['tok_s'] / limit:.0%}", end="")
        print()
    print("\nSame first-row tokens as HF (batch 1, of the new tokens):")
    for name, res in results.items():
        dtype = name.split()[1]
        hf = results.get(f"hf-torch {dtype}", {})
        if "b1" in res and "b1" in hf and not name.startswith("hf"):
            a, b = res["b1"]["tokens"], hf["b1"]["tokens"]
            same = next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a))
            print(f"  {name}: first {same} of {len(a)} identical")
    if loads:
        print("\nLoading, bfloat16, fresh process (peak = VmHWM rise during the load):")
        hf = loads.get("hf-torch", {})
        for name, res in loads.items():
            if "error" in res:
                print(f"  {name}: n/a ({res['error'][:160]})")
                continue
            ratio = f" ({res['seconds'] / hf['seconds']:.2f}x HF)" if "seconds" in hf else ""
            print(
                f"  {name:12s} {res['seconds']:6.2f} s{ratio}, peak +{res['peak_mb']:.0f} MB, "
                f"resident after {res['rss_mb']:.0f} MB, dtypes {res['dtypes']}"
            )


if __name__ == "__main__":
    main()
