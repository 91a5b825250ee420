"""The cached forward pass: a model's own graph, run over a few new tokens.

Generation does not re-run a builder's template methods: it walks the
keras.Model's functional graph (so a model loaded from `.keras` decodes too)
on real tensors, node by node, with a `Decoding` object describing the pass.
Every layer is called as in the model, except that a layer which acts
differently while decoding says so through one hook,

    layer.decode_call(decoding, *args, **kwargs)

called instead of `layer.call`. The hooks of this library:

- attention layers keep their own key/value cache (`decoding.cache()` /
  `decoding.store()`), sized by the layer (its heads, key and value sizes);
  cross-attention projects its keys/values once;
- the lm / unilm mask layer gives the mask over the cache slots, with the
  prompts' left padding hidden;
- position layers take the new tokens' positions from the pass;
- a tied LM head computes the last token's logits only, and the head's final
  softmax passes logits through.

Dropout needs no hook (the pass runs in inference mode). Nodes that depend
only on "static" inputs (T5's encoder input) are computed in the first pass
and their results reused by every later one, so T5's encoder runs once.
"""

import threading
import weakref

import keras
from keras import ops

from kerasformers.backend import autocast

# Model input names (without the builder's prefix) -> what generation feeds.
INPUT_ROLES = {
    "Input-Token": "tokens",
    "Decoder-Input-Token": "tokens",
    "Input-Segment": "segments",
    "Input-Position": "positions",
    "Encoder-Input-Token": "source",
}
STATIC_ROLES = ("source",)


class Decoding:
    """What one cached pass over `num_tokens` new tokens needs to know.

    Slots are the columns of the caches: prompts are left-padded to a common
    length, so row b's real tokens start at slot `pad_lengths[b]`.

    Attributes:
        index: first slot of this pass's tokens (int or scalar tensor).
        num_tokens: number of new tokens (static int).
        length: number of slots of every cache (static int).
        query_slots: (num_tokens,) int32 slots of the new tokens.
        key_slots: (length,) int32 every slot.
        positions: (batch, num_tokens) int32 absolute positions, counted from
            each row's first real token.
        valid: (batch, length) bool, False on the left padding.
    """

    def __init__(self, index, num_tokens, length, pad_lengths, caches, statics):
        self.index = index
        self.num_tokens = num_tokens
        self.length = length
        self.query_slots = ops.arange(num_tokens, dtype="int32") + index
        self.key_slots = ops.arange(length, dtype="int32")
        self.positions = ops.maximum(self.query_slots[None, :] - pad_lengths[:, None], 0)
        self.valid = self.key_slots[None, :] >= pad_lengths[:, None]
        self._caches = caches
        self._statics = statics
        self.caches = {}  # this pass's updated caches
        self.statics = {}  # first pass only: values kept for the whole generation
        self._key = None

    def cache(self):
        """The calling layer's cache from the previous pass (None on the first)."""
        if self._key in self._statics:
            return self._statics[self._key]
        return self._caches.get(self._key)

    def store(self, value, static=False):
        """Keeps the calling layer's cache for the next pass; `static` values are
        written once (first pass) and never reordered between beams."""
        if static:
            if self._key not in self._statics:
                self.statics[self._key] = value
        else:
            self.caches[self._key] = value


