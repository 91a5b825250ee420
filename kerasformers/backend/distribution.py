"""Scale-out on both backends: `keras.distribution` on JAX, torch's own DDP.

Part 1, JAX. Scale-out through `keras.distribution` (JAX): data parallel, or model
parallel with a layout map for the builder's layer names; multi-host ready.

Call `configure_distribution` *before* building the model: Keras places each
variable when it is created, following the distribution in effect.

Layouts (mesh axes "batch" x "model"):

| variable (path regex) | layout |
|---|---|
| `Embedding-Token/embeddings` (vocab, hidden) | ("model", None): vocab rows split |
| `MLM-Bias/bias` (vocab,) | ("model",) |
| attention `q/k/v_dense/kernel` (hidden, heads*size) | (None, "model"): heads split |
| attention `q/k/v_dense/bias` | ("model",) |
| attention `o_dense/kernel` (heads*size, hidden) | ("model", None) |
| feed-forward `i*_dense/kernel` (hidden, inner) | (None, "model") |
| feed-forward `i*_dense/bias` | ("model",) |
| feed-forward `o_dense/kernel` (inner, hidden) | ("model", None) |
| everything else | replicated |

This is Megatron's split: column-parallel in, row-parallel out, so each block
needs one reduction of its output; XLA's SPMD partitioner inserts it.

Reference:
    https://keras.io/guides/distribution/, https://arxiv.org/abs/1909.08053

Part 2, PyTorch. Multi-process data parallelism for Keras models on PyTorch: torch's own
`DistributedDataParallel` (DDP), launched by `torchrun` (gloo on CPU, nccl on
GPU). The only module of the library that imports `torch.distributed`.

How Keras 3 and DDP fit together: on the torch backend every Keras layer *is*
a `torch.nn.Module` whose variables are `torch.nn.Parameter`s (Keras tracks
them in a `ParameterDict`), so `DistributedDataParallel(model)` wraps a Keras
model as it is. What does not work out of the box is Keras' own `train_step`:
it calls `self(x)`, the bare model, so DDP's forward (which arms the reducer
that all-reduces gradients during `backward()`) never runs. `data_parallel`
therefore installs a train step that runs the forward through the DDP
wrapper; DDP then averages the gradients across processes in buckets,
overlapped with the backward pass, and Keras' optimizer applies them. DDP's
constructor also broadcasts rank 0's variables, so every process starts from
the same weights.

Example (`torchrun --nproc_per_node 2 train.py`):
    >>> from kerasformers.backend import distribution as ddp
    >>> rank, world = ddp.init_process_group()        # reads torchrun's env
    >>> model.compile(...)
    >>> ddp.data_parallel(model)
    >>> model.train_on_batch(x_of_this_rank, y_of_this_rank)

Reference:
    https://pytorch.org/docs/stable/notes/ddp.html
"""

import os

import keras

KINDS = ("none", "data", "model")

# Paths are `"<layer name>/<sublayer>/<weight>"`; the builder's attention layers
# are "Transformer-N-MultiHeadSelfAttention" (and "...CrossAttention" in seq2seq).
_ATTENTION = r"(.*/)?[^/]*MultiHead\w*Attention"
_FEED_FORWARD = r"(.*/)?[^/]*FeedForward"
LAYOUT_RULES = (
    (r"(.*/)?[^/]*Embedding-Token/embeddings", ("model", None)),
    (r"(.*/)?[^/]*MLM-Bias/bias", ("model",)),
    (_ATTENTION + r"/[qkv]_dense/kernel", (None, "model")),
    (_ATTENTION + r"/[qkv]_dense/bias", ("model",)),
    (_ATTENTION + r"/o_dense/kernel", ("model", None)),
    (_FEED_FORWARD + r"/i\w*_dense/kernel", (None, "model")),
    (_FEED_FORWARD + r"/i\w*_dense/bias", ("model",)),
    (_FEED_FORWARD + r"/o_dense/kernel", ("model", None)),
)


def layout_map(device_mesh):
    """A `keras.distribution.LayoutMap` on `device_mesh` (axes "batch",
    "model") with `LAYOUT_RULES` for the builder's layer names."""
    layouts = keras.distribution.LayoutMap(device_mesh)
    for pattern, axes in LAYOUT_RULES:
        layouts[pattern] = axes
    return layouts


def initialize_multihost(coordinator_address=None, num_processes=None, process_id=None):
    """Joins a multi-host JAX job (`keras.distribution.initialize`); a no-op
    for a single process. Arguments may also come from the environment
    (`KERAS_DISTRIBUTION_JOB_ADDRESSES`, `..._NUM_PROCESSES`, `..._PROCESS_ID`)."""
    if num_processes is None or int(num_processes) <= 1:
        return
    keras.distribution.initialize(coordinator_address, int(num_processes), int(process_id))


