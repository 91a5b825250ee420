"""Finding out which format a checkpoint path is in, and the format-independent entry points."""

from __future__ import annotations

import glob
import os
import re
import warnings

from .atomic import BACKUP_SUFFIX
from .base import CheckpointError, CheckpointReader

__all__ = ["detect_format", "open_checkpoint", "save_checkpoint", "FORMATS"]

FORMATS = ("tf", "safetensors", "torch", "keras")
_ALLOWED = (
    "a TensorFlow checkpoint (its prefix, .index or .data-NNNNN-of-NNNNN file), "
    "*.safetensors (or model.safetensors.index.json), a PyTorch *.bin / *.pt / *.pth file "
    "(or pytorch_model.bin.index.json), or Keras *.weights.h5"
)
_DATA_FILE = re.compile(r"^(.*)\.data-\d{5}-of-\d{5}$")
# What save_checkpoint names a checkpoint it is asked to write into a directory.
DEFAULT_NAMES = {"tf": "model.ckpt", "safetensors": "model.safetensors"}
_STATE_LINE = re.compile(r'^\s*model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"\s*$', re.MULTILINE)


def _tf_backup(prefix: str) -> str | None:
    """The backup an interrupted save left of `prefix` (its index is missing), or None.

    A save moves the old checkpoint to ``prefix + BACKUP_SUFFIX`` before it puts the new one
    in place (see `atomic`); a crash in between leaves only the backup complete.
    """
    backup = prefix + BACKUP_SUFFIX
    if os.path.isfile(prefix + ".index") or not os.path.isfile(backup + ".index"):
        return None
    warnings.warn(
        f"{prefix}.index is missing: loading {backup}, the previous checkpoint kept by a "
        "save that was interrupted",
        RuntimeWarning,
        stacklevel=3,
    )
    return backup


def _safetensors_backup(index: str) -> str | None:
    """The backup of a sharded safetensors set whose save was interrupted, or None.

    A sharded save keeps the old set complete under ``index + BACKUP_SUFFIX`` (see
    `safetensors_writer`) between removing the old index and putting the new one in place.
    """
    backup = index + BACKUP_SUFFIX
    if os.path.isfile(index) or not os.path.isfile(backup):
        return None
    warnings.warn(
        f"{index} is missing: loading {backup}, the previous checkpoint kept by a save that "
        "was interrupted",
        RuntimeWarning,
        stacklevel=3,
    )
    return backup


def _detect_file(path: str) -> tuple[str, str]:
    name = os.path.basename(path)
    if name.endswith(".index"):
        return "tf", path[: -len(".index")]
    match = _DATA_FILE.match(path)
    if match:
        if not os.path.isfile(match.group(1) + ".index"):
            raise CheckpointError(
                f"{path} is a TensorFlow data file but {match.group(1)}.index is missing"
            )
        return "tf", match.group(1)
    if name.endswith((".safetensors", ".safetensors.index.json")):
        return "safetensors", path
    if name.endswith((".bin", ".pt", ".pth", ".bin.index.json")):
        return "torch", path
    if name.endswith(".weights.h5"):
        return "keras", path
    if name.endswith((".h5", ".hdf5", ".keras")):
        raise CheckpointError(
            f"unsupported checkpoint file {path}: Keras 3 weight files end in .weights.h5 "
            f"(a whole saved model is not a checkpoint); expected {_ALLOWED}"
        )
    raise CheckpointError(f"unrecognised checkpoint file {path}: expected {_ALLOWED}")


def _tf_from_state_file(directory: str) -> str | None:
    state = os.path.join(directory, "checkpoint")
    if not os.path.isfile(state):
        return None
    try:
        with open(state, encoding="utf-8", errors="replace") as f:
            match = _STATE_LINE.search(f.read(1 << 20))
    except OSError:
        return None
    if not match:
        return None
    recorded = re.sub(r"\\(.)", r"\1", match.group(1))
    # The recorded path may be relative, or absolute from the machine that wrote it.
    candidates = (
        os.path.join(directory, recorded),
        os.path.join(directory, os.path.basename(recorded)),
    )
    for prefix in candidates:
        if os.path.isfile(prefix + ".index"):
            return prefix
    for prefix in candidates:
        backup = _tf_backup(prefix)
        if backup is not None:
            return backup
    return None


