"""Time and peak memory to load a checkpoint: ours vs HF from_pretrained, fresh process each.

Two cases (``--case``):

* ``llm`` (default): a random GPT-2-shaped model the size of Qwen2.5-0.5B (24 layers,
  hidden 896, 14 heads, vocab 151936, inner 6528: 0.49B parameters, 0.99 GB in bfloat16),
  saved by HF transformers in bfloat16 as sharded safetensors (four shards +
  ``model.safetensors.index.json``). Loaded by ``GPT2LMHeadModel.from_pretrained(dir,
  dtype=torch.bfloat16)`` and by ``build_transformer_model(config, dir, model="gpt2")``
  under ``keras.config.set_dtype_policy("bfloat16")`` on jax and torch; "build only" is the
  same model without a checkpoint (its random initialisation).
* ``bert``: a random BERT-base (110M float32 parameters), saved by HF as
  ``model.safetensors`` and by us as a Google TF checkpoint.

Imports are done first and excluded. Peak = the process's peak resident memory during the
load minus its resident memory just before (Linux VmHWM, reset through
/proc/self/clear_refs; ``ru_maxrss`` is inherited across fork/exec, so unusable here),
reported against the weights' bytes. Files are in the page cache (just written). The CPU
model and vector flags are printed with the figures.

    python benchmarks/loading.py [--case llm|bert]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import cpu_description  # noqa: E402

BERT = dict(
    vocab_size=30522,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=512,
    type_vocab_size=2,
)
LLM = dict(vocab_size=151936, n_embd=896, n_layer=24, n_head=14, n_inner=6528, n_positions=1024)
LLM_SHARD = "300MB"  # four shards for this model

_CHILD = r"""
import json, os, sys, time
case, kind, config_path, checkpoint = sys.argv[1:5]

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
    if case == "llm":
        keras.config.set_dtype_policy("bfloat16")
model_name = "gpt2" if case == "llm" else "bert"
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
start = time.perf_counter()
if kind == "hf" and case == "llm":
    model = transformers.GPT2LMHeadModel.from_pretrained(checkpoint, dtype=torch.bfloat16)
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()})
elif kind == "hf":
    model = transformers.BertModel.from_pretrained(checkpoint)
    dtypes = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()})
else:
    args = () if checkpoint == "none" else (checkpoint,)
    model = build_transformer_model(config_path, *args, model=model_name)
    dtypes = sorted({str(w.dtype) for w in model.weights})
seconds = time.perf_counter() - start
peak = status("VmHWM") - before
print(json.dumps({"seconds": seconds, "peak_mb": peak / 2**20, "dtypes": dtypes}))
"""


def measure(case, kind, backend, config_path, checkpoint):
    env = dict(os.environ, KERAS_BACKEND=backend, OMP_NUM_THREADS="2", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, case, kind, config_path, checkpoint],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _run(code):
    env = dict(os.environ, KERAS_BACKEND="torch")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])


def prepare_bert(directory):
    """HF-written safetensors + config, and our Google TF checkpoint of the same weights."""
    _run(f"""
import transformers
from kerasformers.models import build_transformer_model
config = transformers.BertConfig(**{BERT!r})
transformers.BertModel(config).save_pretrained({directory!r})
builder = build_transformer_model({directory!r} + "/config.json", {directory!r},
                                  return_keras_model=False)
builder.save_weights_as_checkpoint({directory!r} + "/tf/bert_model.ckpt")
""")


def prepare_llm(directory):
    """HF-written bfloat16 shards of a random 0.5B GPT-2 (initialised in bfloat16)."""
    _run(f"""
import torch, transformers
torch.manual_seed(0)
torch.set_default_dtype(torch.bfloat16)
config = transformers.GPT2Config(**{LLM!r})
model = transformers.GPT2LMHeadModel(config)
model.save_pretrained({directory!r}, max_shard_size={LLM_SHARD!r})
""")


def _report(title, rows, size_mb):
    hf = rows[0][1]
    print(f"\n{title}")
    print(f"CPU: {cpu_description()}")
    print(f"{'load':44s} {'seconds':>8s} {'vs HF':>7s} {'peak MB':>8s} {'x weights':>9s}  dtypes")
    for label, res in rows:
        print(
            f"{label:44s} {res['seconds']:8.2f} {res['seconds'] / hf['seconds']:6.2f}x "
            f"{res['peak_mb']:8.0f} {res['peak_mb'] / size_mb:8.2f}x  {','.join(res['dtypes'])}"
        )


def main_llm():
    with tempfile.TemporaryDirectory() as directory:
        prepare_llm(directory)
        config = os.path.join(directory, "config.json")
        with open(os.path.join(directory, "model.safetensors.index.json")) as f:
            index = json.load(f)
        size_mb = index["metadata"]["total_size"] / 2**20
        shards = len(set(index["weight_map"].values()))
        rows = [
            (
                "HF GPT2LMHeadModel.from_pretrained bf16",
                measure("llm", "hf", "torch", config, directory),
            )
        ]
        for backend in ("jax", "torch"):
            rows += [
                (
                    f"ours {backend}: sharded bf16 safetensors",
                    measure("llm", "ours", backend, config, directory),
                ),
                (
                    f"ours {backend}: build only (random init)",
                    measure("llm", "ours", backend, config, "none"),
                ),
            ]
    _report(
        f"Loading a 0.49B-parameter GPT-2 ({size_mb:.0f} MB bfloat16 in {shards} shards), "
        "bfloat16 policy, fresh process each",
        rows,
        size_mb,
    )


def main_bert():
    with tempfile.TemporaryDirectory() as directory:
        prepare_bert(directory)
        config = os.path.join(directory, "config.json")
        size_mb = os.path.getsize(os.path.join(directory, "model.safetensors")) / 2**20
        rows = [
            ("HF from_pretrained (safetensors)", measure("bert", "hf", "torch", config, directory))
        ]
        tf = os.path.join(directory, "tf", "bert_model.ckpt")
        st = os.path.join(directory, "model.safetensors")
        for backend in ("jax", "torch"):
            rows += [
                (f"ours {backend}: build only", measure("bert", "ours", backend, config, "none")),
                (f"ours {backend}: TF checkpoint", measure("bert", "ours", backend, config, tf)),
                (f"ours {backend}: safetensors", measure("bert", "ours", backend, config, st)),
            ]
    _report(
        f"Loading a BERT-base-size checkpoint ({size_mb:.0f} MB float32), fresh process each",
        rows,
        size_mb,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=("llm", "bert"), default="llm")
    (main_llm if parser.parse_args().case == "llm" else main_bert)()
