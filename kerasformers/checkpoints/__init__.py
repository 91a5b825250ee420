"""Checkpoint file formats: readers and writers that know nothing about models.

Formats: TensorFlow checkpoints (TensorBundle V2, read and written in pure Python + numpy),
safetensors (single and sharded), PyTorch state dicts (read only, ``weights_only=True``), and
Keras ``*.weights.h5`` (recognised only: those are loaded with ``model.load_weights``).

Example:
    >>> with open_checkpoint("downloads/model.ckpt") as reader:
    ...     for name in reader.names():
    ...         array = reader.get(name)  # read lazily, checksum verified
"""

from .base import CheckpointError, CheckpointReader, MissingTensorError
from .crc import crc32c, masked_crc32c
from .detect import FORMATS, detect_format, open_checkpoint, save_checkpoint

__all__ = [
    "CheckpointError",
    "CheckpointReader",
    "MissingTensorError",
    "FORMATS",
    "crc32c",
    "detect_format",
    "masked_crc32c",
    "open_checkpoint",
    "save_checkpoint",
]
