"""The builder every model family subclasses, and the config translation.

A family overrides the template methods `get_inputs`, `apply_embeddings`,
`apply_main_layers`, `apply_final_layers`, `compute_attention_bias`,
`variable_mapping` (Google checkpoint names) and `hf_variable_mapping`
(HF transformers names). Everything that reads or writes weights goes through
`kerasformers.checkpoints`, which knows file formats but no model names.
"""

import json
import os
import re
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from kerasformers import checkpoints
from kerasformers.backend import recompute_enabled
from kerasformers.models.masks import AttentionBias, check_application

# Foreign config keys -> our (bert4keras) argument names. The one place they are
# translated (STYLE.md rule 6); a key already given in our spelling wins.
CONFIG_KEY_ALIASES = {
    "hidden_dropout_prob": "dropout_rate",
    "attention_probs_dropout_prob": "attention_dropout_rate",
    "max_position_embeddings": "max_position",
    "type_vocab_size": "segment_vocab_size",
    "layer_norm_eps": "layer_norm_epsilon",
    # OpenAI GPT / GPT-2 (HF config.json)
    "n_embd": "hidden_size",
    "n_layer": "num_hidden_layers",
    "n_head": "num_attention_heads",
    "n_inner": "intermediate_size",
    "n_positions": "max_position",
    "activation_function": "hidden_act",
    "afn": "hidden_act",
    "resid_pdrop": "dropout_rate",
    "attn_pdrop": "attention_dropout_rate",
    # T5 / mT5 (HF config.json; dropout_rate and layer_norm_epsilon are ours already)
    "d_model": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "d_ff": "intermediate_size",
    "d_kv": "attention_head_size",
}


def translate_config(config):
    """Maps a Google `bert_config.json` / HF `config.json` dict onto builder kwargs."""
    out = dict(config)
    for foreign, ours in CONFIG_KEY_ALIASES.items():
        if foreign in out:
            value = out.pop(foreign)
            out.setdefault(ours, value)
    position_type = out.pop("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ValueError(
            f"position_embedding_type={position_type!r} is not supported by BERT/RoBERTa "
            "here (only 'absolute'); use a family with relative positions (e.g. nezha)"
        )
    if out.get("model_type") == "roberta" and "max_position" in out:
        # HF RoBERTa reserves the first padding_idx + 1 = 2 rows of its table.
        out["max_position"] -= 2
    if out.get("model_type") == "openai-gpt":
        # HF OpenAI GPT: afn "gelu" is the tanh form, and token types are looked
        # up in the token table (CDial-GPT feeds speaker tokens through them).
        if out.get("hidden_act") == "gelu":
            out["hidden_act"] = "gelu_new"
        out.setdefault("shared_segment_embeddings", True)
    return out


class FusedPart(NamedTuple):
    """Mapping hook: the variable is slice `index` of `count` equal slices of one
    checkpoint tensor along `axis` (GPT-2's c_attn holds q, k and v side by side).

    Loading applies the named hook `hook` (if any) to the whole tensor, then
    slices; saving concatenates the parts written under that name in index
    order, then applies `save_<hook>`.

    Example:
        >>> [("h.0.attn.c_attn.weight", FusedPart(0, 3)),  # query kernel
        ...  ("h.0.attn.c_attn.bias", FusedPart(0, 3))]    # query bias
    """

    index: int
    count: int
    axis: int = -1
    hook: str | None = None


class WeightLoadingError(ValueError):
    """A checkpoint does not fit the model (missing, unexpected or mis-shaped tensors)."""