class GraphPlan:
    """The nodes of a functional model in execution order, and their roles."""

    def __init__(self, model):
        if not hasattr(model, "_nodes_by_depth") or not model.inputs:
            raise ValueError(
                "generate needs a functional keras.Model (what build_transformer_model "
                f"returns, or one loaded from .keras); got {type(model).__name__}"
            )
        self.model = model
        self.roles = []
        for tensor in model.inputs:
            name = getattr(tensor, "name", "") or ""
            role = _role(name)
            if role is None:
                raise ValueError(
                    f"generate: the model input {name!r} is not one generation can feed "
                    f"(known: {sorted(INPUT_ROLES)}, after the builder's prefix)"
                )
            self.roles.append(role)
        if "tokens" not in self.roles:
            raise ValueError(
                f"generate: the model has no token input to decode ({self.roles}); a T5 "
                "decoder alone needs its context: give the full T5 model"
            )
        self.nodes = []
        for depth in sorted(model._nodes_by_depth, reverse=True):
            for node in model._nodes_by_depth[depth]:
                if node.operation is not None and not node.is_input:
                    self.nodes.append(node)
        # Tensors that depend on static inputs only, and those of them later passes read.
        static = {
            id(t) for t, role in zip(model.inputs, self.roles, strict=True) if role in STATIC_ROLES
        }
        self.static_nodes = set()
        for index, node in enumerate(self.nodes):
            if node.input_tensors and all(id(t) in static for t in node.input_tensors):
                self.static_nodes.add(index)
                static.update(id(t) for t in node.outputs)
        self.frontier = sorted(
            {
                id(t)
                for index, node in enumerate(self.nodes)
                if index not in self.static_nodes
                for t in node.input_tensors
                if id(t) in static
            }
        )
        # Per node: builders of its call arguments from the computed values, and
        # its output ids (the walk runs every step: no tree traversal per call).
        self.steps = [
            (
                _filler(node.arguments.args),
                _filler(node.arguments.kwargs),
                [id(t) for t in node.outputs],
            )
            for node in self.nodes
        ]
        self.keys = [f"node{index}" for index in range(len(self.nodes))]
        operations = [node.operation for node in self.nodes]
        masks = [op for op in operations if hasattr(op, "decodes_causally")]
        self.causal = bool(masks) and all(op.decodes_causally for op in masks)
        segments = {op.decode_segment for op in masks if op.decodes_causally}
        self.decode_segment = segments.pop() if len(segments) == 1 else None
        self.vocab_size = _last_dim(model.outputs[-1])

    def run(self, feeds, decoding, frontier=None):
        """One pass; returns (batch, vocab) last-token logits and the frontier values.

        Args:
            feeds: {role: tensor} of this pass's inputs.
            decoding: the `Decoding` of the pass (its caches are updated).
            frontier: static values of the first pass ({str(id): tensor}); None
                in the first pass, which computes them.
        """
        values = {}
        for tensor, role in zip(self.model.inputs, self.roles, strict=True):
            if frontier is None or role not in STATIC_ROLES:
                values[id(tensor)] = feeds[role]
        if frontier is not None:
            values.update((int(k), v) for k, v in frontier.items())
        for index, (args, kwargs, outputs_ids) in enumerate(self.steps):
            operation = self.nodes[index].operation
            if index in self.static_nodes:
                if frontier is not None:
                    continue
                # A static node (T5's encoder) runs as in the model, once.
                outputs = operation(*args(values), **kwargs(values))
            else:
                decoding._key = self.keys[index]
                outputs = _call(operation, decoding, args(values), kwargs(values))
            if len(outputs_ids) == 1:
                values[outputs_ids[0]] = outputs
            else:
                for key, value in zip(outputs_ids, keras.tree.flatten(outputs), strict=True):
                    values[key] = value
        if frontier is None:
            frontier = {str(k): values[k] for k in self.frontier}
        # bert4keras' output rule puts the LM head last; (batch, n, vocab) -> last token
        logits = values[id(self.model.outputs[-1])][:, -1]
        return ops.cast(logits, "float32"), frontier


def _filler(structure):
    """A function of {tensor id: value} rebuilding `structure` (nested lists,
    tuples and dicts of KerasTensors and constants) with the values."""
    if isinstance(structure, keras.KerasTensor):
        key = id(structure)
        return lambda values: values[key]
    if isinstance(structure, (list, tuple)):
        parts = [_filler(item) for item in structure]
        kind = type(structure)
        return lambda values: kind(part(values) for part in parts)
    if isinstance(structure, dict):
        parts = {name: _filler(item) for name, item in structure.items()}
        return lambda values: {name: part(values) for name, part in parts.items()}
    return lambda values: structure


def _role(name):
    """The role of a model input, by its stable name (the longest match wins, so
    "P-Decoder-Input-Token" is a decoder's tokens whatever the prefix "P-")."""
    for known in sorted(INPUT_ROLES, key=len, reverse=True):
        if name.endswith(known):
            return INPUT_ROLES[known]
    return None


def _last_dim(tensor):
    shape = getattr(tensor, "shape", None)
    return shape[-1] if shape else None


def _call(operation, decoding, args, kwargs):
    """Runs one node: the operation's decoding hook if it has one, else its call."""
    # `call` directly skips Keras' per-call bookkeeping, which costs more than the
    # arithmetic of one token; a mixed-precision layer needs __call__'s autocast.
    policy = getattr(operation, "dtype_policy", None)
    mixed = policy is not None and policy.compute_dtype != policy.variable_dtype
    hook = getattr(operation, "decode_call", None)
    if hook is None:
        return operation(*args, **kwargs) if mixed else operation.call(*args, **kwargs)
    if mixed:
        with autocast(policy.compute_dtype):
            return hook(decoding, *args, **kwargs)
    return hook(decoding, *args, **kwargs)


_PLANS = weakref.WeakKeyDictionary()
_PLANS_LOCK = threading.Lock()


def graph_plan(model):
    """The (memoised) `GraphPlan` of `model`."""
    with _PLANS_LOCK:
        plan = _PLANS.get(model)
        if plan is None:
            plan = _PLANS[model] = GraphPlan(model)
        return plan
