"""How fast do the checkpoint readers load a BERT-base-size checkpoint, and what does it cost?

Builds ~110M random float32 parameters under Google's BERT-base names and shapes, writes them
as a TensorFlow checkpoint and as safetensors into a temporary directory, then measures, each
in a fresh Python subprocess (so that neither imports nor earlier runs skew the numbers):

* ``read_s``: wall time to open the checkpoint and read every tensor into numpy, checksums
  verified for TensorFlow (files are in the page cache: they were just written);
* ``crc_s``: of that, the time spent computing CRC-32C (TensorFlow only);
* ``peak_rss_delta_mb``: peak resident memory during the load minus resident memory just
  before it. On Linux that is VmHWM from /proc/self/status, reset with /proc/self/clear_refs
  first (``resource.getrusage().ru_maxrss`` is unusable there: a child inherits its parent's
  value across fork/exec); elsewhere ru_maxrss. Every tensor is kept in a dict the way a model
  would hold its weights; ``keep=False`` drops each array after reading, which shows the
  reader's own overhead (about the largest tensor).

It also reports the raw throughput of the numpy CRC-32C on a 440 MB buffer.

Usage::

    python benchmarks/checkpoint_load.py [--layers 12] [--dir DIR]

The functions `measure_tf_load`, `measure_safetensors_load`, `measure_crc32c` and
`bert_base_tensors` are importable, for comparisons against other loaders.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from kerasformers.checkpoints import save_checkpoint  # noqa: E402
from kerasformers.checkpoints.crc import crc32c  # noqa: E402


def bert_shapes(layers=12, hidden=768, intermediate=3072, vocab=30522, positions=512):
    """Google BERT checkpoint names and shapes (BERT-base by default)."""
    shapes = {
        "bert/embeddings/word_embeddings": (vocab, hidden),
        "bert/embeddings/token_type_embeddings": (2, hidden),
        "bert/embeddings/position_embeddings": (positions, hidden),
        "bert/embeddings/LayerNorm/gamma": (hidden,),
        "bert/embeddings/LayerNorm/beta": (hidden,),
        "bert/pooler/dense/kernel": (hidden, hidden),
        "bert/pooler/dense/bias": (hidden,),
        "cls/predictions/transform/dense/kernel": (hidden, hidden),
        "cls/predictions/transform/dense/bias": (hidden,),
        "cls/predictions/transform/LayerNorm/gamma": (hidden,),
        "cls/predictions/transform/LayerNorm/beta": (hidden,),
        "cls/predictions/output_bias": (vocab,),
        "cls/seq_relationship/output_weights": (2, hidden),
        "cls/seq_relationship/output_bias": (2,),
    }
    for i in range(layers):
        p = f"bert/encoder/layer_{i}/"
        for part in ("query", "key", "value"):
            shapes[f"{p}attention/self/{part}/kernel"] = (hidden, hidden)
            shapes[f"{p}attention/self/{part}/bias"] = (hidden,)
        shapes[f"{p}attention/output/dense/kernel"] = (hidden, hidden)
        shapes[f"{p}attention/output/dense/bias"] = (hidden,)
        shapes[f"{p}attention/output/LayerNorm/gamma"] = (hidden,)
        shapes[f"{p}attention/output/LayerNorm/beta"] = (hidden,)
        shapes[f"{p}intermediate/dense/kernel"] = (hidden, intermediate)
        shapes[f"{p}intermediate/dense/bias"] = (intermediate,)
        shapes[f"{p}output/dense/kernel"] = (intermediate, hidden)
        shapes[f"{p}output/dense/bias"] = (hidden,)
        shapes[f"{p}output/LayerNorm/gamma"] = (hidden,)
        shapes[f"{p}output/LayerNorm/beta"] = (hidden,)
    return shapes


def bert_base_tensors(layers: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 tensors with BERT-base names and shapes (~110M parameters at 12 layers).

    Args:
        layers: Number of encoder layers.
        seed: Random seed.
    """
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal(shape, dtype=np.float32) * 0.02
        for name, shape in bert_shapes(layers).items()
    }


_CHILD = r"""
import json, resource, sys, time
fmt, path, keep = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
sys.path.insert(0, sys.argv[4])
import numpy as np
from kerasformers.checkpoints import open_checkpoint
import kerasformers.checkpoints.tf_bundle as tf_bundle

crc_s = [0.0]
original = tf_bundle.masked_crc32c
def timed(buf):
    start = time.perf_counter()
    try:
        return original(buf)
    finally:
        crc_s[0] += time.perf_counter() - start
tf_bundle.masked_crc32c = timed

def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

try:
    # Linux: ru_maxrss survives exec (it starts at the parent's size at fork time), so use
    # this process's own high-water mark, reset to the current RSS just before measuring.
    _status("VmHWM")
    def start_peak():
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status("VmRSS")
    def peak():
        return _status("VmHWM")
except OSError:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    start_peak = peak

if fmt == "safetensors-library":
    from safetensors import safe_open
    before = start_peak(); start = time.perf_counter()
    kept, nbytes, count = {}, 0, 0
    with safe_open(path, framework="numpy") as f:
        for name in f.keys():
            array = f.get_tensor(name)
            nbytes += array.nbytes; count += 1
            if keep:
                kept[name] = array
            del array
else:
    before = start_peak(); start = time.perf_counter()
    kept, nbytes, count = {}, 0, 0
    with open_checkpoint(path) as reader:
        for name in reader.names():
            array = reader.get(name)
            nbytes += array.nbytes; count += 1
            if keep:
                kept[name] = array
            del array
seconds = time.perf_counter() - start
print(json.dumps({"read_s": seconds, "crc_s": crc_s[0], "tensors": count, "bytes": nbytes,
                  "peak_rss_delta_mb": (peak() - before) / 2**20}))
"""