def _one(directory: str, kind: str, candidates: list[str]) -> str | None:
    if len(candidates) > 1:
        listed = ", ".join(os.path.basename(c) for c in candidates[:6])
        raise CheckpointError(
            f"directory {directory} holds several {kind} checkpoints ({listed}); "
            "pass the one to load explicitly"
        )
    return candidates[0] if candidates else None


def _detect_directory(directory: str) -> tuple[str, str]:
    def files(pattern: str) -> list[str]:
        return sorted(
            p for p in glob.glob(os.path.join(glob.escape(directory), pattern)) if os.path.isfile(p)
        )

    prefix = _tf_from_state_file(directory)
    if prefix is None:
        prefixes = [p[: -len(".index")] for p in files("*.index")]
        # A save's backup of a checkpoint whose index is back in place is not a second one.
        main = [
            p
            for p in prefixes
            if not (p.endswith(BACKUP_SUFFIX) and p[: -len(BACKUP_SUFFIX)] in prefixes)
        ]
        prefix = _one(directory, "TensorFlow", main)
        if prefix is not None and prefix.endswith(BACKUP_SUFFIX):
            prefix = _tf_backup(prefix[: -len(BACKUP_SUFFIX)]) or prefix
    if prefix is not None:
        return "tf", prefix
    single = os.path.join(directory, "model.safetensors")
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.isfile(single) and os.path.isfile(index):
        # transformers' from_pretrained reads model.safetensors first; so do we, so that a
        # folder gives the same weights to both. Our own saves never leave both behind.
        warnings.warn(
            f"{directory} holds both model.safetensors and model.safetensors.index.json: "
            "loading model.safetensors (as transformers does); pass the index's path to "
            "load the sharded set",
            RuntimeWarning,
            stacklevel=3,
        )
    if not os.path.isfile(single) and not os.path.isfile(index):
        backup = _safetensors_backup(index)
        if backup is not None:
            return "safetensors", backup
    for kind, fmt, exact, pattern in (
        ("safetensors", "safetensors", ("model.safetensors", "model.safetensors.index.json"), None),
        ("safetensors", "safetensors", (), "*.safetensors.index.json"),
        ("safetensors", "safetensors", (), "*.safetensors"),
        ("PyTorch", "torch", ("pytorch_model.bin.index.json", "pytorch_model.bin"), None),
        ("PyTorch", "torch", (), "*.pt"),
        ("PyTorch", "torch", (), "*.pth"),
        ("Keras", "keras", (), "*.weights.h5"),
    ):
        for name in exact:
            if os.path.isfile(os.path.join(directory, name)):
                return fmt, os.path.join(directory, name)
        found = _one(directory, kind, files(pattern)) if pattern else None
        if found is not None:
            return fmt, found
    raise CheckpointError(
        f"no checkpoint found in directory {directory}: looked for a TensorFlow checkpoint "
        "(a `checkpoint` state file or *.index, e.g. model.ckpt.index), "
        "model.safetensors.index.json / model.safetensors / *.safetensors, "
        "pytorch_model.bin.index.json / pytorch_model.bin / *.pt / *.pth, and *.weights.h5"
    )


