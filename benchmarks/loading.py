"""Time and peak memory to load a BERT-base-size checkpoint: ours vs HF from_pretrained.

A random BERT-base (12 layers, hidden 768, vocab 30522, 110M float32 parameters, 438 MB)
is saved by HF transformers as model.safetensors, and by kerasformers as a Google TF
checkpoint. Each load then runs in a fresh subprocess (imports done first and excluded):

* ours: `build_transformer_model(config, checkpoint)` on the jax and the torch backend,
  from the TF checkpoint (CRC32C verified) and from the safetensors file;
* ours, build only (no checkpoint): the cost of creating the randomly initialised model;
* HF: `BertModel.from_pretrained(dir)` on torch.

Peak memory is the subprocess's peak resident set during the load minus its resident set
just before (Linux VmHWM, reset through /proc/self/clear_refs). Files are in the page cache.

    python benchmarks/loading.py
"""

import json
import os
import subprocess
import sys
import tempfile

CONFIG = dict(
    vocab_size=30522,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=512,
    type_vocab_size=2,
)

_CHILD = r"""
import json, os, sys, time
kind, config_path, checkpoint = sys.argv[1], sys.argv[2], sys.argv[3]

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

if kind == "hf":
    import torch, transformers
else:
    import keras
    from kerasformers.models import build_transformer_model
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
start = time.perf_counter()
if kind == "hf":
    model = transformers.BertModel.from_pretrained(checkpoint)
elif checkpoint == "none":
    model = build_transformer_model(config_path)
else:
    model = build_transformer_model(config_path, checkpoint)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_mb": (status("VmHWM") - before) / 2**20}))
"""


def measure(kind, backend, config_path, checkpoint):
    env = dict(os.environ, KERAS_BACKEND=backend, OMP_NUM_THREADS="2")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, kind, config_path, checkpoint],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def prepare(directory):
    """HF-written safetensors + config, and our Google TF checkpoint of the same weights."""
    env = dict(os.environ, KERAS_BACKEND="torch")
    code = f"""
import json, sys, transformers
from kerasformers.models import build_transformer_model
config = transformers.BertConfig(**{CONFIG!r})
transformers.BertModel(config).save_pretrained({directory!r})
builder = build_transformer_model({directory!r} + "/config.json", {directory!r},
                                  return_keras_model=False)
builder.save_weights_as_checkpoint({directory!r} + "/tf/bert_model.ckpt")
"""
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)


def main():
    with tempfile.TemporaryDirectory() as directory:
        prepare(directory)
        config = os.path.join(directory, "config.json")
        size_mb = os.path.getsize(os.path.join(directory, "model.safetensors")) / 2**20
        rows = [("HF from_pretrained (safetensors)", measure("hf", "torch", config, directory))]
        for backend in ("jax", "torch"):
            rows += [
                (f"ours {backend}: build only", measure("ours", backend, config, "none")),
                (
                    f"ours {backend}: TF checkpoint",
                    measure(
                        "ours", backend, config, os.path.join(directory, "tf", "bert_model.ckpt")
                    ),
                ),
                (
                    f"ours {backend}: safetensors",
                    measure("ours", backend, config, os.path.join(directory, "model.safetensors")),
                ),
            ]
    hf = rows[0][1]
    print(f"\nLoading a BERT-base-size checkpoint ({size_mb:.0f} MB float32), fresh process each")
    print(f"{'load':34s} {'seconds':>8s} {'vs HF':>7s} {'peak MB':>8s} {'x file':>7s}")
    for label, res in rows:
        print(
            f"{label:34s} {res['seconds']:8.2f} {res['seconds'] / hf['seconds']:6.2f}x "
            f"{res['peak_mb']:8.0f} {res['peak_mb'] / size_mb:6.2f}x"
        )


if __name__ == "__main__":
    main()