class Transformer:
    """Base builder: assembles a functional keras.Model from template methods.

    Args:
        vocab_size: token vocabulary size.
        hidden_size: model width.
        num_hidden_layers: number of Transformer blocks.
        num_attention_heads: attention heads per block.
        intermediate_size: feed-forward hidden width.
        hidden_act: feed-forward activation (name or callable, "gelu" is exact GELU).
        dropout_rate: dropout on embeddings and residual branches.
        attention_dropout_rate: dropout on attention probabilities.
        embedding_size: embedding width if it differs from hidden_size.
        attention_head_size: width of each head's values (default hidden/heads).
        attention_key_size: width of each head's queries/keys (default head size).
        sequence_length: fixed input length (None: variable).
        keep_tokens: original token ids to keep, in the new order (vocab pruning).
        compound_tokens: new tokens, each the (weighted) average of original ids.
        layer_norm_epsilon: LayerNorm epsilon.
        initializer_range: stddev of the truncated-normal initializer.
        pad_token_id: id whose positions are masked out of attention.
        ignore_invalid_weights: skip missing / mis-shaped tensors when loading
            instead of raising.
        prefix: prepended to every layer name (to hold two models in one graph).
        name: the keras.Model's name.
        recompute: gradient checkpointing of the attention, feed-forward and
            norm layers while training (less memory, one more forward); None
            reads the RECOMPUTE environment variable when the model is built.
        application: the attention mask shared by all layers: "encoder" (none),
            "lm" (causal), "unilm" (seq2seq from segment ids) or a callable
            `fn(inputs) -> additive bias` (see `kerasformers.models.masks`).
    """

    # Checkpoint names that are never weights (buffers, optimizer state): unused
    # ones are ignored without complaint.
    ignored_variable_patterns = (
        r"(^|[./])position_ids$",
        r"(^|/)global_step$",
        r"/adam_[mv]$",
        r"(^|[./])_?(step|iterations)$",
    )
    # HF base-model prefix: "bert.encoder..." and "encoder..." name the same tensor.
    hf_prefix = ""
    # Names (after prefix normalisation) of the encoder body. A checkpoint tensor in
    # these namespaces that the model does not use means the config and checkpoint
    # disagree (e.g. more layers in the file), which is an error.
    body_prefixes = ()

    def __init__(
        self,
        vocab_size,
        hidden_size,
        num_hidden_layers,
        num_attention_heads,
        intermediate_size,
        hidden_act,
        dropout_rate=None,
        attention_dropout_rate=None,
        embedding_size=None,
        attention_head_size=None,
        attention_key_size=None,
        sequence_length=None,
        keep_tokens=None,
        compound_tokens=None,
        layer_norm_epsilon=1e-12,
        initializer_range=0.02,
        pad_token_id=0,
        ignore_invalid_weights=False,
        prefix=None,
        name=None,
        recompute=None,
        application="encoder",
    ):
        if keep_tokens is not None:
            vocab_size = len(keep_tokens)
        if compound_tokens is not None:
            vocab_size += len(compound_tokens)
        if hidden_size % num_attention_heads and attention_head_size is None:
            raise ValueError(
                f"hidden_size {hidden_size} is not a multiple of num_attention_heads "
                f"{num_attention_heads}; pass attention_head_size explicitly"
            )
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.attention_head_size = attention_head_size or hidden_size // num_attention_heads
        self.attention_key_size = attention_key_size or self.attention_head_size
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.dropout_rate = dropout_rate or 0.0
        self.attention_dropout_rate = attention_dropout_rate or 0.0
        self.embedding_size = embedding_size or hidden_size
        self.sequence_length = sequence_length
        self.keep_tokens = keep_tokens
        self.compound_tokens = compound_tokens
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        self.pad_token_id = pad_token_id or 0
        self.ignore_invalid_weights = ignore_invalid_weights
        self.prefix = prefix or ""
        self.name = name
        self.recompute = recompute_enabled() if recompute is None else bool(recompute)
        self.application = check_application(application)
        self.layers = {}
        self.call_counts = {}  # layer name -> calls in the model (shared layers: several)
        self.attention_bias = None
        self.defer_initialization = False
        self.decoding = None  # a DecodeState while generation runs a cached pass
        self.built = False

    # ------------------------------------------------------------------ building
    def build(self, **kwargs):
        """Builds `self.model` from the template methods (once)."""
        if self.built:
            return self.model
        inputs = self.get_inputs()
        self.set_inputs(inputs)
        self.attention_bias = self.compute_attention_bias(inputs)
        outputs = self.apply_embeddings(inputs)
        for index in range(self.num_hidden_layers):
            outputs = self.apply_main_layers(outputs, index)
        outputs = self.apply_final_layers(outputs)
        self.set_outputs(outputs)
        self.model = keras.Model(self.inputs, self.output, name=self.name)
        # generation (and users) get from the model back to its template methods
        self.model._kf_builder = self
        self.built = True
        return self.model

    def apply(self, inputs=None, layer=None, arguments=None, **kwargs):
        """Creates layer `kwargs["name"]` on first use (reusing it after) and calls it.

        Reuse by name is how the MLM head shares "Embedding-Token".
        """
        name = self.prefix + kwargs["name"]
        kwargs["name"] = name
        if self.decoding is not None and inputs is not None:
            return self.decoding.call(self.layers[name], inputs, arguments)
        if inputs is not None:
            # Shared layers (ALBERT) run several times: each call gets its own cache.
            self.call_counts[name] = self.call_counts.get(name, 0) + 1
        if name not in self.layers:
            self.layers[name] = layer(**kwargs)
            if getattr(self.layers[name].call, "supports_recompute", False):
                self.layers[name].recompute = self.recompute
        if inputs is None:
            return self.layers[name]
        return self.layers[name](inputs, **(arguments or {}))

    def set_inputs(self, inputs):
        self.inputs = inputs if isinstance(inputs, list) else [inputs]

    def set_outputs(self, outputs):
        self.outputs = outputs if isinstance(outputs, list) else [outputs]
        self.output = self.outputs[0] if len(self.outputs) == 1 else self.outputs

    @property
    def initializer(self):
        """Initializer of kernels and embeddings (bert4keras': truncated normal).

        While `defer_initialization` is set (the model is about to be filled from a
        checkpoint) it is zeros: random initialisation of a BERT-base costs seconds
        and a transient of several times the largest tensor, all overwritten.
        Whatever the checkpoint does not fill gets the real initializer afterwards.
        """
        if self.defer_initialization:
            return keras.initializers.Zeros()
        return keras.initializers.TruncatedNormal(stddev=self.initializer_range)

    def _initialize_unloaded(self, assigned):
        """Gives kernels/embeddings left out by a checkpoint their real initial values."""
        if not self.defer_initialization:
            return
        self.defer_initialization = False
        for layer in self.layers.values():
            for variable in layer.weights:
                if id(variable) not in assigned and variable.path.endswith(
                    ("kernel", "embeddings")
                ):
                    variable.assign(self.initializer(variable.shape, variable.dtype))

    def get_inputs(self):
        raise NotImplementedError

    def apply_embeddings(self, inputs):
        raise NotImplementedError

    def apply_main_layers(self, inputs, index):
        raise NotImplementedError

    def apply_final_layers(self, inputs):
        raise NotImplementedError

    def compute_attention_bias(self, inputs=None):
        """Additive attention bias shared by all layers: the `application`'s mask.

        None for an encoder; otherwise the output of an `AttentionBias` layer
        ("Attention-LM-Mask", "Attention-UniLM-Mask" or "Attention-Mask" for a
        callable) computed from the model inputs.
        """
        if self.application == "encoder":
            return None
        inputs = inputs if isinstance(inputs, list) else [inputs]
        if self.application == "unilm":
            segment = self.prefix + "Input-Segment"
            if len(inputs) < 2 or getattr(inputs[1], "name", None) != segment:
                raise ValueError(
                    f"application='unilm' needs segment ids (the {segment!r} input) to tell "
                    f"source from target, but {type(self).__name__} has none here "
                    "(segment_vocab_size=0, or a model without segments)"
                )
        names = {"lm": "Attention-LM-Mask", "unilm": "Attention-UniLM-Mask"}
        return self.apply(
            inputs,
            AttentionBias,
            application=self.application,
            name=names.get(self.application, "Attention-Mask"),
        )

    def padding_mask(self, token_ids):
        """(batch, seq) mask of real tokens: positions holding `pad_token_id` are 0.

        None during a cached generation pass, whose bias already masks padding.
        """
        if self.decoding is not None:
            return None
        return ops.not_equal(token_ids, self.pad_token_id)

    # ------------------------------------------------------------------ mappings
    def variable_mapping(self):
        """{layer name: [Google checkpoint names, in layer.weights order]}."""
        return {}

    def hf_variable_mapping(self):
        """{layer name: [HF transformers names, in layer.weights order]}."""
        return {}

    # A mapping entry is a name or (name, hook); hooks are named transforms applied
    # on load (`load_<hook>`) and inverted on save (`save_<hook>`).
    def load_transpose(self, value):
        return value.T

    def save_transpose(self, value):
        return value.T

    def load_embeddings(self, value):
        """Applies keep_tokens / compound_tokens to a vocab-indexed tensor."""
        if self.keep_tokens is not None:
            value = value[np.asarray(self.keep_tokens)]
        if self.compound_tokens is not None:
            extra = []
            for item in self.compound_tokens:
                ids, weights = (item, [1] * len(item)) if isinstance(item, list) else item
                extra.append(np.average(value[np.asarray(ids)], axis=0, weights=weights))
            value = np.concatenate([value, np.stack(extra).astype(value.dtype)], axis=0)
        return value

    def save_embeddings(self, value):
        return value

    @staticmethod
    def _split_entry(entry):
        return (entry, None) if isinstance(entry, str) else tuple(entry)

    def _load_hooked(self, value, hook):
        """Applies an entry's load hook (a name or a FusedPart) to a checkpoint tensor."""
        if isinstance(hook, FusedPart):
            if hook.hook:
                value = getattr(self, f"load_{hook.hook}")(value)
            size = value.shape[hook.axis]
            if size % hook.count:
                raise ValueError(
                    f"axis {hook.axis} has length {size}, which does not split into "
                    f"{hook.count} equal parts"
                )
            return np.split(value, hook.count, axis=hook.axis)[hook.index]
        if hook:
            return getattr(self, f"load_{hook}")(value)
        return value

    def _hf_key(self, name):
        if self.hf_prefix and name.startswith(self.hf_prefix):
            return name[len(self.hf_prefix) :]
        return name

    def _resolve(self, mapping, find):
        """{layer: [(name found in the checkpoint or None, wanted name, hook)]}."""
        return {
            layer: [(find(n), n, hook) for n, hook in map(self._split_entry, entries)]
            for layer, entries in mapping.items()
        }

    def _choose_mapping(self, names):
        """Picks the Google or HF mapping, whichever matches the checkpoint's names."""
        name_set = set(names)
        hf_lookup = {}
        for name in names:
            hf_lookup.setdefault(self._hf_key(name), name)

        google_resolved = self._resolve(
            self.variable_mapping(), lambda n: n if n in name_set else None
        )
        hf_resolved = self._resolve(
            self.hf_variable_mapping(), lambda n: hf_lookup.get(self._hf_key(n))
        )

        def hits(resolved):
            return sum(found is not None for v in resolved.values() for found, _, _ in v)

        if hits(hf_resolved) > hits(google_resolved):
            return "hf", hf_resolved
        return "google", google_resolved

    # ------------------------------------------------------------------ loading
    def load_weights_from_checkpoint(self, checkpoint, mapping=None):
        """Loads weights from a checkpoint file or directory (format auto-detected).

        Args:
            checkpoint: Google TF prefix, *.safetensors, pytorch_model.bin, a Keras
                *.weights.h5, or a directory holding one of them.
            mapping: optional {layer: [names]} overriding the family's mapping.

        Raises:
            WeightLoadingError: naming every missing, unexpected or mis-shaped
                tensor (unless the builder has ignore_invalid_weights=True).
            kerasformers.checkpoints.CheckpointError: unreadable / corrupt file.
        """
        fmt, path = checkpoints.detect_format(checkpoint)
        if fmt == "keras":
            self.model.load_weights(path)
            self.defer_initialization = False
            return
        with checkpoints.open_checkpoint(path) as reader:
            names = reader.names()
            if mapping is not None:
                convention = "custom"
                resolved = self._resolve(mapping, lambda n: n if n in reader else None)
            else:
                convention, resolved = self._choose_mapping(names)
            problems = []
            used, assigned = set(), set()
            fused_cache = (None, None)
            for layer_name, entries in resolved.items():
                layer_name = self.prefix + layer_name
                if layer_name not in self.layers:
                    continue
                layer = self.layers[layer_name]
                weights = layer.weights
                if len(weights) != len(entries):
                    raise WeightLoadingError(
                        f"layer {layer_name!r} has {len(weights)} weights but the "
                        f"{convention} mapping lists {len(entries)}: {[e[1] for e in entries]}"
                    )
                for variable, (found, wanted, hook) in zip(weights, entries, strict=True):
                    if found is None:
                        problems.append(
                            f"missing tensor {wanted!r} for {variable.path} "
                            f"(expected shape {tuple(variable.shape)})"
                        )
                        continue
                    used.add(found)
                    if isinstance(hook, FusedPart):
                        # Parts of one fused tensor come in a row: read it once.
                        if fused_cache[0] != found:
                            fused_cache = (found, reader.get(found))
                        value = fused_cache[1]
                    else:
                        value = reader.get(found)
                    try:
                        value = self._load_hooked(value, hook)
                    except ValueError as err:
                        problems.append(f"tensor {found!r} for {variable.path}: {err}")
                        continue
                    if tuple(value.shape) != tuple(variable.shape):
                        problems.append(
                            f"tensor {found!r} has shape {tuple(value.shape)} but "
                            f"{variable.path} expects {tuple(variable.shape)}"
                        )
                        continue
                    # Assigned one at a time so at most one tensor is in flight.
                    dtype = keras.backend.standardize_dtype(variable.dtype)
                    variable.assign(value.astype(dtype, copy=False))
                    assigned.add(id(variable))
                    del value
            for layer_name, layer in self.layers.items():
                unprefixed = layer_name[len(self.prefix) :]
                if layer.weights and unprefixed not in resolved:
                    problems.append(
                        f"no {convention} mapping for layer {layer_name!r}: its weights "
                        f"{[v.path for v in layer.weights]} were not loaded"
                    )
            problems.extend(self._unexpected(names, used, convention))
            self._initialize_unloaded(assigned)
            if problems and not self.ignore_invalid_weights:
                raise WeightLoadingError(
                    f"checkpoint {reader.path} does not fit the model "
                    f"({convention} names):\n  "
                    + "\n  ".join(problems)
                    + "\n(pass ignore_invalid_weights=True to skip these)"
                )

    def _unexpected(self, names, used, convention):
        """Unused checkpoint tensors inside the model body: a config mismatch."""
        if convention == "custom":
            return []
        out = []
        for name in names:
            if name in used or any(re.search(p, name) for p in self.ignored_variable_patterns):
                continue
            key = self._hf_key(name) if convention == "hf" else name
            if key.startswith(self.body_prefixes):
                out.append(f"unexpected tensor {name!r}: the model has no weight for it")
        return out

    # ------------------------------------------------------------------ saving
    def save_weights_as_checkpoint(self, filename, mapping=None, dtype=None, format=None):
        """Writes the weights as a Google TF checkpoint or an HF safetensors file.

        Args:
            filename: TF prefix (e.g. "out/bert_model.ckpt") or "*.safetensors".
            mapping: optional {layer: [names]} to write under instead of the
                family's Google (tf) or HF (safetensors) names.
            dtype: cast floating tensors to this dtype (e.g. "float16").
            format: "tf" or "safetensors"; by default from the file extension.

        Returns:
            The path written.
        """
        if format is None:
            format = "safetensors" if str(filename).endswith(".safetensors") else "tf"
        if format not in ("tf", "safetensors"):
            raise ValueError(f"format must be 'tf' or 'safetensors', got {format!r}")
        if mapping is None:
            mapping = self.variable_mapping() if format == "tf" else self.hf_variable_mapping()
        unmapped = [
            name
            for name, layer in self.layers.items()
            if layer.weights and name[len(self.prefix) :] not in mapping
        ]
        if unmapped:
            raise ValueError(
                f"cannot save as {format}: the mapping has no names for layer(s) {unmapped}; "
                "pass `mapping` (or choose the other format)"
            )

        def finish(value):
            if dtype is not None and np.issubdtype(value.dtype, np.floating):
                value = value.astype(dtype)
            return np.ascontiguousarray(value)

        tensors, fused = {}, {}
        for layer_name, entries in mapping.items():
            layer_name = self.prefix + layer_name
            if layer_name not in self.layers:
                continue
            for variable, entry in zip(self.layers[layer_name].weights, entries, strict=True):
                name, hook = self._split_entry(entry)
                value = keras.ops.convert_to_numpy(variable)
                if isinstance(hook, FusedPart):
                    fused.setdefault(name, {})[hook.index] = (hook, value)
                    continue
                if hook:
                    value = getattr(self, f"save_{hook}")(value)
                tensors[name] = finish(value)
        for name, parts in fused.items():
            value = _fuse_parts(name, parts)
            hook = parts[0][0].hook
            if hook:
                value = getattr(self, f"save_{hook}")(value)
            tensors[name] = finish(value)
        directory = os.path.dirname(str(filename))
        if directory:
            os.makedirs(directory, exist_ok=True)
        return checkpoints.save_checkpoint(tensors, str(filename), format=format)


def _fuse_parts(name, parts):
    """Concatenates {index: (FusedPart, value)} back into one tensor."""
    hook = next(iter(parts.values()))[0]
    missing = sorted(set(range(hook.count)) - set(parts))
    if missing:
        raise ValueError(
            f"cannot save fused tensor {name!r}: the mapping writes parts {sorted(parts)} "
            f"of {hook.count} but not {missing}"
        )
    return np.concatenate([parts[i][1] for i in range(hook.count)], axis=hook.axis)


def load_config(config_path):
    """Reads a config given as a JSON path, a dict or None."""
    if config_path is None:
        return {}
    if isinstance(config_path, dict):
        return dict(config_path)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"config file not found: {config_path}")
    with open(config_path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"config file {config_path} is not valid JSON: {err}") from err