RSS_METHOD = (
    "peak RSS of a fresh subprocess during the load minus its RSS before it: Linux VmHWM after "
    "resetting it via /proc/self/clear_refs (resource.getrusage ru_maxrss elsewhere)"
)


def _measure(fmt: str, path: str, keep: bool) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, fmt, os.fspath(path), "1" if keep else "0", ROOT],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise RuntimeError(f"measuring {path} failed:\n{result.stderr}")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    out.update(
        format=fmt,
        path=os.fspath(path),
        keep=keep,
        rss_method=RSS_METHOD,
    )
    return out


def measure_tf_load(prefix: str, keep: bool = True) -> dict:
    """Reads every tensor of a TensorFlow checkpoint (checksums verified) in a subprocess.

    Args:
        prefix: Checkpoint prefix.
        keep: Keep all arrays alive (as a model would) or drop each after reading.

    Returns:
        Dict with read_s, crc_s, tensors, bytes, peak_rss_delta_mb, format, path, keep.
    """
    return _measure("tf", prefix, keep)


def measure_safetensors_load(path: str, keep: bool = True, library: bool = False) -> dict:
    """Reads every tensor of a safetensors file in a subprocess.

    Args:
        path: The ``.safetensors`` file.
        keep: Keep all arrays alive (as a model would) or drop each after reading.
        library: Read through ``safetensors.safe_open(framework="numpy")`` instead of our reader.

    Returns:
        Dict with read_s, crc_s (0: safetensors has no checksums), tensors, bytes,
        peak_rss_delta_mb, format, path, keep.
    """
    return _measure("safetensors-library" if library else "safetensors", path, keep)


def measure_crc32c(nbytes: int = 440 * 10**6, repeat: int = 3, seed: int = 0) -> dict:
    """Throughput of the numpy CRC-32C on one random buffer (best of `repeat` runs).

    Args:
        nbytes: Buffer size in bytes.
        repeat: Number of timed runs.
        seed: Random seed.
    """
    data = np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8)
    crc32c(data[: 1 << 20])  # build the lookup tables outside the timing
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        crc32c(data)
        best = min(best, time.perf_counter() - start)
    return {"bytes": nbytes, "seconds": best, "mb_per_s": nbytes / 1e6 / best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=12, help="encoder layers (12 = BERT-base)")
    parser.add_argument("--dir", help="where to write the checkpoints (default: a temp dir)")
    args = parser.parse_args()

    crc = measure_crc32c()
    print(f"numpy CRC-32C: {crc['mb_per_s']:.0f} MB/s on {crc['bytes'] / 1e6:.0f} MB")

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        start = time.perf_counter()
        tensors = bert_base_tensors(args.layers)
        total = sum(a.nbytes for a in tensors.values())
        params = sum(a.size for a in tensors.values())
        print(
            f"{len(tensors)} tensors, {params / 1e6:.1f}M parameters, {total / 1e6:.0f} MB "
            f"(generated in {time.perf_counter() - start:.1f}s)"
        )
        start = time.perf_counter()
        prefix = save_checkpoint(tensors, os.path.join(tmp, "tf", "bert_model.ckpt"), format="tf")
        tf_write = time.perf_counter() - start
        start = time.perf_counter()
        st_path = save_checkpoint(tensors, os.path.join(tmp, "model.safetensors"), "safetensors")
        st_write = time.perf_counter() - start
        del tensors
        print(f"write: tf {tf_write:.2f}s, safetensors {st_write:.2f}s\n")

        rows = [
            ("tf (ours, crc checked)", measure_tf_load(prefix)),
            ("tf, drop each array", measure_tf_load(prefix, keep=False)),
            ("safetensors (ours)", measure_safetensors_load(st_path)),
            ("safetensors, drop each", measure_safetensors_load(st_path, keep=False)),
            ("safetensors (safe_open np)", measure_safetensors_load(st_path, library=True)),
        ]
    header = f"{'reader':28} {'read s':>8} {'crc s':>8} {'MB/s':>8} {'peak RSS +MB':>13}"
    print(header)
    print("-" * len(header))
    for label, r in rows:
        rate = r["bytes"] / 1e6 / r["read_s"]
        print(
            f"{label:28} {r['read_s']:8.3f} {r['crc_s']:8.3f} {rate:8.0f} "
            f"{r['peak_rss_delta_mb']:13.0f}"
        )
    print(f"\npeak RSS +MB: {RSS_METHOD}. Files are in the page cache.")


if __name__ == "__main__":
    main()
