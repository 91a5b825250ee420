"""Operations missing from `keras.ops`: activations, masking, the torch inference
fast path (packed linear, SDPA), rotary embeddings, multilabel losses, schedules."""

import os
import warnings
import weakref

import keras
from keras import ops

_GELU_VERSION = "erf"


@keras.saving.register_keras_serializable(package="kerasformers")
def gelu_erf(x):
    """Exact GELU, `x * Phi(x)` with the Gaussian CDF (what Google's BERT uses).

    Reference: https://arxiv.org/abs/1606.08415
    """
    return ops.gelu(x, approximate=False)


@keras.saving.register_keras_serializable(package="kerasformers")
def gelu_tanh(x):
    """GELU with the tanh approximation (GPT-2's `gelu_new`)."""
    return ops.gelu(x, approximate=True)


def set_gelu(version):
    """Chooses which GELU the activation name "gelu" resolves to.

    Args:
        version: "erf" (exact, the default, as BERT) or "tanh" (the approximation).
    """
    global _GELU_VERSION
    version = str(version).lower()
    if version not in ("erf", "tanh"):
        raise ValueError(f"set_gelu: version must be 'erf' or 'tanh', got {version!r}")
    _GELU_VERSION = version


_ACTIVATION_ALIASES = {
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_fast": gelu_tanh,
    "gelu_tanh": gelu_tanh,
    "gelu_erf": gelu_erf,
    "swish": "silu",
}


def get_activation(name):
    """Resolves an activation given by name (HF/Google config spelling) or callable.

    "gelu" follows `set_gelu`; HF's "gelu_new" and friends map to the tanh form.
    """
    if name is None:
        return keras.activations.get("linear")
    if callable(name):
        return name
    key = str(name).lower()
    if key == "gelu":
        return gelu_erf if _GELU_VERSION == "erf" else gelu_tanh
    alias = _ACTIVATION_ALIASES.get(key, key)
    if callable(alias):
        return alias
    try:
        return keras.activations.get(alias)
    except ValueError as err:
        raise ValueError(f"Unknown activation {name!r}") from err


def activation_name(fn):
    """The serialisable name of an activation returned by `get_activation`."""
    if fn is gelu_erf:
        return "gelu_erf"
    if fn is gelu_tanh:
        return "gelu_tanh"
    name = keras.activations.serialize(fn)
    return name if isinstance(name, str) else fn


def infinity():
    """A large value standing for infinity in additive masks.

    Finite in float32 and bfloat16; float16 overflows it to inf, so code building
    float16 masks clips it (see MultiHeadAttention).
    """
    return 1e12


def sequence_masking(x, mask=None, value=0.0, axis=None):
    """Fills the positions where `mask` is 0/False with `value` along one axis.

    Args:
        x: tensor to mask.
        mask: (batch, seq_len) tensor of 0/1 or bool, or None (returns `x`).
        value: fill value, or "-inf" / "inf" for a very large magnitude (suited to
            logits before a softmax).
        axis: the sequence axis of `x` (default 1).
    """
    if mask is None:
        return x
    x_dtype = x.dtype
    if value == "-inf":
        value = -infinity()
    elif value == "inf":
        value = infinity()
    if axis is None:
        axis = 1
    elif axis < 0:
        axis = len(x.shape) + axis
    if axis <= 0:
        raise ValueError(f"sequence_masking: axis must be > 0 (the batch axis), got {axis}")
    mask = ops.cast(mask, "bool")
    for _ in range(axis - 1):
        mask = ops.expand_dims(mask, 1)
    for _ in range(len(x.shape) - len(mask.shape)):
        mask = ops.expand_dims(mask, -1)
    return ops.where(mask, x, ops.cast(value, x_dtype))


