"""Real multi-device / multi-process training, each in a subprocess:

- jax: 4 virtual CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=4):
  DataParallel for a few steps == single-device training on the same global
  batch; ModelParallel puts each variable on the layout map's sharding and
  gives the single-device loss.
- torch: `torchrun --nproc_per_node 2` (gloo): DDP trains a few steps, both ranks
  end with identical weights, equal to single-process training.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Shared by both workers: a tiny MLM model, three global batches of 8 x 16.
COMMON = """
import os, sys
import numpy as np
import keras
sys.path.insert(0, {root!r})
from kerasformers import pretraining as P
from kerasformers.models import build_transformer_model

CONFIG = dict(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=4,
              intermediate_size=32, hidden_act="gelu", max_position_embeddings=16,
              type_vocab_size=2)
rng = np.random.default_rng(0)
TOKENS = rng.integers(5, 64, size=(3, 8, 16)).astype("int32")
WEIGHTS = (rng.random((3, 8, 16)) < 0.15).astype("float32") / 0.15

def build(distribution="none", model_parallel=2, steps=3):
    P.configure_distribution(distribution, model_parallel)
    keras.utils.set_random_seed(0)
    model = build_transformer_model(CONFIG, with_mlm="linear")
    optimizer = P.pretraining_optimizer(1e-2, total_steps=steps + 1, warmup_steps=1)
    return P.compile_for_pretraining(model, optimizer)

def batch(step, lo=0, hi=8):
    x = TOKENS[step, lo:hi]
    return [x, np.zeros_like(x)], x, WEIGHTS[step, lo:hi]

def weights(model):
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
"""

JAX_WORKER = """
import jax
assert len(jax.devices()) == 4, jax.devices()
out = {{}}
single = build("none")
losses = [single.train_on_batch(*batch(s), return_dict=True)["loss"] for s in range(3)]

data = build("data")
assert len(data.trainable_variables[0].value.sharding.device_set) == 4
data_losses = [data.train_on_batch(*batch(s), return_dict=True)["loss"] for s in range(3)]
out["data_weight_diff"] = max(
    float(np.abs(a - b).max()) for a, b in zip(weights(single), weights(data)))
out["data_loss_diff"] = float(np.abs(np.subtract(losses, data_losses)).max())

model = build("model", 2)
specs = {{v.path: tuple(v.value.sharding.spec) for v in model.variables}}
out["mesh"] = dict(model.variables[0].value.sharding.mesh.shape)
out["specs"] = {{k: [a for a in v] for k, v in specs.items()}}
# The first loss is the forward on the shared initial weights; the next ones
# follow model-parallel updates.
out["model_train_losses"] = [
    float(model.train_on_batch(*batch(s), return_dict=True)["loss"]) for s in range(3)]
out["single_train_losses"] = [float(v) for v in losses]
import json
print("RESULT", json.dumps(out))
"""

TORCH_WORKER = """
import torch
torch.set_num_threads(1)
from kerasformers.backend import distribution as ddp
rank, world = ddp.init_process_group()
model = build("none")
if world > 1:
    ddp.data_parallel(model)
b = 8 // world
for s in range(3):
    model.train_on_batch(*batch(s, rank * b, (rank + 1) * b))
np.savez(os.path.join({out!r}, f"rank{{rank}}_of{{world}}.npz"), *weights(model))
ddp.destroy_process_group()
"""


def _run(cmd, env, timeout):
    result = subprocess.run(
        cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="keras.distribution: jax only")
def test_jax_data_and_model_parallel_on_four_virtual_devices(tmp_path):
    import json

    script = tmp_path / "worker.py"
    script.write_text(COMMON.format(root=ROOT) + textwrap.dedent(JAX_WORKER.format()))
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    stdout = _run([sys.executable, str(script)], env, timeout=300)
    out = json.loads(stdout.split("RESULT ", 1)[1])
    # Data parallel: the global batch's mean loss is split over 4 devices and
    # reduced in another order; 3 steps of LAMB keep the gap at float32 rounding.
    assert out["data_weight_diff"] < 1e-5, out
    assert out["data_loss_diff"] < 1e-5, out
    # Model parallel on a (batch=2, model=2) mesh: the layout map's shardings.
    assert out["mesh"] == {"batch": 2, "model": 2}
    specs = out["specs"]
    assert specs["Embedding-Token/embeddings"] == ["model", None]
    assert specs["MLM-Bias/bias"] == ["model"]
    for i in range(1):
        attention = f"Transformer-{i}-MultiHeadSelfAttention"
        for name in "qkv":
            assert specs[f"{attention}/{name}_dense/kernel"] == [None, "model"]
            assert specs[f"{attention}/{name}_dense/bias"] == ["model"]
        assert specs[f"{attention}/o_dense/kernel"] == ["model", None]
        assert specs[f"{attention}/o_dense/bias"] in ([], [None])  # replicated
        assert specs[f"Transformer-{i}-FeedForward/i_dense/kernel"] == [None, "model"]
        assert specs[f"Transformer-{i}-FeedForward/o_dense/kernel"] == ["model", None]
        assert specs[f"Transformer-{i}-FeedForward-Norm/gamma"] in ([], [None])
    np.testing.assert_allclose(out["model_train_losses"], out["single_train_losses"], atol=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch DDP: torch only")
def test_torch_ddp_two_processes_equal_single_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(
        COMMON.format(root=ROOT) + textwrap.dedent(TORCH_WORKER.format(out=str(tmp_path)))
    )
    env = dict(os.environ, KERAS_BACKEND="torch", OMP_NUM_THREADS="1")
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    _run([torchrun, "--standalone", "--nproc_per_node", "2", str(script)], env, timeout=240)
    _run([sys.executable, str(script)], env, timeout=240)
    ranks = [np.load(tmp_path / f"rank{r}_of2.npz") for r in range(2)]
    single = np.load(tmp_path / "rank0_of1.npz")
    assert len(single.files) > 10
    for key in single.files:
        # DDP broadcasts rank 0's weights and all-reduces gradients: ranks agree bitwise.
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key])
        # Gradients are averaged over two halves instead of summed in one batch.
        np.testing.assert_allclose(ranks[0][key], single[key], rtol=0, atol=1e-5, err_msg=key)
