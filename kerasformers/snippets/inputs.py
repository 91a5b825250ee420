"""Checks that a batch of ids fits a model's embedding tables before the model sees it.

An id past the end of an embedding table is not an error everywhere: under jax the
model is a compiled graph, where ids are not values that can be inspected, and the
gather quietly yields NaN (so does the loss). `check_inputs` compares the batch with
the tables, found by their stable layer names, on the host before the model runs,
and names the input, the id and where it is.
"""

import keras
import numpy as np

__all__ = ["check_inputs"]

# input-name suffix -> (kind, table-name suffix)
_ID_INPUTS = (
    ("Input-Token", "token", "Embedding-Token"),
    ("Input-Segment", "segment", "Embedding-Segment"),
    ("Input-Position", "position", "Embedding-Position"),
)
# T5 names its inputs "Encoder-Input-Token" / "Decoder-Input-Token" around one shared
# "Embedding-Token".
_STACK_PREFIXES = ("Encoder-", "Decoder-")


class _IdInput:
    """One model input holding ids, and the ids its table accepts (`size=None`: any)."""

    def __init__(self, name, ndim, table=None, size=None):
        self.name = name
        self.ndim = ndim
        self.table = table
        self.size = size


def _find_table(model, names):
    for name in names:
        try:
            return model.get_layer(name)
        except ValueError:
            continue
    return None


def _describe_input(model, tensor):
    """The `_IdInput` of one model input, or None for inputs that hold no ids."""
    name = tensor.name
    for suffix, kind, table_suffix in _ID_INPUTS:
        if not name.endswith(suffix):
            continue
        prefix = name[: -len(suffix)]
        candidates = [prefix + table_suffix]
        for stack in _STACK_PREFIXES:
            if prefix.endswith(stack):
                candidates.append(prefix[: -len(stack)] + table_suffix)
        if kind == "segment":
            # shared_segment_embeddings: segments index the token table.
            candidates += [c.replace("Embedding-Segment", "Embedding-Token") for c in candidates]
        layer = _find_table(model, candidates)
        ndim = len(tensor.shape) if tensor.shape is not None else None
        if layer is None:
            if kind == "position":
                return _IdInput(name, ndim)  # rotary/relative positions: any id is valid
            raise ValueError(
                f"check_inputs: the model has an input {name!r} but no layer "
                f"{' or '.join(repr(c) for c in dict.fromkeys(candidates))} to check it "
                "against (check_inputs knows the layer names of build_transformer_model)"
            )
        size = int(layer.input_dim)
        if kind == "position" and getattr(layer, "hierarchical", False):
            size = size * size  # hierarchical positions split an id into two table rows
        return _IdInput(name, ndim, layer.name, size)
    return None


class InputChecker:
    """The id inputs of a model and their tables, read once; `check` runs per batch.

    Args:
        model: a keras.Model built by `build_transformer_model`.

    Raises:
        TypeError: if `model` is not a keras.Model.
        ValueError: if an id input has no embedding table of the expected name.
    """

    def __init__(self, model):
        if not isinstance(model, keras.Model):
            hint = ""
            if isinstance(getattr(model, "model", None), keras.Model):
                hint = " (the builder from return_keras_model=False? pass its .model)"
            raise TypeError(
                "check_inputs: model must be a keras.Model built by build_transformer_model, "
                f"got {type(model).__name__}{hint}"
            )
        self.input_names = [tensor.name for tensor in model.inputs]
        self.id_inputs = [_describe_input(model, tensor) for tensor in model.inputs]

    def _as_list(self, inputs):
        names = self.input_names
        if isinstance(inputs, dict):
            missing = [n for n in names if n not in inputs]
            unknown = [k for k in inputs if k not in names]
            if missing or unknown:
                raise ValueError(
                    f"check_inputs: the model's inputs are {names}; the dict misses "
                    f"{missing} and has unknown keys {unknown}"
                )
            return [inputs[n] for n in names]
        if isinstance(inputs, (list, tuple)):
            # A nested list of ids for a one-input model is that input, not a list of inputs.
            if len(names) == 1 and not all(hasattr(x, "shape") for x in inputs):
                return [inputs]
            items = list(inputs)
        else:
            items = [inputs]
        if len(items) != len(names):
            raise ValueError(
                f"check_inputs: the model takes {len(names)} input"
                f"{'s' if len(names) != 1 else ''} ({', '.join(names)}), got {len(items)}; "
                "pass a list in this order, or a dict by name"
            )
        return items

    def check(self, inputs):
        """Raises if an id input is not an integer array of ids its table holds."""
        for spec, value in zip(self.id_inputs, self._as_list(inputs), strict=True):
            if spec is not None:
                _check_ids(spec, value)
        return inputs


