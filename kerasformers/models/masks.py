"""Attention masks as additive biases, chosen by `application=`.

Every mask here is one pure `keras.ops` function returning a float32 bias that
is 0 where a query may attend to a key and `-infinity()` where it may not,
shaped to broadcast to (batch, heads, q_len, k_len). MultiHeadAttention adds it
to the logits together with the padding mask and clips the sum to what its
compute dtype holds (-6e4 under float16), so the same bias serves float32,
bfloat16 and float16 models.

Biases compose: adding two of them keeps what both allow (an intersection,
e.g. `lm_mask(n) + local_mask(n, 8)` is a causal sliding window), and
`keras.ops.maximum` keeps what either allows (a union, as `sparse_mask` does).

A builder's `application` picks the mask shared by all its layers:

- "encoder": none (bidirectional).
- "lm": `lm_mask`, the causal mask of a left-to-right language model.
- "unilm": `unilm_mask` from the segment ids (UniLM's seq2seq mask).
- a callable `fn(inputs) -> bias`: `inputs` is the list of the model's input
  tensors (token ids first, then segment ids if the model has them); it runs
  inside the "Attention-Mask" layer at call time, so it may read dynamic
  lengths with `keras.ops.shape`. Register it with
  `@keras.saving.register_keras_serializable()` to save the model as `.keras`.

Example:
    >>> @keras.saving.register_keras_serializable()
    ... def causal_window(inputs):
    ...     n = keras.ops.shape(inputs[0])[1]
    ...     return lm_mask(n) + local_mask(n, 16)
    >>> model = build_transformer_model(config, application=causal_window)

Reference:
    UniLM: https://arxiv.org/abs/1905.03197
    Sparse attention: https://kexue.fm/archives/6853,
    https://arxiv.org/abs/1904.10509 (Sparse Transformers)
"""

import inspect

import keras
from keras import ops

from kerasformers.backend import infinity, update_cache

APPLICATIONS = ("encoder", "lm", "unilm")


def _bias(allowed):
    """Boolean "may attend" -> additive float32 bias (0 or -infinity())."""
    return (ops.cast(allowed, "float32") - 1.0) * infinity()


def _distances(length):
    """(q_len, k_len) int32 matrix of i - j (query index minus key index)."""
    idx = ops.arange(length, dtype="int32")
    return idx[:, None] - idx[None, :]


