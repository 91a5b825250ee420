"""Multi-head attention with extra mask/bias inputs and a position-bias hook."""

import keras
from keras import ops

from kerasformers.backend import (
    apply_rotary_position_embeddings,
    dense,
    dot_product_attention,
    infinity,
    recompute_grad,
    update_cache,
)
from kerasformers.layers.normalization import LayerNormalization
from kerasformers.layers.rope import rotate_half


@keras.saving.register_keras_serializable(package="kerasformers")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head (self- or cross-) attention, bert4keras' `MultiHeadAttention`.

    Called as `layer([q, k, v], attention_mask=None, attention_bias=None)`:
    `attention_mask` is a (batch, k_len) 0/1 mask of real key tokens;
    `attention_bias` is added to the attention logits and broadcasts to
    (batch, heads, q_len, k_len) — LM / UniLM masks, relative position biases and
    RealFormer's residual scores come in through it. Families with another
    position scheme override `apply_position_encoding` (rotate q/k),
    `position_scores` (add to logits) or `position_values` (add to the output).

    Cached generation (`kerasformers.generation`) calls `decode_call`
    instead of `call`: the layer keeps its own key/value cache there.

    Args:
        heads: number of heads.
        head_size: width of each head's values (output of a head).
        out_dim: output width (default heads * head_size).
        key_size: width of each head's queries/keys (default head_size).
        use_bias: biases in the four projections.
        attention_scale: divide logits by sqrt(key_size).
        attention_dropout: dropout rate on the attention probabilities.
        return_attention_scores: also return the (batch, heads, q, k) probabilities.
        return_attention_logits: also return the (batch, heads, q, k) logits before
            the softmax, every bias included (RealFormer's residual scores).
        kernel_initializer: initializer of the projections.
        key_value_heads: heads of the keys and values (grouped-query attention,
            https://arxiv.org/abs/2305.13245): each serves heads / key_value_heads
            query heads; default heads (plain multi-head attention). Caches keep
            this many heads.
        cross_attention: set by the builder on layers whose keys/values come
            from another sequence (T5's decoder); cached generation projects
            their keys/values once instead of caching them token by token.

    Reference:
        https://arxiv.org/abs/1706.03762
    """

    def __init__(
        self,
        heads,
        head_size,
        out_dim=None,
        key_size=None,
        use_bias=True,
        attention_scale=True,
        attention_dropout=None,
        return_attention_scores=False,
        return_attention_logits=False,
        kernel_initializer="glorot_uniform",
        key_value_heads=None,
        cross_attention=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.heads = heads
        self.head_size = head_size
        self.out_dim = out_dim or heads * head_size
        self.key_size = key_size or head_size
        self.use_bias = use_bias
        self.attention_scale = attention_scale
        self.attention_dropout = attention_dropout
        self.return_attention_scores = return_attention_scores
        self.return_attention_logits = return_attention_logits
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.key_value_heads = key_value_heads or heads
        if heads % self.key_value_heads:
            raise ValueError(
                f"{self.name}: heads ({heads}) must be a multiple of key_value_heads "
                f"({self.key_value_heads})"
            )
        self.cross_attention = cross_attention

    def projection_bias(self, name):
        """Hook: whether projection `name` ("q_dense", ..., "o_dense") has a bias."""
        return self.use_bias

    def _dense(self, units, name):
        return keras.layers.Dense(
            units,
            use_bias=self.projection_bias(name),
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape):
        q_shape, k_shape, v_shape = input_shape[:3]
        # Creation order fixes the order of `self.weights`, which checkpoint
        # mappings rely on: q, k, v, o (kernel then bias).
        self.q_dense = self._dense(self.key_size * self.heads, "q_dense")
        self.q_dense.build(q_shape)
        self.k_dense = self._dense(self.key_size * self.key_value_heads, "k_dense")
        self.k_dense.build(k_shape)
        self.v_dense = self._dense(self.head_size * self.key_value_heads, "v_dense")
        self.v_dense.build(v_shape)
        self.o_dense = self._dense(self.out_dim, "o_dense")
        self.o_dense.build(tuple(v_shape[:-1]) + (self.head_size * self.heads,))
        if self.attention_dropout:
            self.dropout = keras.layers.Dropout(self.attention_dropout, dtype=self.dtype_policy)

    def apply_position_encoding(self, qw, kw, position_inputs=None):
        """Hook: transform per-head queries/keys (e.g. rotary). Identity here."""
        return qw, kw

    def position_scores(self, qw, kw, position_inputs=None):
        """Hook: extra logits (batch|1, heads|1, q_len, k_len) from positions, or None."""
        return None

    # Subclasses overriding `position_values` set this, which routes the call
    # through the explicit (non-fused) attention that exposes the probabilities.
    has_position_values = False

    def position_values(self, probs, position_inputs=None):
        """Hook: extra output (batch, q_len, heads, head_size) from the probabilities."""
        return None

    @recompute_grad
    def call(
        self,
        inputs,
        attention_mask=None,
        attention_bias=None,
        position_inputs=None,
        training=None,
    ):
        q, k, v = inputs[:3]
        qw = self._project(self.q_dense, q, self.heads, self.key_size)
        kw, vw = self.project_key_value(k, v)
        qw, kw = self.apply_position_encoding(qw, kw, position_inputs)
        return self._attend(qw, kw, vw, attention_mask, attention_bias, position_inputs, training)

    def decode_call(
        self,
        decoding,
        inputs,
        attention_mask=None,
        attention_bias=None,
        position_inputs=None,
        training=None,
    ):
        """The cached-generation hook (see `kerasformers.generation.cached`).

        Self-attention keeps a (batch, length, heads, size) key and value cache
        (and the key padding mask, when the model passes one), allocated on the
        first pass and written at `decoding.index` on every pass; the queries
        attend to the whole cache (the mask layer's bias hides unwritten slots).
        Cross-attention (`cross_attention=True`) projects its keys/values once,
        on the first pass, and keeps them for the rest of the generation.
        """
        q, k, v = inputs[:3]
        qw = self._project(self.q_dense, q, self.heads, self.key_size)
        cache = decoding.cache()
        if self.cross_attention:
            if cache is None:
                cache = self.project_key_value(k, v)
                decoding.store(cache, static=True)
            kw, vw = cache
        else:
            kw, vw = self.project_key_value(k, v)
            qw, kw = self.apply_position_encoding(qw, kw, position_inputs)
            if cache is None:
                batch, length, heads = ops.shape(q)[0], decoding.length, self.key_value_heads
                cache = (
                    ops.zeros((batch, length, heads, self.key_size), self.compute_dtype),
                    ops.zeros((batch, length, heads, self.head_size), self.compute_dtype),
                )
                if attention_mask is not None:
                    cache += (ops.ones((batch, length), "bool"),)
            # (batch, length, heads, size), the new tokens written at decoding.index
            cache = tuple(
                update_cache(slot, decoding.index, new)
                for slot, new in zip(cache, (kw, vw, attention_mask), strict=False)
            )
            decoding.store(cache)
            kw, vw = cache[:2]
            if attention_mask is not None:
                attention_mask = cache[2]
        return self._attend(qw, kw, vw, attention_mask, attention_bias, position_inputs, training)

    def _project(self, dense_layer, x, heads, size):
        """(batch, len, dim) -> per-head (batch, len, heads, size)."""
        # Sub-layers run through `dense` (no __call__ overhead, fused on torch).
        return ops.reshape(dense(dense_layer, x), (ops.shape(x)[0], -1, heads, size))

    def project_key_value(self, k, v):
        """Per-head keys and values (batch, len, key_value_heads, size) of `k` / `v`."""
        return (
            self._project(self.k_dense, k, self.key_value_heads, self.key_size),
            self._project(self.v_dense, v, self.key_value_heads, self.head_size),
        )

    def _attend(self, qw, kw, vw, attention_mask, attention_bias, position_inputs, training):
        """Attention of per-head queries over per-head keys/values, then the output
        projection (and the extra outputs the layer was asked for)."""
        batch = ops.shape(qw)[0]
        if self.key_value_heads != self.heads:
            # Grouped queries: each key/value head serves heads / key_value_heads
            # consecutive query heads (repeated after the cache, which stays small).
            groups = self.heads // self.key_value_heads
            kw, vw = ops.repeat(kw, groups, axis=2), ops.repeat(vw, groups, axis=2)
        bias = self._combined_bias(qw, kw, attention_mask, attention_bias, position_inputs)
        needs_probs = (
            self.return_attention_scores
            or self.return_attention_logits
            or self.has_position_values
            or (self.attention_dropout and training)
        )
        if needs_probs or self.key_size != self.head_size:
            out, probs, logits = self._attention_explicit(
                qw, kw, vw, bias, position_inputs, training
            )
        else:
            # Fused kernel (XLA / torch SDPA); scale is given explicitly so
            # attention_scale=False means no scaling at all.
            scale = self.key_size**-0.5 if self.attention_scale else 1.0
            out = dot_product_attention(qw, kw, vw, bias=bias, scale=scale)
            probs = None
        # (batch, q_len, heads, head_size) -> (batch, q_len, heads * head_size)
        out = ops.reshape(out, (batch, -1, self.heads * self.head_size))
        out = dense(self.o_dense, out)
        extras = []
        if self.return_attention_scores:
            extras.append(probs)
        if self.return_attention_logits:
            extras.append(logits)
        return (out, *extras) if extras else out

    def _combined_bias(self, qw, kw, attention_mask, attention_bias, position_inputs):
        """Sums every additive term into one (batch|1, heads|1, q_len, k_len) bias."""
        # Summed in float32 and clipped to what the compute dtype can hold, so a
        # float16 policy gets a large finite negative, never -inf (NaN rows).
        bias = None
        if attention_mask is not None:
            mask = ops.cast(attention_mask, "float32")
            # (batch, k_len) -> (batch, 1, 1, k_len)
            bias = (mask[:, None, None, :] - 1.0) * infinity()
        for extra in (attention_bias, self.position_scores(qw, kw, position_inputs)):
            if extra is None:
                continue
            extra = ops.cast(extra, "float32")
            while len(extra.shape) < 4:
                extra = ops.expand_dims(extra, 0)
            bias = extra if bias is None else bias + extra
        if bias is not None:
            floor = -6e4 if keras.backend.standardize_dtype(qw.dtype) == "float16" else -infinity()
            bias = ops.cast(ops.maximum(bias, floor), qw.dtype)
        return bias

    def _attention_explicit(self, qw, kw, vw, bias, position_inputs, training):
        # (batch, heads, q_len, k_len)
        logits = ops.einsum("bqhd,bkhd->bhqk", qw, kw)
        if self.attention_scale:
            logits = logits / ops.cast(self.key_size**0.5, logits.dtype)
        if bias is not None:
            logits = logits + bias
        probs = ops.softmax(ops.cast(logits, "float32"), axis=-1)
        probs = ops.cast(probs, qw.dtype)
        dropped = self.dropout(probs, training=training) if self.attention_dropout else probs
        # (batch, q_len, heads, head_size)
        out = ops.einsum("bhqk,bkhd->bqhd", dropped, vw)
        extra = self.position_values(dropped, position_inputs)
        if extra is not None:
            out = out + extra
        return out, probs, logits

    def compute_output_shape(self, input_shape):
        out_shape = tuple(input_shape[0][:-1]) + (self.out_dim,)
        scores_shape = (input_shape[0][0], self.heads, input_shape[0][1], input_shape[1][1])
        extras = [scores_shape] * (self.return_attention_scores + self.return_attention_logits)
        return (out_shape, *extras) if extras else out_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "heads": self.heads,
                "head_size": self.head_size,
                "out_dim": self.out_dim,
                "key_size": self.key_size,
                "use_bias": self.use_bias,
                "attention_scale": self.attention_scale,
                "attention_dropout": self.attention_dropout,
                "return_attention_scores": self.return_attention_scores,
                "return_attention_logits": self.return_attention_logits,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "key_value_heads": self.key_value_heads,
                "cross_attention": self.cross_attention,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="kerasformers")
class RotaryAttention(MultiHeadAttention):
    """Attention with rotary position embeddings on queries and keys (RoFormer).

    Called with `position_inputs`: the interleaved sin/cos table (1|batch, seq_len,
    key_size) of `SinusoidalPositionEmbedding(key_size, merge_mode="zero")`.

    Reference:
        https://arxiv.org/abs/2104.09864 (https://kexue.fm/archives/8265)
    """

    def apply_position_encoding(self, qw, kw, position_inputs=None):
        if position_inputs is None:
            raise ValueError(f"{self.name}: rotary attention needs `position_inputs`")
        # (1|batch, len, size) -> (1|batch, len, 1, size): one table for all heads
        table = ops.expand_dims(position_inputs, 2)
        return apply_rotary_position_embeddings(table, qw, kw)


@keras.saving.register_keras_serializable(package="kerasformers")
class TypicalRelativeAttention(MultiHeadAttention):
    """Attention with relative position embeddings on keys and values (NEZHA).

    logits_ij += q_i . r_ij (scaled like the rest), out_i += sum_j p_ij r_ij, where
    `position_inputs` is the (q_len, k_len, key_size) table r of
    `RelativePositionEmbedding`, shared by all heads.

    Reference:
        https://arxiv.org/abs/1803.02155 (Shaw et al.); NEZHA https://arxiv.org/abs/1909.00204
    """

    has_position_values = True

    def _table(self, position_inputs):
        if position_inputs is None:
            raise ValueError(f"{self.name}: relative attention needs `position_inputs`")
        if self.key_size != self.head_size:
            raise ValueError(
                f"{self.name}: relative position tables need key_size == head_size, got "
                f"{self.key_size} and {self.head_size}"
            )
        return ops.cast(position_inputs, self.compute_dtype)

    def position_scores(self, qw, kw, position_inputs=None):
        table = self._table(position_inputs)
        # (batch, q_len, heads, size) x (q_len, k_len, size) -> (batch, heads, q_len, k_len)
        scores = ops.einsum("bqhd,qkd->bhqk", qw, table)
        if self.attention_scale:
            scores = scores / ops.cast(self.key_size**0.5, scores.dtype)
        return scores

    def position_values(self, probs, position_inputs=None):
        table = self._table(position_inputs)
        # (batch, heads, q_len, k_len) x (q_len, k_len, size) -> (batch, q_len, heads, size)
        return ops.einsum("bhqk,qkd->bqhd", probs, table)


@keras.saving.register_keras_serializable(package="kerasformers")
class LlamaAttention(MultiHeadAttention):
    """Grouped-query attention with LLaMA-layout rotary positions.

    Called with `position_inputs`: the (1|batch, seq_len, 2 * key_size) cos / sin
    table of `RotaryEmbedding`; queries and keys are rotated half against half
    (`rotate_half`), after the optional per-head RMS norms (Qwen3's q_norm /
    k_norm), before the keys enter the cache.

    Args:
        output_bias: a bias in the output projection (default: `use_bias`);
            Qwen2 has q/k/v biases but none on the output.
        qk_norm: RMS-normalise each head's queries and keys ("q_norm", "k_norm"
            over key_size, with a gain), Qwen3.
        qk_norm_epsilon: their epsilon.
        **kwargs: the `MultiHeadAttention` arguments (key_value_heads=, ...).

    Reference:
        LLaMA: https://arxiv.org/abs/2302.13971; GQA: https://arxiv.org/abs/2305.13245
    """

    def __init__(self, *args, output_bias=None, qk_norm=False, qk_norm_epsilon=1e-6, **kwargs):
        super().__init__(*args, **kwargs)
        self.output_bias = self.use_bias if output_bias is None else output_bias
        self.qk_norm = qk_norm
        self.qk_norm_epsilon = qk_norm_epsilon

    def projection_bias(self, name):
        return self.output_bias if name == "o_dense" else self.use_bias

    def build(self, input_shape):
        super().build(input_shape)
        if self.qk_norm:
            for name in ("q_norm", "k_norm"):
                norm = LayerNormalization(
                    center=False,
                    zero_mean=False,
                    epsilon=self.qk_norm_epsilon,
                    dtype=self.dtype_policy,
                    name=name,
                )
                norm.build((None, None, None, self.key_size))
                setattr(self, name, norm)

    def apply_position_encoding(self, qw, kw, position_inputs=None):
        if position_inputs is None:
            raise ValueError(f"{self.name}: rotary attention needs `position_inputs`")
        if self.qk_norm:
            qw, kw = self.q_norm(qw), self.k_norm(kw)
        return rotate_half(position_inputs, qw, kw)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "output_bias": self.output_bias,
                "qk_norm": self.qk_norm,
                "qk_norm_epsilon": self.qk_norm_epsilon,
            }
        )
        return config