def configure_distribution(kind="none", model_parallel=1, devices=None):
    """Sets the global Keras distribution for the next models built.

    Args:
        kind: "none" (single device; resets any distribution), "data"
            (`DataParallel` over all devices) or "model" (`ModelParallel` on a
            (devices / model_parallel, model_parallel) mesh with `layout_map`).
        model_parallel: size of the "model" axis for kind="model".
        devices: device list (default: all devices of all processes).

    Returns:
        The distribution, or None.

    Raises:
        ValueError: unknown kind, a backend other than jax, or a model axis
            that does not divide the device count.
    """
    if kind not in KINDS:
        raise ValueError(f"distribution must be one of {KINDS}, got {kind!r}")
    if kind == "none":
        keras.distribution.set_distribution(None)
        return None
    if keras.backend.backend() != "jax":
        raise ValueError(
            f"keras.distribution needs the jax backend (this is {keras.backend.backend()}); "
            "on torch launch with torchrun and use kerasformers.backend.distribution"
        )
    devices = devices or keras.distribution.list_devices()
    if kind == "data":
        distribution = keras.distribution.DataParallel(devices=devices)
    else:
        if model_parallel < 1 or len(devices) % model_parallel:
            raise ValueError(
                f"model_parallel={model_parallel} must divide the {len(devices)} devices"
            )
        mesh = keras.distribution.DeviceMesh(
            shape=(len(devices) // model_parallel, model_parallel),
            axis_names=("batch", "model"),
            devices=devices,
        )
        distribution = keras.distribution.ModelParallel(
            layout_map=layout_map(mesh), batch_dim_name="batch"
        )
    keras.distribution.set_distribution(distribution)
    return distribution


# ---------------------------------------------------------------- torch DDP
def _require_torch(what):
    if keras.backend.backend() != "torch":
        raise ValueError(
            f"{what} needs the torch backend (KERAS_BACKEND=torch), this is "
            f"{keras.backend.backend()}; on jax use kerasformers.backend.distribution"
        )


def init_process_group(backend=None):
    """Joins the process group described by torchrun's environment (`RANK`,
    `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`); a no-op outside torchrun.

    Args:
        backend: "gloo", "nccl" or None (nccl when CUDA is available, else gloo).

    Returns:
        `(rank, world_size)`.
    """
    _require_torch("init_process_group")
    import torch
    import torch.distributed as dist

    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return 0, 1
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def destroy_process_group():
    """Leaves the process group, if one was joined."""
    if keras.backend.backend() != "torch":
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def process_info():
    """`(rank, world_size)` of this process: the torch process group's on
    torch, JAX's process index/count on jax, `(0, 1)` otherwise."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.process_index(), jax.process_count()
    if backend == "torch":
        import torch.distributed as dist

        if dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rng_state():
    """Process-level random state that Keras variables do not hold, as
    `{name: numpy array}`: on torch, the global generator that Keras' unseeded
    dropout draws from (Keras' own seed states are variables and are saved
    with the model). Empty on other backends."""
    if keras.backend.backend() != "torch":
        return {}
    import torch

    state = {"rng_torch_cpu": torch.get_rng_state().numpy()}
    if torch.cuda.is_available():
        for i, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            state[f"rng_torch_cuda{i}"] = cuda_state.numpy()
    return state


def set_rng_state(state):
    """Restores what `rng_state` returned (keys of other backends are ignored)."""
    if keras.backend.backend() != "torch":
        return
    import torch

    if "rng_torch_cpu" in state:
        torch.set_rng_state(torch.from_numpy(state["rng_torch_cpu"].copy()))
    for key, value in state.items():
        if key.startswith("rng_torch_cuda") and torch.cuda.is_available():
            index = int(key[len("rng_torch_cuda") :])
            if index < torch.cuda.device_count():
                torch.cuda.set_rng_state(torch.from_numpy(value.copy()), index)


def barrier():
    """Waits for every process (no-op for a single process)."""
    if keras.backend.backend() == "torch":
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()


def data_parallel(model, **ddp_kwargs):
    """Makes `model.fit` / `train_on_batch` train data-parallel under DDP.

    Each process feeds its own slice of the global batch; gradients are
    averaged over the processes, so with a loss whose normaliser does not
    depend on the data (a mean over a fixed number of positions) a step equals
    one step of a single process on the whole global batch.

    Args:
        model: a compiled `keras.Model` (torch backend, process group joined).
        **ddp_kwargs: passed to `torch.nn.parallel.DistributedDataParallel`.

    Returns:
        The model, with `model.ddp` (the wrapper) and the new train step.
    """
    _require_torch("data_parallel")
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if not isinstance(model, keras.Model) or model.optimizer is None:
        raise ValueError("data_parallel needs a compiled keras.Model")
    if not dist.is_initialized():
        raise RuntimeError(
            "no torch process group: launch with torchrun and call init_process_group"
        )
    # Build the optimizer before wrapping, so its variables exist on every rank.
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    wrapper = DistributedDataParallel(model, **ddp_kwargs)

    def train_step(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        # Through the wrapper: DDP's forward prepares the gradient all-reduce.
        y_pred = wrapper(x, training=True)
        model.zero_grad()
        loss = model._compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
        )
        batch = keras.ops.shape(next(i for i in keras.tree.flatten(x) if i is not None))[0]
        model._loss_tracker.update_state(loss, sample_weight=batch)
        loss = model.optimizer.scale_loss(loss)
        loss.backward()  # DDP averages the gradients across processes here
        trainable = model.trainable_weights[:]
        with torch.no_grad():
            model.optimizer.apply([v.value.grad for v in trainable], trainable)
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    # Attribute writes of non-Keras modules are wrapped by Keras; keep a plain one.
    object.__setattr__(model, "ddp", wrapper)
    model.train_step = train_step
    model.train_function = None  # rebuilt from train_step on the next call
    return model