def dense(layer, x):
    """Applies a built `keras.layers.Dense` to `x` without its `__call__` overhead.

    On torch: in inference (autograd off, CPU, float32/bfloat16) a oneDNN matmul
    on a pre-packed copy of the kernel with bias and activation fused in
    (`_packed_linear`); otherwise one fused `F.linear` (matmul and bias in one
    kernel; the separate bias add costs ~10% of a BERT forward on CPU).
    Elsewhere, and for LoRA / quantized Dense layers, the layer's own `call`.
    """
    if (
        keras.backend.backend() != "torch"
        or getattr(layer, "lora_enabled", False)
        or getattr(layer, "quantization_mode", None) is not None
    ):
        return layer.call(x)
    import torch
    import torch.nn.functional as F

    dtype = x.dtype
    kernel = layer.kernel.value  # the torch Parameter behind the Keras variable
    bias = layer.bias.value if layer.use_bias else None
    if bias is not None and bias.dtype != dtype:
        bias = bias.to(dtype)
    if not torch.is_grad_enabled() and kernel.dtype == dtype:
        rows = x.numel() // x.shape[-1]
        if rows < _PACKED_LINEAR["min_rows"]:
            # A few rows (a decoding step): a plain GEMV on the (in, out) kernel as
            # it is stored; oneDNN's packed path is slow at these sizes.
            flat = x.reshape(rows, x.shape[-1])
            out = torch.addmm(bias, flat, kernel) if bias is not None else flat @ kernel
            return layer.activation(out.reshape(*x.shape[:-1], kernel.shape[-1]))
        if _PACKED_LINEAR["enabled"]:
            out = _packed_linear(x, kernel, bias, layer.activation)
            if out is not None:
                return out
    # Under a mixed policy the kernel is float32 while x is half: cast like
    # Keras' autocasting would. Keras kernels are (in, out); F.linear wants
    # (out, in): a transposed view.
    if kernel.dtype != dtype:
        kernel = kernel.to(dtype)
    return layer.activation(F.linear(x, kernel.t(), bias))


# Packed oneDNN weights for CPU inference on torch. On this project's CPU, oneDNN
# on a pre-packed weight runs BERT-sized float32 matmuls ~2.4x faster than
# F.linear (MKL), and bfloat16 ones ~15% faster, with bias + GELU/ReLU fused.
# The cost: a packed copy of every dense kernel while it is in use (the cache
# holds kernels weakly and repacks one when its torch version counter moves,
# i.e. after an assign or an optimizer step).
# KF_PACKED_LINEAR=0 (or set_packed_linear(False)) turns it off.
# Below KF_PACKED_MIN_ROWS rows (tokens x batch) plain addmm is used instead (default
# 0: never). Packed is faster at every size on a quiet machine (a GPT-2 decoding step:
# 1.15-1.3x), but when the cores are oversubscribed oneDNN's two threads wait on each
# other and a one-row call can take 100x longer; KF_PACKED_MIN_ROWS=16 avoids that.
# "calls" counts the matmuls that took the packed path (tests and benchmarks read it);
# "failure" says why it turned itself off, if it did.
_PACKED_LINEAR = {
    "enabled": os.environ.get("KF_PACKED_LINEAR", "1") != "0",
    "min_rows": int(os.environ.get("KF_PACKED_MIN_ROWS", "0")),
    "calls": 0,
    "failure": None,
}
# id(kernel) -> (weak reference to it, {dtype: (kernel version, packed weight)}).
# Keyed by id: tensors compare elementwise, so they cannot be dict keys themselves
# (nor WeakKeyDictionary keys); the weak reference drops the entry with the kernel.
_PACKED_CACHE = {}


def set_packed_linear(enabled):
    """Turns the packed-weight oneDNN inference path of torch on or off.

    The path also turns itself off, with a RuntimeWarning naming the failing op, the
    first time one of its private oneDNN ops fails; turning it on again retries it.
    """
    _PACKED_LINEAR["enabled"] = bool(enabled)
    _PACKED_LINEAR["failure"] = None
    _PACKED_CACHE.clear()


def tied_dense(x, embeddings):
    """`x @ embeddings.T`: the LM head tied to a (vocab, hidden) token table.

    On torch in inference, a oneDNN matmul on a cached packed copy of the table
    (a GPT-2 sized table, 154 MB: 2.4x faster than `matmul` for one token).
    """
    if keras.backend.backend() == "torch" and _PACKED_LINEAR["enabled"]:
        import torch

        if not torch.is_grad_enabled() and embeddings.dtype == x.dtype:
            out = _packed_linear(x, embeddings, None, None, out_in=True)
            if out is not None:
                return out
    return ops.matmul(x, ops.transpose(ops.cast(embeddings, x.dtype)))