def _check_int_at_least(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def lm_mask(length):
    """Causal (lower-triangular) mask: position i sees keys j <= i.

    Args:
        length: sequence length (an int or a scalar tensor).

    Returns:
        (1, 1, length, length) float32 additive bias.

    Example:
        >>> lm_mask(3)[0, 0]   # 0 on and below the diagonal, -1e12 above
    """
    # (q_len, k_len) -> (1, 1, q_len, k_len)
    return _bias(_distances(length) >= 0)[None, None]


def unilm_mask(segment_ids):
    """UniLM's seq2seq mask: the source (segment 0) is read bidirectionally,
    the target (segment 1) left to right.

    With c = cumsum(segment_ids), query i sees key j iff c[j] <= c[i]: source
    tokens see the whole source; a target token sees the source and the target
    up to itself (bert4keras' `UniLM_Mask`).

    Args:
        segment_ids: (batch, length) int tensor of 0 (source) / 1 (target).

    Returns:
        (batch, 1, length, length) float32 additive bias.

    Reference:
        https://arxiv.org/abs/1905.03197
    """
    c = ops.cumsum(ops.cast(segment_ids, "int32"), axis=1)
    # (batch, q_len, 1) vs (batch, 1, k_len) -> (batch, 1, q_len, k_len)
    allowed = c[:, None, :] <= c[:, :, None]
    return _bias(allowed)[:, None]


def local_mask(length, window):
    """Local attention: position i sees keys j with |i - j| <= window.

    Args:
        length: sequence length (an int or a scalar tensor).
        window: how many neighbours on each side are visible (>= 0).

    Returns:
        (1, 1, length, length) float32 additive bias.

    Reference:
        https://kexue.fm/archives/6853 (Local Self Attention)
    """
    _check_int_at_least(window, "local_mask: window", 0)
    # (q_len, k_len) -> (1, 1, q_len, k_len)
    return _bias(ops.abs(_distances(length)) <= window)[None, None]


def atrous_mask(length, rate):
    """Atrous (dilated) attention: position i sees keys j with (i - j) % rate == 0.

    Args:
        length: sequence length (an int or a scalar tensor).
        rate: the dilation rate (>= 1; 1 allows everything).

    Returns:
        (1, 1, length, length) float32 additive bias.

    Reference:
        https://kexue.fm/archives/6853 (Atrous Self Attention)
    """
    _check_int_at_least(rate, "atrous_mask: rate", 1)
    # (q_len, k_len) -> (1, 1, q_len, k_len)
    return _bias(ops.abs(_distances(length)) % rate == 0)[None, None]


def sparse_mask(length, rate, window=None):
    """Sparse attention: the union of `atrous_mask(rate)` and `local_mask(window)`.

    Position i sees keys at a distance that is a multiple of `rate` or at most
    `window` (default rate - 1, the Sparse Transformer's pattern as described
    on kexue.fm). Add `lm_mask` for the causal version.

    Args:
        length: sequence length (an int or a scalar tensor).
        rate: the dilation rate (>= 1).
        window: local neighbours on each side (default rate - 1).

    Returns:
        (1, 1, length, length) float32 additive bias.

    Reference:
        https://kexue.fm/archives/6853, https://arxiv.org/abs/1904.10509
    """
    _check_int_at_least(rate, "sparse_mask: rate", 1)
    window = rate - 1 if window is None else window
    return ops.maximum(atrous_mask(length, rate), local_mask(length, window))


def check_application(application):
    """Normalises `application` ("encoder" / "lm" / "unilm" or a callable).

    Raises:
        ValueError: for anything else, listing the allowed values.
    """
    if callable(application):
        return application
    if isinstance(application, str) and application.lower() in APPLICATIONS:
        return application.lower()
    raise ValueError(
        f"application {application!r} is not available; supported: {list(APPLICATIONS)} "
        "or a callable fn(inputs) -> additive attention bias"
    )


@keras.saving.register_keras_serializable(package="kerasformers")
class AttentionBias(keras.layers.Layer):
    """Computes an application's attention bias from the model inputs.

    Called on the list of model inputs (token ids first, segment ids second if
    any); returns a float32 bias broadcasting to (batch, heads, q_len, k_len).
    The serialisable stand-in for bert4keras' `Lambda` mask layers
    ("Attention-LM-Mask", "Attention-UniLM-Mask").

    Args:
        application: "lm", "unilm", or a callable `fn(inputs) -> bias`
            (registered as Keras-serialisable if the model is to be saved).
        window: with "lm", a sliding window: query i sees keys j with
            i - window < j <= i (Mistral's `sliding_window`, HF's rule).

    Example:
        >>> bias = AttentionBias("lm")([token_ids])        # (1, 1, len, len)
    """

    def __init__(self, application, window=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(application, dict):
            application = keras.saving.deserialize_keras_object(application)
        application = check_application(application)
        if application == "encoder":
            raise ValueError(f"{self.name}: the 'encoder' application has no attention bias")
        if window is not None:
            if application != "lm":
                raise ValueError(f"{self.name}: window= is for application='lm' only")
            _check_int_at_least(window, f"{self.name}: window", 1)
        self.application = application
        self.window = window

    def call(self, inputs):
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if self.application == "lm":
            if self.window is None:
                return lm_mask(ops.shape(inputs[0])[1])
            distances = _distances(ops.shape(inputs[0])[1])
            return _bias(ops.logical_and(distances >= 0, distances < self.window))[None, None]
        if self.application == "unilm":
            if len(inputs) < 2:
                raise ValueError(f"{self.name}: the UniLM mask needs [token_ids, segment_ids]")
            return unilm_mask(inputs[1])
        return ops.cast(self.application(inputs), "float32")

    @property
    def decodes_causally(self):
        """Whether cached generation can run under this mask (lm / unilm)."""
        return self.application in ("lm", "unilm")

    @property
    def decode_segment(self):
        """Segment id of generated tokens: the target (1) under UniLM, else None
        (they continue the prompt's last segment)."""
        return 1 if self.application == "unilm" else None

    def decode_call(self, decoding, inputs):
        """The same rule over the cache slots, left padding (`decoding.valid`) hidden.

        Query slot i sees key slot j iff order[j] <= order[i] and j is written:
        order is the slot for "lm" and the running cumsum of the segment ids for
        "unilm" (kept in this layer's cache across passes).
        """
        if not self.decodes_causally:
            raise ValueError(
                f"generate: {self.name} applies a custom attention mask, which cached "
                "generation cannot extend token by token; build the model with "
                "application='lm' or 'unilm'"
            )
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        batch = ops.shape(inputs[0])[0]
        queries = decoding.query_slots  # (n,)
        keys = decoding.key_slots  # (length,)
        if self.application == "lm":
            # (1, n, length)
            allowed = keys[None, :] <= queries[:, None]
            if self.window is not None:
                allowed = ops.logical_and(allowed, keys[None, :] > queries[:, None] - self.window)
            allowed = allowed[None]
        else:
            order = decoding.cache()
            if order is None:
                order = ops.zeros((batch, decoding.length), "int32")
            # The order of the slot before this pass's tokens (0 at the start).
            before = ops.take(order, ops.maximum(decoding.index - 1, 0), axis=1)
            before = before * ops.cast(decoding.index > 0, "int32")
            # (batch, n) cumsum of the segments, continued from the cache
            new = before[:, None] + ops.cumsum(ops.cast(inputs[1], "int32"), axis=1)
            order = update_cache(order, decoding.index, new)
            decoding.store(order)
            written = keys < decoding.index + decoding.num_tokens
            # (batch, n, length)
            allowed = ops.logical_and(order[:, None, :] <= new[:, :, None], written[None, None])
        allowed = ops.logical_and(allowed, decoding.valid[:, None, :])
        # (batch, 1, n, length)
        return _bias(allowed)[:, None]

    def get_config(self):
        config = super().get_config()
        application = self.application
        if callable(application):
            name = keras.saving.get_registered_name(application)
            if keras.saving.get_registered_object(name) is not application:
                raise ValueError(
                    f"{self.name}: the application callable {application!r} is not "
                    "registered, so the model cannot be saved; decorate it with "
                    "@keras.saving.register_keras_serializable()"
                )
            application = keras.saving.serialize_keras_object(application)
        config["application"] = application
        config["window"] = self.window
        return config


def extend_with_language_model(BaseModel):
    """bert4keras' factory: a builder subclass with the causal LM mask and MLM head.

    Prefer `build_transformer_model(..., application="lm")`.
    """

    class LanguageModel(BaseModel):
        def __init__(self, *args, **kwargs):
            kwargs["application"] = "lm"
            if adds_mlm_head(BaseModel):
                kwargs["with_mlm"] = kwargs.get("with_mlm") or True
            super().__init__(*args, **kwargs)

    LanguageModel.__name__ = f"LanguageModel{BaseModel.__name__}"
    return LanguageModel


def extend_with_unified_language_model(BaseModel):
    """bert4keras' factory: a builder subclass with the UniLM mask and MLM head.

    Prefer `build_transformer_model(..., application="unilm")`.
    """

    class UnifiedLanguageModel(BaseModel):
        def __init__(self, *args, **kwargs):
            kwargs["application"] = "unilm"
            if adds_mlm_head(BaseModel):
                kwargs["with_mlm"] = kwargs.get("with_mlm") or True
            super().__init__(*args, **kwargs)

    UnifiedLanguageModel.__name__ = f"UnifiedLanguageModel{BaseModel.__name__}"
    return UnifiedLanguageModel


def adds_mlm_head(cls):
    """Whether "lm" / "unilm" turn on the builder's MLM head (bert4keras: with_mlm
    defaults to True there); GPT-style builders always end in their LM head."""
    if getattr(cls, "always_lm_head", False):
        return False
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is not None and "with_mlm" in inspect.signature(init).parameters:
            return True
    return False