def _to_numpy(name, value):
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple, int, np.integer)):
        try:
            return np.asarray(value)
        except ValueError as err:
            raise ValueError(
                f"check_inputs: {name} is ragged (rows of different lengths?); pad it with "
                "sequence_padding"
            ) from err
    return keras.ops.convert_to_numpy(value)


def _check_ids(spec, value):
    name = spec.name
    ids = _to_numpy(name, value)
    if ids.dtype == object:
        raise ValueError(
            f"check_inputs: {name} is ragged (rows of different lengths?); pad it with "
            "sequence_padding"
        )
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(
            f"check_inputs: {name} must hold integer ids, got dtype {ids.dtype} "
            "(cast it, e.g. .astype('int32'))"
        )
    if spec.ndim is not None and ids.ndim != spec.ndim:
        raise ValueError(
            f"check_inputs: {name} must have {spec.ndim} axes (batch, length), got shape "
            f"{ids.shape}"
        )
    if spec.size is None or ids.size == 0:
        return
    bad = (ids < 0) | (ids >= spec.size)
    if not bad.any():
        return
    where = tuple(int(i) for i in np.argwhere(bad)[0])
    place = f"row {where[0]}, column {where[1]}" if len(where) == 2 else f"index {where}"
    raise ValueError(
        f"check_inputs: {name} holds id {int(ids[where])} at {place}, outside "
        f"{spec.table} (input_dim={spec.size}: ids 0..{spec.size - 1})"
    )


def check_inputs(model, inputs):
    """Checks a batch of model inputs on the host: ids, dtypes, number of inputs.

    Each model input is matched by name to its embedding table through the stable
    layer names of `build_transformer_model`: `<prefix>Input-Token` (and T5's
    `Encoder-Input-Token` / `Decoder-Input-Token`) to `<prefix>Embedding-Token`,
    `<prefix>Input-Segment` to `<prefix>Embedding-Segment` (the token table when
    segments share it), `<prefix>Input-Position` to `<prefix>Embedding-Position`
    when the model has one (rotary and relative positions accept any id). Every id
    must lie in `0..input_dim - 1` of its table. Other inputs (T5's float
    "Input-Context", masks) are not checked, beyond their count.

    Where this runs: only at these host-data boundaries, on numpy (or host) data:
    calls of this function, and the batches of a `DataGenerator(...,
    check_inputs=model)` (iterating it, `forfit`, `fortest`, `to_pydataset`).
    Nothing is checked inside a compiled graph, where ids are abstract: on jax,
    `model.predict`, `model.fit`, `model.evaluate` and `model(x)` given raw arrays
    run compiled (or traced), and an out-of-range id there gives NaN outputs and
    losses without any error. (Eager torch and TensorFlow calls raise in the Embedding layer, which
    names the layer but not the input, row or column; compiled torch does not check.)

    Args:
        model: a keras.Model built by `build_transformer_model`.
        inputs: what the model is called with: one array (one-input model), a list
            of arrays in the order of `model.inputs`, or a dict by input name.
            Arrays may be numpy arrays, nested lists or backend tensors.

    Returns:
        `inputs`, unchanged.

    Raises:
        ValueError: naming the input, the first bad id, its row and column and the
            allowed range; or if the number of inputs (or the dict's keys) does not
            match the model, or an id input has the wrong number of axes or is ragged.
        TypeError: if an id input is not an integer array (floats, bools), or
            `model` is not a keras.Model.

    Example:
        >>> model = build_transformer_model(config, model="bert")  # doctest: +SKIP
        >>> check_inputs(model, [token_ids, np.full_like(token_ids, 2)])  # doctest: +SKIP
        ValueError: check_inputs: Input-Segment holds id 2 at row 0, column 0, outside
        Embedding-Segment (input_dim=2: ids 0..1)
    """
    return InputChecker(model).check(inputs)