def _packed_linear(x, kernel, bias, activation, out_in=False):
    """oneDNN linear with a cached packed weight; None where it does not apply.

    `kernel` is Keras' (in, out), or (out, in) with `out_in` (a token table).
    """
    import torch

    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16):
        return None
    op = "torch.ops.mkldnn._is_mkldnn_bf16_supported"
    try:
        if x.dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return None
    except Exception as err:  # any failure: the plain path below is always right
        return _packed_linear_failed(op, err)
    if activation is None:
        attr, algorithm = "none", ""
    elif activation is gelu_erf:
        attr, algorithm = "gelu", "none"
    elif activation is gelu_tanh:
        attr, algorithm = "gelu", "tanh"
    elif activation is keras.activations.relu:
        attr, algorithm = "relu", ""
    else:
        attr, algorithm = "none", ""
    try:
        op = "the packed-weight cache"
        owner, entries = _PACKED_CACHE.get(id(kernel), (None, None))
        if owner is None or owner() is not kernel:
            key = id(kernel)
            owner = weakref.ref(kernel, lambda _, key=key: _PACKED_CACHE.pop(key, None))
            entries = {}
            _PACKED_CACHE[key] = (owner, entries)
        version, packed = entries.get(x.dtype, (None, None))
        if version != kernel._version:
            weight = kernel.detach().to(x.dtype)
            weight = (weight if out_in else weight.t()).contiguous()  # (out, in)
            op = "torch.ops.mkldnn._reorder_linear_weight"
            packed = torch.ops.mkldnn._reorder_linear_weight(weight)
            entries[x.dtype] = (kernel._version, packed)
        op = "torch.ops.mkldnn._linear_pointwise"
        out = torch.ops.mkldnn._linear_pointwise(x, packed, bias, attr, [], algorithm)
    except Exception as err:  # any failure: the plain path below is always right
        return _packed_linear_failed(op, err)
    if not torch.compiler.is_compiling():  # a traced counter would guard every call
        _PACKED_LINEAR["calls"] += 1
    return activation(out) if attr == "none" and activation is not None else out


def _packed_linear_failed(op, err):
    """Turns the packed path off for good (a torch build without these oneDNN ops, an
    unsupported CPU or shape) and says so once; the caller then takes the plain path."""
    if _PACKED_LINEAR["enabled"]:
        _PACKED_LINEAR["enabled"] = False
        _PACKED_CACHE.clear()
        _PACKED_LINEAR["failure"] = f"{op} raised {type(err).__name__}: {err}"
        warnings.warn(
            f"kerasformers: the torch CPU fast path (packed oneDNN linear) is off from now "
            f"on: {_PACKED_LINEAR['failure']}. Dense layers fall back to F.linear (same "
            "results, slower); set KF_PACKED_LINEAR=0 to skip the fast path and this warning.",
            RuntimeWarning,
            stacklevel=4,
        )
    return None


def layer_norm(x, gamma=None, beta=None, epsilon=1e-12):
    """LayerNorm over the last axis, statistics in float32, output in x's dtype.

    On torch, F.layer_norm already accumulates half-precision input in float32,
    so it runs on x directly (no float32 copies of the activations); elsewhere
    `keras.ops.layer_normalization` does the float32 upcast itself.
    """
    if keras.backend.backend() != "torch":
        return ops.layer_normalization(x, gamma, beta, epsilon=epsilon)
    import torch.nn.functional as F

    def _as(v):
        if v is None:
            return None
        v = v.value if hasattr(v, "value") else v
        return v if v.dtype == x.dtype else v.to(x.dtype)

    return F.layer_norm(x, (x.shape[-1],), _as(gamma), _as(beta), epsilon)


def dot_product_attention(query, key, value, bias=None, scale=None):
    """Softmax attention on (batch, len, heads, size) tensors; `bias` is additive.

    On torch the (batch, heads, len, size) views go to SDPA as they are: Keras'
    version makes q, k and v contiguous first, three extra copies per layer.
    """
    if keras.backend.backend() != "torch":
        return ops.dot_product_attention(query, key, value, bias=bias, scale=scale)
    import torch.nn.functional as F

    out = F.scaled_dot_product_attention(
        query.transpose(1, 2),
        key.transpose(1, 2),
        value.transpose(1, 2),
        attn_mask=bias,
        scale=scale,
    )
    return out.transpose(1, 2)  # (batch, q_len, heads, size)


