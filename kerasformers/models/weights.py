"""Loading and saving a builder's weights by its checkpoint-name mappings.

A family declares `variable_mapping()` (Google / bert4keras names) and
`hf_variable_mapping()` (HF transformers names); this module pours checkpoint
tensors into the layers by those mappings and writes them back. File formats
are `kerasformers.checkpoints`' business: nothing here parses a file.

A mapping is `{layer name: {variable path: entry}}`. The variable path is the
variable's `path` relative to its layer: "kernel" and "bias" of a Dense,
"beta" and "gamma" of a LayerNormalization, "embeddings" of an embedding,
"q_dense/kernel" ... "o_dense/bias" of an attention layer, "i_dense/kernel"
(gated: "i0_dense/kernel", "i1_dense/kernel") and "o_dense/kernel" of a
FeedForward. An entry is a checkpoint name, `(name, hook)` with `hook` the
name of a `load_<hook>` / `save_<hook>` pair, or `(name, FusedPart(...))`.
Variables are found by path, never by the order a layer created them in.

bert4keras' form, `{layer name: [entries in layer.weights order]}`, is still
accepted (a user's `mapping=`, an overridden `variable_mapping`): each list is
paired with its layer's variables in one place, `_by_path`.

Example:
    >>> {"Pooler-Dense": {"kernel": "bert/pooler/dense/kernel",
    ...                   "bias": "bert/pooler/dense/bias"},
    ...  "NSP-Proba": {"kernel": ("cls/seq_relationship/output_weights", "transpose"),
    ...                "bias": "cls/seq_relationship/output_bias"}}
"""

import functools
import os
import re
from typing import NamedTuple

import keras
import numpy as np

from kerasformers import checkpoints
from kerasformers.backend.variables import (
    assign_variable,
    discard_variable_value,
    variable_storage,
    variable_to_numpy,
)


class FusedPart(NamedTuple):
    """Mapping hook: the variable is slice `index` of `count` equal slices of one
    checkpoint tensor along `axis` (GPT-2's c_attn holds q, k and v side by side).

    Loading applies the named hook `hook` (if any) to the whole tensor, then
    slices; saving concatenates the parts written under that name in index
    order, then applies `save_<hook>`.

    Example:
        >>> {"q_dense/kernel": ("h.0.attn.c_attn.weight", FusedPart(0, 3)),
        ...  "q_dense/bias": ("h.0.attn.c_attn.bias", FusedPart(0, 3))}
    """

    index: int
    count: int
    axis: int = -1
    hook: str | None = None


class WeightLoadingError(ValueError):
    """A checkpoint does not fit the model (missing, unexpected, mis-shaped or
    mistyped tensors), or a mapping does not fit the model's variables."""


def _dtype_kind(name):
    """ "float" for every float width (bfloat16 included), "int", "bool", "complex"."""
    if name.startswith(("float", "bfloat")):
        return "float"
    if name.startswith(("int", "uint")):
        return "int"
    if name.startswith("complex"):
        return "complex"
    return name  # bool, object (strings), ...


def _dtype_name(dtype):
    try:
        return keras.backend.standardize_dtype(dtype)
    except ValueError:  # strings and other dtypes Keras does not know
        return np.dtype(dtype).name


