"""Rotary position embeddings in the LLaMA layout, with HF's `rope_scaling` variants.

`RotaryEmbedding` gives the (cos, sin) table the attention layers rotate their
queries and keys by (`LlamaAttention`: rotate_half, the first half of each head
against its second half, not RoFormer's interleaved pairs). The inverse
frequencies follow HF transformers' `rope_type`s: "default", "linear" (position
interpolation), "dynamic" (NTK-aware, recomputed from the longest position of
the pass), "llama3" (wavelength-banded) and "yarn" (ramped interpolation plus
an attention factor).

Reference:
    RoPE: https://arxiv.org/abs/2104.09864
    Position interpolation: https://arxiv.org/abs/2306.15595
    YaRN: https://arxiv.org/abs/2309.00071
    Llama 3: https://arxiv.org/abs/2407.21783
"""

import math

import keras
import numpy as np
from keras import ops

ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn")

# The keys each rope type needs (besides rope_type) and may take.
_REQUIRED = {
    "default": (),
    "linear": ("factor",),
    "dynamic": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
    "yarn": ("factor", "original_max_position_embeddings"),
}
_OPTIONAL = {
    "yarn": ("attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate"),
}


def check_rope_scaling(rope_scaling, name="rope_scaling"):
    """Validates an HF `rope_scaling` dict; returns it normalised (None: default RoPE).

    Accepts the old spelling {"type": ...} as HF does. Raises ValueError naming
    the unknown type, the missing key or the bad value.
    """
    if rope_scaling is None:
        return None
    if not isinstance(rope_scaling, dict):
        raise ValueError(f"{name} must be a dict (HF's rope_scaling), got {rope_scaling!r}")
    scaling = {k: v for k, v in rope_scaling.items() if k not in ("rope_theta", "type")}
    rope_type = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"{name}: unknown rope type {rope_type!r}; supported: {list(ROPE_TYPES)}")
    scaling["rope_type"] = rope_type
    missing = [key for key in _REQUIRED[rope_type] if scaling.get(key) is None]
    if missing:
        raise ValueError(f"{name}: rope type {rope_type!r} needs {missing}, got {rope_scaling!r}")
    factor = scaling.get("factor")
    if factor is not None and not (isinstance(factor, (int, float)) and factor >= 1):
        raise ValueError(f"{name}: factor must be a number >= 1, got {factor!r}")
    if rope_type == "llama3" and scaling["high_freq_factor"] <= scaling["low_freq_factor"]:
        raise ValueError(f"{name}: llama3 needs high_freq_factor > low_freq_factor")
    if scaling.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(f"{name}: partial_rotary_factor != 1 is not supported")
    return scaling


def rope_frequencies(head_dim, theta, scaling=None):
    """(inverse frequencies (head_dim / 2,) float64, attention factor) of a static
    rope type; "dynamic" gives the unscaled ones (`RotaryEmbedding` rescales them)."""
    exponents = np.arange(0, head_dim, 2, dtype=np.float64) / head_dim
    inv_freq = 1.0 / theta**exponents
    rope_type = (scaling or {}).get("rope_type", "default")
    if rope_type in ("default", "dynamic"):
        return inv_freq, 1.0
    factor = float(scaling["factor"])
    if rope_type == "linear":
        return inv_freq / factor, 1.0
    if rope_type == "llama3":
        old = scaling["original_max_position_embeddings"]
        low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
        wavelength = 2 * math.pi / inv_freq
        # Long wavelengths are interpolated, short ones kept, the band between blended.
        scaled = np.where(wavelength > old / low, inv_freq / factor, inv_freq)
        smooth = (old / wavelength - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelength >= old / high) & (wavelength <= old / low)
        return np.where(medium, blended, scaled), 1.0
    return _yarn(head_dim, theta, factor, scaling)