def check_ids_in_range(ids, limit, name):
    """Raises a clear error for ids outside [0, limit) where values can be inspected.

    Eager torch and TensorFlow would otherwise fail deep inside the gather
    ("index out of range in self"); under jax.jit values are abstract and XLA
    clamps out-of-range ids instead, so nothing can be checked there.
    """
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        if torch.compiler.is_compiling() or ids.numel() == 0:
            return
        low, high = int(ids.min()), int(ids.max())
    elif backend == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly() or tf.size(ids) == 0:
            return
        low, high = int(tf.reduce_min(ids)), int(tf.reduce_max(ids))
    else:
        return
    if low < 0 or high >= limit:
        bad = high if high >= limit else low
        raise ValueError(f"{name}: id {bad} is outside the vocabulary [0, {limit})")


def apply_rotary_position_embeddings(sinusoidal, *tensors):
    """Rotates pairs of features of each tensor by position-dependent angles (RoPE).

    Args:
        sinusoidal: interleaved [sin, cos, sin, cos, ...] table of shape
            (..., seq_len, size), as `SinusoidalPositionEmbedding(merge_mode="zero")`
            gives; it must broadcast against the tensors (insert a heads axis
            before calling on (batch, seq_len, heads, size) tensors).
        *tensors: tensors whose last axis has `size` features (even).

    Returns:
        The rotated tensors: feature pair (2i, 2i+1) turned by angle
        position * 10000^(-2i/size). One tensor in -> one tensor out.

    Reference:
        https://arxiv.org/abs/2104.09864 (https://kexue.fm/archives/8265)
    """
    size = tensors[0].shape[-1]
    if size is not None and size % 2:
        raise ValueError(f"apply_rotary_position_embeddings: feature size must be even, got {size}")
    # (..., seq_len, size/2) -> each angle repeated for both members of its pair
    cos_pos = ops.repeat(sinusoidal[..., 1::2], 2, axis=-1)
    sin_pos = ops.repeat(sinusoidal[..., ::2], 2, axis=-1)
    outputs = []
    for x in tensors:
        x = ops.convert_to_tensor(x)
        # (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)
        rotated = ops.reshape(ops.stack([-x[..., 1::2], x[..., ::2]], axis=-1), ops.shape(x))
        outputs.append(x * ops.cast(cos_pos, x.dtype) + rotated * ops.cast(sin_pos, x.dtype))
    return outputs[0] if len(outputs) == 1 else outputs


# ---------------------------------------------------------------------- losses
def _loss_dtype(y_pred):
    """Half-precision logits are scored in float32 (1e12 overflows float16)."""
    dtype = keras.backend.standardize_dtype(y_pred.dtype)
    return "float32" if dtype in ("float16", "bfloat16") else dtype


def multilabel_categorical_crossentropy(y_true, y_pred):
    """Multi-label cross-entropy: softmax CE generalised to several target classes.

    Per sample, `log(1 + sum_neg exp(s_j)) + log(1 + sum_pos exp(-s_i))`: every
    target score is pushed above 0 and every non-target score below 0, so at
    prediction time the classes with `y_pred > 0` are the predicted labels.

    Args:
        y_true: (..., num_classes) multi-hot 0/1 targets.
        y_pred: (..., num_classes) raw scores (no sigmoid or softmax).

    Returns:
        (...) per-sample losses (float32 for half-precision scores).

    Example:
        >>> loss = multilabel_categorical_crossentropy([[0, 1, 1]], [[-2.0, 3.0, 0.5]])

    Reference:
        https://kexue.fm/archives/7359
    """
    y_pred = ops.convert_to_tensor(y_pred)
    y_pred = ops.cast(y_pred, _loss_dtype(y_pred))
    y_true = ops.cast(y_true, y_pred.dtype)
    if y_true.shape != y_pred.shape and None not in y_true.shape + y_pred.shape:
        raise ValueError(
            "multilabel_categorical_crossentropy: y_true and y_pred must have the same "
            f"shape, got {tuple(y_true.shape)} and {tuple(y_pred.shape)}"
        )
    # Targets flip sign, so both terms read "log(1 + sum exp(score))"; each term
    # hides the other group's classes with -infinity.
    y_pred = (1.0 - 2.0 * y_true) * y_pred
    y_neg = y_pred - y_true * infinity()
    y_pos = y_pred - (1.0 - y_true) * infinity()
    zeros = ops.zeros_like(y_pred[..., :1])  # the "1 +" inside each log
    neg_loss = ops.logsumexp(ops.concatenate([y_neg, zeros], axis=-1), axis=-1)
    pos_loss = ops.logsumexp(ops.concatenate([y_pos, zeros], axis=-1), axis=-1)
    return neg_loss + pos_loss


