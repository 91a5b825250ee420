"""PyTorch checkpoints (``torch.save`` state dicts: ``pytorch_model.bin``, ``*.pt``, sharded
``pytorch_model.bin.index.json``), read with ``weights_only=True``.

A ``.bin`` file is a pickle. Unpickling can run arbitrary code, so files are always loaded with
``torch.load(weights_only=True)``: PyTorch's restricted unpickler accepts tensors, containers and
plain values, and refuses anything else (a pickled ``os.system`` call included) with an error
instead of executing it. PyTorch is imported only here, only when such a file is opened.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import ml_dtypes
import numpy as np

from .base import CheckpointError, CheckpointReader

__all__ = ["TorchReader"]

# Keys under which training scripts commonly nest the actual state dict.
_NESTING_KEYS = ("state_dict", "model_state_dict", "model")


def import_torch(path: str):
    """Imports torch, or raises CheckpointError explaining that `path` needs it."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"reading {path} needs PyTorch: pip install torch") from None
    return torch


def _numpy_dtype(torch, dtype) -> tuple[np.dtype, object] | None:
    """Returns (numpy dtype, torch dtype to reinterpret as first) or None if unsupported."""
    exact = {
        torch.float32: np.float32,
        torch.float64: np.float64,
        torch.float16: np.float16,
        torch.int64: np.int64,
        torch.int32: np.int32,
        torch.int16: np.int16,
        torch.int8: np.int8,
        torch.uint8: np.uint8,
        torch.bool: np.bool_,
        torch.complex64: np.complex64,
        torch.complex128: np.complex128,
    }
    for name, np_type in (("uint16", np.uint16), ("uint32", np.uint32), ("uint64", np.uint64)):
        if hasattr(torch, name):
            exact[getattr(torch, name)] = np_type
    if dtype in exact:
        return np.dtype(exact[dtype]), None
    # No numpy equivalent in torch: reinterpret the bits as a same-size integer (exact).
    reinterpret = {torch.bfloat16: (ml_dtypes.bfloat16, torch.int16)}
    for name, np_type in (("float8_e4m3fn", "float8_e4m3fn"), ("float8_e5m2", "float8_e5m2")):
        if hasattr(torch, name):
            reinterpret[getattr(torch, name)] = (getattr(ml_dtypes, np_type), torch.uint8)
    if dtype in reinterpret:
        np_type, via = reinterpret[dtype]
        return np.dtype(np_type), via
    return None


def _torch_load(torch, path: str):
    try:
        try:
            # mmap keeps memory flat: tensors are paged in when converted, one at a time.
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            # Legacy (pre-zip) files cannot be memory-mapped.
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    except Exception as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(
                f"refused to load {path}: it holds pickled objects other than tensors, which "
                f"could run code; only plain state dicts are read (weights_only=True). {exc}"
            ) from None
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {exc}") from None


def _state_dict(obj, path: str) -> Mapping:
    # Training checkpoints wrap the weights, e.g. {"epoch": 3, "state_dict": {...}}; a dict that
    # holds tensors itself is taken as the state dict.
    for _ in range(3):
        if not isinstance(obj, Mapping) or any(_is_tensor(v) for v in obj.values()):
            break
        nested = [obj[k] for k in _NESTING_KEYS if isinstance(obj.get(k), Mapping)]
        if not nested:
            break
        obj = nested[0]
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    return obj


def _is_tensor(value) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "dtype")


class TorchReader(CheckpointReader):
    """Reads a PyTorch state dict (``torch.load(weights_only=True)``) as numpy arrays.

    Args:
        path: A ``.bin`` / ``.pt`` / ``.pth`` file or a ``pytorch_model.bin.index.json``.
    """

    format = "torch"

    def __init__(self, path: str | os.PathLike):
        super().__init__(path)
        self._torch = import_torch(self.path)
        if self.path.endswith(".json"):
            files = self._shard_files()
        else:
            files = [(self.path, None)]
        for file, names in files:
            self._add(file, names)

    def _shard_files(self) -> list[tuple[str, set]]:
        try:
            with open(self.path, encoding="utf-8") as f:
                weight_map = json.load(f).get("weight_map")
        except (OSError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"cannot read {self.path} as a shard index: {exc}") from None
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{self.path} has no valid 'weight_map' of tensor -> file")
        shards: dict[str, set] = {}
        for name, shard in weight_map.items():
            if not isinstance(shard, str) or os.path.isabs(shard) or ".." in shard.split("/"):
                raise CheckpointError(f"{self.path} has an invalid shard file name {shard!r}")
            shards.setdefault(shard, set()).add(name)
        directory = os.path.dirname(self.path)
        return [(os.path.join(directory, s), names) for s, names in sorted(shards.items())]

    def _add(self, file: str, names: set | None) -> None:
        if not os.path.isfile(file):
            raise CheckpointError(f"{self.path} refers to {file}, which is missing")
        state = _state_dict(_torch_load(self._torch, file), file)
        for key, value in state.items():
            name = str(key)
            if names is not None and name not in names:
                continue
            if not isinstance(value, self._torch.Tensor):
                self.skipped[name] = f"not a tensor ({type(value).__name__})"
                continue
            if value.layout != self._torch.strided:
                self.skipped[name] = f"unsupported tensor layout {value.layout}"
                continue
            converted = _numpy_dtype(self._torch, value.dtype)
            if converted is None:
                self.skipped[name] = f"unsupported torch dtype {value.dtype}"
                continue
            self._entries[name] = (value, converted[0], converted[1])

    def _shape(self, name):
        return tuple(self._entries[name][0].shape)

    def _dtype(self, name):
        return self._entries[name][1]

    def _get(self, name):
        tensor, dtype, via = self._entries[name]
        tensor = tensor.detach().contiguous()
        if via is not None:
            tensor = tensor.view(via)
        # A copy: the result must not alias the memory-mapped file.
        return np.array(tensor.numpy(), copy=True).view(dtype)

    def _close(self):
        self._entries = {}