def detect_format(path: str | os.PathLike) -> tuple[str, str]:
    """Works out the format of a checkpoint path and the exact path to open.

    Args:
        path: A TensorFlow prefix (``.../model.ckpt``) or its ``.index`` / ``.data-*`` file,
            a ``*.safetensors`` file or ``*.safetensors.index.json``, a PyTorch ``*.bin`` /
            ``*.pt`` / ``*.pth`` file or ``*.bin.index.json``, a Keras ``*.weights.h5`` file, or a
            directory holding one of these (TensorFlow is preferred, then safetensors, then
            PyTorch, then Keras; ``model.safetensors`` before
            ``model.safetensors.index.json``, as transformers reads them, with a warning when
            both are there; an interrupted sharded save's ``*.index.json.bak`` when the
            index is missing).

    Returns:
        ``(fmt, resolved_path)`` with fmt in ``FORMATS``; for TensorFlow the path is the prefix.

    Raises:
        CheckpointError: the path does not exist, its format is unknown, or a directory holds
            no (or an ambiguous) checkpoint.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        return _detect_directory(path)
    if os.path.isfile(path + ".index"):
        return "tf", path
    if not os.path.exists(path):
        prefix = path[: -len(".index")] if path.endswith(".index") else path
        backup = _tf_backup(prefix)
        if backup is not None:
            return "tf", backup
        if path.endswith(".safetensors.index.json"):
            backup = _safetensors_backup(path)
            if backup is not None:
                return "safetensors", backup
        raise CheckpointError(f"checkpoint not found: {path} (no such file or directory)")
    return _detect_file(path)


def open_checkpoint(path: str | os.PathLike) -> CheckpointReader:
    """Opens a checkpoint of any supported format for lazy reading.

    Args:
        path: Anything `detect_format` accepts.

    Returns:
        A `CheckpointReader` (use it as a context manager, or call `close()`).

    Raises:
        CheckpointError: unknown format, damaged file, or a Keras weights file (those are loaded
            with ``model.load_weights`` instead).
    """
    fmt, resolved = detect_format(path)
    if fmt == "tf":
        from .tf_bundle import TFCheckpointReader

        return TFCheckpointReader(resolved)
    if fmt == "safetensors":
        from .safetensors_format import SafetensorsReader

        return SafetensorsReader(resolved)
    if fmt == "torch":
        from .torch_format import TorchReader

        return TorchReader(resolved)
    raise CheckpointError(
        f"{resolved} is a Keras weights file: keras weights are loaded through the model "
        f"(model.load_weights({resolved!r})), not read tensor by tensor"
    )


def save_checkpoint(
    tensors: dict,
    path: str | os.PathLike,
    format: str | None = None,
    max_shard_size=None,
) -> str:
    """Writes a dict of arrays as a checkpoint.

    An existing checkpoint at `path` is replaced crash-safely: whenever the process dies,
    the old or the new checkpoint loads, complete (see `kerasformers.checkpoints.atomic`).

    Args:
        tensors: Mapping of tensor name to numpy array (or anything `np.asarray` accepts).
        path: For ``"tf"`` the prefix (``out/model.ckpt`` gives ``.index`` and
            ``.data-00000-of-00001`` next to a ``checkpoint`` state file); for
            ``"safetensors"`` the file name. A directory (an existing one, or a path
            ending in a separator) gets ``model.ckpt`` / ``model.safetensors`` inside
            it, which `detect_format` finds in that directory.
            A safetensors set larger than `max_shard_size` is written as Hugging Face
            shards named after the file (``model-00001-of-00002.safetensors`` ...) with
            ``model.safetensors.index.json``; the path may also name that index.
        format: ``"tf"`` or ``"safetensors"``. If None, ``"safetensors"`` when the path ends in
            ``.safetensors`` or ``.safetensors.index.json``, otherwise ``"tf"``.
        max_shard_size: safetensors only: the largest file to write, in bytes or as a string
            (``"2GB"``, ``"500MiB"``); default "5GB" (see
            `kerasformers.checkpoints.safetensors_writer`).

    Returns:
        The path written (for TensorFlow, the prefix; for a sharded set, its index).
    """
    path = os.fspath(path)
    if format is None:
        format = (
            "safetensors" if path.endswith((".safetensors", ".safetensors.index.json")) else "tf"
        )
    if format in DEFAULT_NAMES and (path.endswith(("/", os.sep)) or os.path.isdir(path)):
        # Into the directory, under the name its loader looks for first.
        path = os.path.join(path, DEFAULT_NAMES[format])
    if format == "tf":
        if max_shard_size is not None:
            raise CheckpointError(
                f"cannot save {path}: max_shard_size applies to safetensors only (a "
                "TensorFlow checkpoint is one data file)"
            )
        if path.endswith((".safetensors", ".index", ".bin", ".h5", ".json")):
            raise CheckpointError(
                f"cannot save a TensorFlow checkpoint with prefix {path}: pass the prefix "
                "(e.g. out/model.ckpt), not a file name of another format"
            )
        from .tf_bundle import write_tf_checkpoint

        return write_tf_checkpoint(tensors, path)
    if format == "safetensors":
        from .safetensors_writer import write_safetensors

        return write_safetensors(tensors, path, max_shard_size=max_shard_size)
    raise CheckpointError(
        f"cannot save {path}: unknown format {format!r}; use 'tf' or 'safetensors'"
    )