class CheckpointMapping:
    """The weight engine of every builder: mappings, named hooks, load and save."""

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

    def variable_mapping(self):
        """{layer name: {variable path: entry}} in Google checkpoint names."""
        return {}

    def hf_variable_mapping(self):
        """{layer name: {variable path: entry}} in HF transformers names."""
        return {}

    # Hooks are named transforms applied on load (`load_<hook>`) and inverted on
    # save (`save_<hook>`).
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

    def _is_identity(self, hook):
        """True for an entry whose load hook leaves the tensor as it is in the file.

        Such tensors can be read straight into a variable's memory (`_load_direct`).
        """
        if hook is None:
            return True
        return (
            hook == "embeddings"
            and self.keep_tokens is None
            and self.compound_tokens is None
            and type(self).load_embeddings is CheckpointMapping.load_embeddings
        )

    def _hf_key(self, name):
        if self.hf_prefix and name.startswith(self.hf_prefix):
            return name[len(self.hf_prefix) :]
        return name

    # ------------------------------------------------------------------ resolution
    @staticmethod
    def _variables(layer):
        """{path relative to the layer: variable}, in layer.weights order."""
        variables = {}
        for variable in layer.weights:
            path = variable.path
            head = layer.name + "/"
            if path.startswith(head):
                relative = path[len(head) :]
            elif "/" + head in path:  # built under an outer name scope
                relative = path.split("/" + head, 1)[1]
            else:
                raise WeightLoadingError(
                    f"layer {layer.name!r}: variable {path!r} does not live under the "
                    "layer's name, so no mapping can name it"
                )
            if relative in variables:
                raise WeightLoadingError(
                    f"layer {layer.name!r} has two variables at {relative!r}; give its "
                    "sub-layers distinct names so a mapping can tell them apart"
                )
            variables[relative] = variable
        return variables

    def _by_path(self, mapping, convention):
        """{layer: {path: (name, hook)}} for the model's layers, from either form.

        A list of entries (bert4keras' form) is in layer.weights order: it is
        paired with the layer's variables here, the one place that knows that
        order. Layers the model does not have are left out.
        """
        out = {}
        for layer_name, entries in mapping.items():
            layer = self.layers.get(self.prefix + layer_name)
            if layer is None:
                continue
            if isinstance(entries, dict):
                out[layer_name] = {path: self._split_entry(e) for path, e in entries.items()}
                continue
            entries = list(entries)
            paths = list(self._variables(layer))
            if len(entries) != len(paths):
                raise WeightLoadingError(
                    f"layer {layer.name!r} has {len(paths)} weights {paths} but the "
                    f"{convention} mapping lists {len(entries)} (in layer.weights order): "
                    f"{[self._split_entry(e)[0] for e in entries]}"
                )
            out[layer_name] = dict(zip(paths, map(self._split_entry, entries), strict=True))
        return out

    def _check_paths(self, mapping, convention):
        """Every variable of a mapped layer named, no name for a variable it lacks.

        `mapping` is {layer: {path: (name, hook)}}. A misfit is a bug in the
        mapping, not in the checkpoint: ignore_invalid_weights does not skip it.
        """
        problems = []
        for layer_name, entries in mapping.items():
            layer = self.layers[self.prefix + layer_name]
            variables = self._variables(layer)
            for path in variables.keys() - entries.keys():
                problems.append(
                    f"layer {layer.name!r}: the {convention} mapping names no tensor for "
                    f"its variable {path!r} ({variables[path].path})"
                )
            for path in entries.keys() - variables.keys():
                problems.append(
                    f"layer {layer.name!r} has no variable {path!r} (it has "
                    f"{list(variables)}), but the {convention} mapping names "
                    f"{entries[path][0]!r} for it"
                )
        if problems:
            raise WeightLoadingError(
                f"the {convention} mapping does not fit the model's variables:\n  "
                + "\n  ".join(sorted(problems))
            )

    @staticmethod
    def _resolve(mapping, find):
        """{layer: {path: (name found in the checkpoint or None, wanted name, hook)}}."""
        return {
            layer: {path: (find(name), name, hook) for path, (name, hook) in entries.items()}
            for layer, entries in mapping.items()
        }

    def _choose_mapping(self, names):
        """Picks the Google or HF mapping, whichever matches the checkpoint's names."""
        name_set = set(names)
        hf_lookup = {}
        for name in names:
            hf_lookup.setdefault(self._hf_key(name), name)

        google_resolved = self._resolve(
            self._by_path(self.variable_mapping(), "google"),
            lambda n: n if n in name_set else None,
        )
        hf_resolved = self._resolve(
            self._by_path(self.hf_variable_mapping(), "hf"),
            lambda n: hf_lookup.get(self._hf_key(n)),
        )

        def hits(resolved):
            return sum(found is not None for v in resolved.values() for found, _, _ in v.values())

        if hits(hf_resolved) > hits(google_resolved):
            return "hf", hf_resolved
        return "google", google_resolved

    def match_checkpoint(self, names):
        """How `load_weights_from_checkpoint` reads a checkpoint holding `names`.

        Returns:
            ("google" or "hf": the naming chosen, {the names it reads}); the other
            names are left alone (optimizer slots, buffers, heads the model lacks).
        """
        convention, resolved = self._choose_mapping(list(names))
        used = {
            found
            for entries in resolved.values()
            for found, _, _ in entries.values()
            if found is not None
        }
        return convention, used

    # ------------------------------------------------------------------ loading
    def load_weights_from_checkpoint(self, checkpoint, mapping=None):
        """Loads weights from a checkpoint file or directory (format auto-detected).

        Args:
            checkpoint: Google TF prefix, *.safetensors, pytorch_model.bin, a Keras
                *.weights.h5, or a directory holding one of them.
            mapping: optional mapping overriding the family's: {layer: {variable
                path: entry}}, or bert4keras' {layer: [entries in layer.weights
                order]}.

        Raises:
            WeightLoadingError: naming every missing, unexpected, mis-shaped or
                mistyped (int data for a float variable, ...) tensor, unless the
                builder has ignore_invalid_weights=True; and, always, a mapping
                that leaves a variable of a mapped layer unnamed or names a
                variable the layer does not have.
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
                resolved = self._resolve(
                    self._by_path(mapping, convention), lambda n: n if n in reader else None
                )
            else:
                convention, resolved = self._choose_mapping(names)
            named = {layer: {p: e[1:] for p, e in v.items()} for layer, v in resolved.items()}
            self._check_paths(named, convention)
            problems = []
            used, assigned = set(), set()
            for layer_name, entries in resolved.items():
                layer = self.layers[self.prefix + layer_name]
                fused = {}  # fused tensors of this layer, read once
                for path, variable in self._variables(layer).items():
                    found, wanted, hook = entries[path]
                    if found is None:
                        problems.append(
                            f"missing tensor {wanted!r} for {variable.path} "
                            f"(expected shape {tuple(variable.shape)})"
                        )
                        continue
                    used.add(found)
                    dtype = _dtype_name(variable.dtype)
                    stored = _dtype_name(reader.dtype(found))
                    if _dtype_kind(stored) != _dtype_kind(dtype):
                        problems.append(
                            f"tensor {found!r} holds {stored} data but {variable.path} is "
                            f"{dtype}: a {_dtype_kind(stored)} tensor cannot fill a "
                            f"{_dtype_kind(dtype)} variable"
                        )
                        continue
                    if self._is_identity(hook):
                        shape = reader.shape(found)
                        if shape != tuple(variable.shape):
                            problems.append(
                                f"tensor {found!r} has shape {shape} but "
                                f"{variable.path} expects {tuple(variable.shape)}"
                            )
                            continue
                        self._load_direct(reader, found, variable, stored == dtype)
                        assigned.add(id(variable))
                        continue
                    if isinstance(hook, FusedPart):
                        if found not in fused:
                            fused[found] = reader.get(found)
                        value = fused[found]
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
                    # Assigned one at a time so at most one tensor is in flight
                    # (and the fused tensors of one layer); cast only if the
                    # dtypes differ, this tensor alone.
                    assign_variable(variable, value)
                    assigned.add(id(variable))
                    del value
                del fused
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

    def _load_direct(self, reader, name, variable, same_dtype):
        """Loads a tensor that needs no hook, with as few copies as the backend allows.

        Same dtype on torch: the file's bytes are read straight into the variable's
        memory. Otherwise the tensor is read into a fresh (aligned) array and assigned,
        cast by the backend if the dtypes differ; the placeholder value of a model built
        for this checkpoint (`defer_initialization`) is freed first, so that the old and
        the new value of the largest tensor are never both alive.
        """
        if same_dtype:
            storage = variable_storage(variable)
            if storage is not None:
                reader.read_into(name, storage)
                return
        if self.defer_initialization:
            discard_variable_value(variable)
        assign_variable(variable, reader.get(name))

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
    def save_weights_as_checkpoint(
        self, filename, mapping=None, dtype=None, format=None, max_shard_size=None, progress=None
    ):
        """Writes the weights as a Google TF checkpoint or HF safetensors (sharded if large).

        Tensors are computed from the variables one at a time, as they are written
        (bfloat16 stays bfloat16; no float32 copy of the model is made), so saving
        needs about one tensor of memory beyond the model.

        Args:
            filename: TF prefix (e.g. "out/bert_model.ckpt"), "*.safetensors" (or
                "*.safetensors.index.json"), or a directory (an existing one or a path
                ending in a separator: "model.ckpt" / "model.safetensors" inside it).
            mapping: optional mapping to write under instead of the family's Google
                (tf) or HF (safetensors) names; either form, as for loading.
            dtype: cast floating tensors to this dtype (e.g. "bfloat16", "float16"),
                each tensor as it is written.
            format: "tf" or "safetensors"; by default from the file extension.
            max_shard_size: safetensors only: the largest file, in bytes or as a string
                ("2GB", "500MiB"); default "5GB". Larger sets are written as HF shards
                (model-00001-of-0000N.safetensors + model.safetensors.index.json),
                which `transformers`' from_pretrained loads.
            progress: optional `fn(done, total)`, called after each tensor is handed
                to the writer (a progress display).

        Returns:
            The path written (a sharded set: its index).
        """
        if format is None:
            is_safetensors = str(filename).endswith((".safetensors", ".safetensors.index.json"))
            format = "safetensors" if is_safetensors else "tf"
        if format not in ("tf", "safetensors"):
            raise ValueError(f"format must be 'tf' or 'safetensors', got {format!r}")
        if max_shard_size is not None and format != "safetensors":
            raise ValueError(f"max_shard_size applies to format='safetensors' only, not {format!r}")
        tensors = self.checkpoint_tensors(format, mapping=mapping, dtype=dtype)
        if progress is not None:
            for done, tensor in enumerate(tensors.values(), 1):
                tensor.on_read = functools.partial(progress, done, len(tensors))
        directory = os.path.dirname(str(filename))
        if directory:
            os.makedirs(directory, exist_ok=True)
        return checkpoints.save_checkpoint(
            tensors, str(filename), format=format, max_shard_size=max_shard_size
        )

    def checkpoint_tensors(self, format="safetensors", mapping=None, dtype=None):
        """The tensors `save_weights_as_checkpoint` writes, computed only when read.

        Args:
            format: "tf" (Google names) or "safetensors" (HF names).
            mapping: optional mapping to name them by instead of the family's.
            dtype: cast floating tensors to this dtype as each is read.

        Returns:
            {checkpoint name: array-like}: each value has `shape` and `dtype`, and
            `np.asarray(value)` computes it from the variables (hooks and fused
            parts applied, cast), one tensor at a time. Comparing a written file
            against these is comparing it against the model.
        """
        if format not in ("tf", "safetensors"):
            raise ValueError(f"format must be 'tf' or 'safetensors', got {format!r}")
        if mapping is not None:
            convention = "custom"
        else:
            convention = "google" if format == "tf" else "hf"
            mapping = self.variable_mapping() if format == "tf" else self.hf_variable_mapping()
        mapping = self._by_path(mapping, convention)
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
        self._check_paths(mapping, convention)

        sources, fused = {}, {}  # checkpoint name -> function computing its array
        for layer_name, entries in mapping.items():
            for path, variable in self._variables(self.layers[self.prefix + layer_name]).items():
                name, hook = entries[path]
                if isinstance(hook, FusedPart):
                    sources.setdefault(name, None)  # keeps the layer order of the names
                    fused.setdefault(name, {})[hook.index] = (hook, variable)
                    continue
                sources[name] = functools.partial(self._saved_value, variable, hook)
        for name, parts in fused.items():
            _check_parts(name, parts)
            sources[name] = functools.partial(self._saved_fused, name, parts)
        return {name: _SavedTensor(compute, dtype) for name, compute in sources.items()}

    def _saved_value(self, variable, hook):
        value = variable_to_numpy(variable)
        return getattr(self, f"save_{hook}")(value) if hook else value

    def _saved_fused(self, name, parts):
        value = _fuse_parts(name, {i: (h, variable_to_numpy(v)) for i, (h, v) in parts.items()})
        hook = next(iter(parts.values()))[0].hook
        return getattr(self, f"save_{hook}")(value) if hook else value


class _SavedTensor:
    """A checkpoint tensor computed from the variables when the writer takes it.

    Its shape and dtype are known up front (the writer plans shards and headers with
    them) from one evaluation, whose result is dropped: the values are views of the
    variables, so that costs no copy for tensors without a fused part or a cast.
    """

    def __init__(self, compute, dtype=None):
        self._compute = compute
        self.on_read = None  # called after each read (save_weights_as_checkpoint's progress)
        value = compute()
        self._cast = None
        if dtype is not None and _dtype_kind(_dtype_name(value.dtype)) == "float":
            self._cast = np.dtype(_numpy_dtype(dtype))
        self.shape = tuple(value.shape)
        self.dtype = self._cast if self._cast is not None else np.dtype(value.dtype)

    def __array__(self, dtype=None, copy=None):
        value = np.asarray(self._compute())
        if self._cast is not None and value.dtype != self._cast:
            value = value.astype(self._cast)
        if self.on_read is not None:
            self.on_read()
        if dtype is not None:
            return value.astype(dtype)
        return value.copy() if copy else value  # np.array(...) asks for its own copy


def _numpy_dtype(dtype):
    """numpy dtype of a Keras / numpy dtype name ("bfloat16" through ml_dtypes)."""
    name = _dtype_name(dtype)
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(name)


def _check_parts(name, parts):
    hook = next(iter(parts.values()))[0]
    missing = sorted(set(range(hook.count)) - set(parts))
    if missing:
        raise ValueError(
            f"cannot save fused tensor {name!r}: the mapping writes parts {sorted(parts)} "
            f"of {hook.count} but not {missing}"
        )


def _fuse_parts(name, parts):
    """Concatenates {index: (FusedPart, value)} back into one tensor."""
    _check_parts(name, parts)
    hook = next(iter(parts.values()))[0]
    return np.concatenate([parts[i][1] for i in range(hook.count)], axis=hook.axis)
