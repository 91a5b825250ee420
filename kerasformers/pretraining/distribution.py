"""Scale-out through `keras.distribution` (JAX): data parallel, or model
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
"""

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
            "on torch launch with torchrun and use kerasformers.backend.ddp"
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