def sparse_multilabel_categorical_crossentropy(y_true, y_pred, mask_zero=False):
    """`multilabel_categorical_crossentropy` with targets given as class indices.

    For many classes and few targets (e.g. GlobalPointer's (head, tail) pairs)
    the multi-hot target matrix is huge; here each sample lists its target
    indices. The negative term is computed as
    `log(sum_all exp(s) - sum_pos exp(s))`, clipped at `keras.config.epsilon()`.

    Args:
        y_true: (..., num_targets) integer indices of the target classes; every
            sample lists the same number of indices.
        y_pred: (..., num_classes) raw scores.
        mask_zero: if True, class 0 is padding: index 0 in `y_true` is not a
            target and class 0 takes no part in the loss, so rows with fewer
            targets can be padded with 0.

    Returns:
        (...) per-sample losses.

    Reference:
        https://kexue.fm/archives/7359, https://kexue.fm/archives/8888
    """
    y_pred = ops.convert_to_tensor(y_pred)
    y_pred = ops.cast(y_pred, _loss_dtype(y_pred))
    y_true = ops.cast(y_true, "int32")
    if len(y_true.shape) != len(y_pred.shape):
        raise ValueError(
            "sparse_multilabel_categorical_crossentropy: y_true (..., num_targets) and "
            "y_pred (..., num_classes) must have the same rank, got shapes "
            f"{tuple(y_true.shape)} and {tuple(y_pred.shape)}"
        )
    zeros = ops.zeros_like(y_pred[..., :1])
    # (..., num_classes + 1): the extra score 0 is the "1 +" of both logs.
    y_pred = ops.concatenate([y_pred, zeros], axis=-1)
    if mask_zero:
        infs = zeros + infinity()
        y_pred = ops.concatenate([infs, y_pred[..., 1:]], axis=-1)
    # (..., num_targets): a padded 0 scores +inf here, i.e. exp(-inf) = 0 below.
    y_pos_2 = ops.take_along_axis(y_pred, y_true, axis=-1)
    y_pos_1 = ops.concatenate([y_pos_2, zeros], axis=-1)
    if mask_zero:
        # Class 0 scores -inf: out of the total, and a padded 0 adds exp(-inf) = 0.
        y_pred = ops.concatenate([-infs, y_pred[..., 1:]], axis=-1)
        y_pos_2 = ops.take_along_axis(y_pred, y_true, axis=-1)
    pos_loss = ops.logsumexp(-y_pos_1, axis=-1)
    all_loss = ops.logsumexp(y_pred, axis=-1)
    # log(sum_all - sum_pos) = log(sum_all) + log(1 - sum_pos / sum_all)
    aux_loss = ops.logsumexp(y_pos_2, axis=-1) - all_loss
    aux_loss = ops.clip(1.0 - ops.exp(aux_loss), keras.config.epsilon(), 1.0)
    neg_loss = all_loss + ops.log(aux_loss)
    return pos_loss + neg_loss


def piecewise_linear(t, schedule, from_zero=True):
    """Piecewise-linear function of `t` through the points of `schedule`.

    `schedule={1000: 1.0, 2000: 0.1}` rises linearly from 0 at t=0 to 1 at
    t=1000, falls to 0.1 at t=2000 and stays at 0.1 after (bert4keras' learning
    rate warm-up/decay schedule). Before the first key the value is the first
    key's value.

    Args:
        t: step (scalar or tensor, cast to floatx).
        schedule: {step: value}, at least one entry.
        from_zero: prepend the point (0, 0.0) when the first key is not 0.

    Returns:
        A floatx tensor shaped like `t`.
    """
    if not isinstance(schedule, dict) or not schedule:
        raise ValueError(
            f"piecewise_linear: schedule must be a non-empty {{step: value}} dict, got {schedule!r}"
        )
    points = sorted((float(k), float(v)) for k, v in schedule.items())
    if from_zero and points[0][0] != 0:
        points = [(0.0, 0.0)] + points
    t = ops.cast(t, keras.config.floatx())
    x = ops.full_like(t, points[0][1])
    for i, (t_begin, x_begin) in enumerate(points):
        if i + 1 < len(points):
            t_end, x_end = points[i + 1]
            segment = x_begin + (x_end - x_begin) / (t_end - t_begin) * (t - t_begin)
        else:
            segment = ops.full_like(t, x_begin)
        x = ops.where(t >= t_begin, segment, x)
    return x
