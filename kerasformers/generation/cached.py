"""Cached forward passes of a builder's model, for `kerasformers.generation`.

A builder assembles its keras.Model by calling its template methods
(`apply_embeddings`, `apply_main_layers`, `apply_final_layers`) on symbolic
inputs, every layer going through `Transformer.apply`. Generation runs the
same template methods again on real tensors with a `DecodeState` set: `apply`
then hands each call to `DecodeState.call`, which

- gives every self-attention layer its key/value cache (written in place at
  the new tokens' slots) and every cross-attention layer its keys/values
  projected once;
- replaces the application's mask ("lm" / "unilm") by the same rule over the
  cache slots, with the prompts' left padding masked out;
- gives position layers the new tokens' positions: absolute ones counted from
  each row's first real token, relative ones (rotary, NEZHA, T5) in slots,
  which is the same thing for them;
- drops Dropout layers and the final softmax (generation works on logits);
- calls each layer's `call` directly: no Keras `__call__` bookkeeping per
  layer per token (unless the layer autocasts under a mixed dtype policy).

So a family needs no generation code of its own: if its template methods run,
it decodes with a cache.
"""

import keras
from keras import ops

from kerasformers.backend import infinity
from kerasformers.layers import (
    MultiHeadAttention,
    PositionEmbedding,
    RelativePositionEmbedding,
    SinusoidalPositionEmbedding,
)
from kerasformers.models.masks import AttentionBias


class DecodeState:
    """The cache and positions of one cached forward pass over `length` slots.

    Slots are the columns of the cache: prompts are left-padded to a common
    length, so row b's real tokens start at slot `pad_lengths[b]`.

    Args:
        caches: {cache key: (keys, values)}, each (batch, length, heads,
            size), one per self-attention call ("<layer name>/<k>" for the
            k-th call of the layer in a pass: shared layers run several
            times); updated by the pass.
        static_caches: {cache key: (keys, values)} of cross-attention, final
            (projected once per generation with `project_key_value`).
        index: first slot of this pass's tokens (int or scalar tensor).
        num_tokens: number of tokens in this pass (static int).
        order: (batch, length) int32; query slot i may see key slot j iff
            order[j] <= order[i] (arange for "lm", the UniLM segment cumsum
            extended past the prompt for "unilm").
        valid: (batch, length) bool, False on padding slots.
        pad_lengths: (batch,) int32 left-padding of each row.
        skip_layers: names of layers to treat as the identity (final softmax).
    """

    def __init__(
        self,
        caches,
        index,
        num_tokens,
        order,
        valid,
        pad_lengths,
        static_caches=None,
        skip_layers=(),
    ):
        self.caches = caches
        self.static_caches = static_caches if static_caches is not None else {}
        self.index = index
        self.num_tokens = num_tokens
        self.valid = valid
        self.pad_lengths = pad_lengths
        self.skip_layers = set(skip_layers)
        self.calls = {}  # layer name -> calls so far in this pass
        self.length = ops.shape(order)[1]
        batch = ops.shape(order)[0]
        # (num_tokens,) slots of this pass's tokens
        self.slots = ops.arange(num_tokens, dtype="int32") + index
        # (batch, num_tokens) order of the queries
        query_order = ops.slice(order, (0, index), (batch, num_tokens))
        # (batch, 1, q, length): order rule and padding, as one additive bias
        allowed = ops.logical_and(order[:, None, :] <= query_order[:, :, None], valid[:, None, :])
        self.bias = ((ops.cast(allowed, "float32") - 1.0) * infinity())[:, None]
        # (batch, q) absolute positions, counted from each row's first real token
        self.position_ids = ops.maximum(self.slots[None, :] - pad_lengths[:, None], 0)

    def call(self, layer, inputs, arguments):
        """Runs `layer` on `inputs` the way a cached pass needs (see module doc)."""
        arguments = dict(arguments or {})
        if isinstance(layer, keras.layers.Dropout) or layer.name in self.skip_layers:
            return inputs
        if isinstance(layer, AttentionBias):
            return self.bias
        if isinstance(layer, MultiHeadAttention):
            return self._attention(layer, inputs, arguments)
        if isinstance(layer, PositionEmbedding) and not layer.custom_position_ids:
            arguments["position_ids"] = self.position_ids
        elif isinstance(layer, SinusoidalPositionEmbedding) and not layer.custom_position_ids:
            arguments["position_ids"] = self.slots[None, :]
        elif isinstance(layer, RelativePositionEmbedding) or getattr(
            layer, "takes_query_key_positions", False
        ):
            arguments["query_positions"] = self.slots
            arguments["key_positions"] = ops.arange(self.length, dtype="int32")
        return _call(layer, inputs, arguments)

    def _attention(self, layer, inputs, arguments):
        count = self.calls.get(layer.name, 0)
        self.calls[layer.name] = count + 1
        name = f"{layer.name}/{count}"
        cross = is_cross_attention(layer.name)
        caches = self.static_caches if cross else self.caches
        if name not in caches:
            raise KeyError(f"no key/value cache for attention layer {name!r}")
        arguments["cache"] = caches[name]
        if not cross:
            arguments["cache_index"] = self.index
        *outputs, cache = _call(layer, inputs, arguments)
        if not cross:
            self.caches[name] = cache
        return outputs[0] if len(outputs) == 1 else tuple(outputs)


def _call(layer, inputs, arguments):
    # `call` directly skips Keras' per-call bookkeeping, which costs more than the
    # arithmetic of one token; a mixed-precision layer needs __call__'s autocast.
    if layer.dtype_policy.compute_dtype != layer.dtype_policy.variable_dtype:
        return layer(inputs, **arguments)
    return layer.call(inputs, **arguments)


def is_cross_attention(name):
    """Cross-attention layers are named "...-MultiHeadCrossAttention" (T5's decoder)."""
    return "CrossAttention" in name


def attention_calls(builder, cross=False):
    """[(cache key, layer)] of every self- (or cross-) attention call of a pass: a
    shared layer called k times has keys "<name>/0" .. "<name>/<k-1>"."""
    return [
        (f"{name}/{count}", layer)
        for name, layer in builder.layers.items()
        if isinstance(layer, MultiHeadAttention) and is_cross_attention(name) == cross
        for count in range(builder.call_counts.get(name, 1))
    ]


def run_cached(builder, inputs, state):
    """One cached forward pass of `builder`'s template methods on real tensors.

    Args:
        builder: a built `Transformer`.
        inputs: the model's input tensors for the new tokens (token ids first).
        state: the `DecodeState` (its caches are updated).

    Returns:
        (batch, vocab) logits of the last token of the pass.
    """
    saved = dict(vars(builder))
    builder.decoding = state
    try:
        builder.attention_bias = state.bias
        builder.position_bias = None
        if hasattr(builder, "attention_scores"):
            builder.attention_scores = None
        x = builder.apply_embeddings(inputs)
        for index in range(builder.num_hidden_layers):
            x = builder.apply_main_layers(x, index)
        # Only the last token's prediction is needed.
        outputs = builder.apply_final_layers(x[:, -1:])
        if isinstance(outputs, (list, tuple)):
            outputs = outputs[-1]  # bert4keras' output rule puts the LM head last
        return outputs[:, -1]
    finally:
        vars(builder).clear()
        vars(builder).update(saved)