def _yarn(head_dim, theta, factor, scaling):
    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        m, m_all = scaling.get("mscale"), scaling.get("mscale_all_dim")
        attention_factor = (
            mscale(factor, m) / mscale(factor, m_all) if m and m_all else mscale(factor)
        )
    fast, slow = scaling.get("beta_fast") or 32, scaling.get("beta_slow") or 1
    old = scaling["original_max_position_embeddings"]

    def dimension(rotations):
        # The feature index whose wavelength turns `rotations` times over `old` positions.
        return head_dim * math.log(old / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = dimension(fast), dimension(slow)
    if scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(head_dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    # float32 like HF, so frequencies at the ramp's edges agree bit for bit.
    extrapolate = 1 - ramp.astype(np.float32).astype(np.float64)
    base = theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    inv_freq = (1 / (factor * base)) * (1 - extrapolate) + (1 / base) * extrapolate
    return inv_freq, float(attention_factor)


@keras.saving.register_keras_serializable(package="kerasformers")
class RotaryEmbedding(keras.layers.Layer):
    """The cos / sin table of rotary position embeddings (LLaMA layout).

    Called on the hidden states `x` (only their length matters) or on `[x,
    position_ids]` with custom_position_ids; returns (1|batch, seq, 2 * head_dim):
    cos(p * f) then sin(p * f), each over the frequencies f repeated twice
    (HF's `cat(freqs, freqs)`), scaled by the rope type's attention factor, in
    the compute dtype. In cached generation (`decode_call`) positions are the
    pass's (`decoding.positions`).

    Args:
        head_dim: width of each head's queries / keys (even).
        rope_theta: the base of the wavelengths (10000 in LLaMA 1/2).
        rope_scaling: None or HF's rope_scaling dict (see `check_rope_scaling`).
        max_position: the trained context (HF max_position_embeddings); "dynamic"
            rescales past it.
        custom_position_ids: if True, call with `[x, position_ids]`.
    """

    def __init__(
        self,
        head_dim,
        rope_theta=10000.0,
        rope_scaling=None,
        max_position=None,
        custom_position_ids=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if head_dim % 2:
            raise ValueError(f"{self.name}: head_dim must be even for rotary, got {head_dim}")
        self.head_dim = head_dim
        self.rope_theta = float(rope_theta)
        self.rope_scaling = check_rope_scaling(rope_scaling, f"{self.name}: rope_scaling")
        self.rope_type = (self.rope_scaling or {}).get("rope_type", "default")
        if self.rope_type == "dynamic" and not max_position:
            raise ValueError(f"{self.name}: dynamic rope scaling needs max_position")
        self.max_position = max_position
        self.custom_position_ids = custom_position_ids
        inv_freq, self.attention_factor = rope_frequencies(
            head_dim, self.rope_theta, self.rope_scaling
        )
        self.inv_freq = inv_freq.astype("float32")

    def _inverse_frequencies(self, positions):
        """(1, head_dim / 2) float32 frequencies for these (batch|1, seq) positions."""
        if self.rope_type != "dynamic":
            return ops.convert_to_tensor(self.inv_freq[None])
        # NTK-aware: the base grows with the longest position of the pass (HF's rule).
        factor = float(self.rope_scaling["factor"])
        length = ops.maximum(ops.cast(ops.max(positions), "float32") + 1.0, self.max_position)
        dim = self.head_dim
        base = self.rope_theta * ((factor * length / self.max_position) - (factor - 1)) ** (
            dim / (dim - 2)
        )
        exponents = ops.convert_to_tensor(np.arange(0, dim, 2, dtype="float32") / dim)
        return (1.0 / ops.power(base, exponents))[None]

    def call(self, inputs, position_ids=None):
        if self.custom_position_ids:
            inputs, position_ids = inputs
        if position_ids is None:
            position_ids = ops.arange(ops.shape(inputs)[1], dtype="int32")[None]
        positions = ops.cast(position_ids, "float32")
        # (batch|1, seq, 1) x (1, 1, head_dim / 2) -> (batch|1, seq, head_dim / 2)
        angles = positions[..., None] * self._inverse_frequencies(positions)[:, None, :]
        angles = ops.concatenate([angles, angles], axis=-1)
        table = ops.concatenate([ops.cos(angles), ops.sin(angles)], axis=-1)
        if self.attention_factor != 1.0:
            table = table * self.attention_factor
        return ops.cast(table, self.compute_dtype)

    def decode_call(self, decoding, inputs, position_ids=None):
        if self.custom_position_ids:
            return self.call(inputs)  # the position input carries decoding.positions
        return self.call(inputs, position_ids=decoding.positions)

    def compute_output_shape(self, input_shape):
        if self.custom_position_ids:
            input_shape = input_shape[0]
        return (None, input_shape[1], 2 * self.head_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "head_dim": self.head_dim,
                "rope_theta": self.rope_theta,
                "rope_scaling": self.rope_scaling,
                "max_position": self.max_position,
                "custom_position_ids": self.custom_position_ids,
            }
        )
        return config


def rotate_half(table, *tensors):
    """Applies a `RotaryEmbedding` table to (batch, seq, heads, head_dim) tensors:
    x * cos + rotate_half(x) * sin, rotate_half(x) = (-x2, x1) for x = (x1, x2)."""
    # (batch|1, seq, 2 * dim) -> (batch|1, seq, 1, dim) each: one table for all heads
    cos, sin = ops.split(ops.expand_dims(table, 2), 2, axis=-1)
    outputs = []
    for x in tensors:
        half = ops.shape(x)[-1] // 2
        rotated = ops.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        outputs.append(x * ops.cast(cos, x.dtype) + rotated * ops.cast(sin, x.dtype))
    return outputs
