"""Timing and process helpers shared by the benchmarks."""

import json
import os
import subprocess
import sys
import time


def time_median(fn, warmup, repeats):
    """Median wall time of `fn()` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def sync(out):
    """Forces the computation to finish (jax dispatches asynchronously)."""
    import keras

    for leaf in keras.tree.flatten(out):
        if hasattr(leaf, "block_until_ready"):
            leaf.block_until_ready()
    return out


def run_worker(script, kind, backend, threads, extra_args=()):
    """Runs `script --worker kind ...` under `backend`; returns its last JSON line."""
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        OMP_NUM_THREADS=threads,
        MKL_NUM_THREADS=threads,
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    cmd = [sys.executable, script, "--worker", kind, *extra_args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail)}
    return json.loads(lines[-1])


def cpu_description():
    """CPU model and its vector extensions (AVX2 / AVX-512 / AMX), from /proc/cpuinfo."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    have = [flag for flag in wanted if flag in flags]
    return f"{model}, {os.cpu_count()} cores; vector flags: {' '.join(have) or 'none of AVX2+'}"
