"""Writes ``mixed.ckpt`` (two shards) in this folder with real TensorFlow.

The checkpoint holds every dtype the pure-numpy reader supports, a scalar, zero-size tensors,
string tensors and a non-ASCII name, written by ``tf.raw_ops.SaveV2`` into two bundles merged
with ``tf.raw_ops.MergeV2Checkpoints`` (what a sharded Saver does). The tests read it back and
check that our writer reproduces it byte for byte. Regenerate (TensorFlow needed, e.g. in a
throwaway venv) with::

    python tests/data/tf_written/mixed_dtypes/make_mixed_dtypes.py

`mixed_tensors()` is also imported by the tests: values are built deterministically, no RNG.
"""

import os
import tempfile

import ml_dtypes
import numpy as np


def mixed_tensors() -> dict:
    """The tensors stored in mixed.ckpt."""
    return {
        "bf16": np.linspace(-3, 3, 30, dtype=np.float32)
        .reshape(2, 3, 5)
        .astype(ml_dtypes.bfloat16),
        "bool": (np.arange(10) % 3 == 0).reshape(5, 2),
        "c64": (np.arange(3) + 1j * np.arange(3, 6)).astype(np.complex64),
        "empty_strings": np.zeros((0,), dtype=object),
        "f16": np.linspace(-1, 1, 143, dtype=np.float32).astype(np.float16).reshape(11, 13),
        "f32/odd": (np.arange(105, dtype=np.float32) / 7 - 5).reshape(3, 5, 7),
        "f64": np.linspace(-2, 2, 8).reshape(4, 1, 2),
        "global_step": np.array(12345, np.int64),
        "i16": (np.arange(9, dtype=np.int16) * 1000 - 4000).reshape(3, 3),
        "i32": np.arange(6, dtype=np.int32) * 300_000_000 - 900_000_000,
        "i64": np.arange(17, dtype=np.int64) * 2**58 - 2**62,
        "i8": np.arange(-128, 127, 29, dtype=np.int8),
        "scalar": np.array(3.25, np.float32),
        "string_scalar": np.array(b"abc", dtype=object),
        "strings": np.array(
            [b"hello", b"", "w\u00f6rld".encode(), b"x" * 300], dtype=object
        ).reshape(2, 2),
        "u16": np.arange(4, dtype=np.uint16) * 20000,
        "u8": np.arange(0, 255, 28, dtype=np.uint8),
        "unicode/\u4e2d\u6587": np.ones(2, np.float32),
        "zero_size": np.zeros((0, 4), np.float32),
    }


def main() -> None:
    import tensorflow as tf

    def as_tf(value):
        if value.dtype == ml_dtypes.bfloat16:
            return tf.constant(value.astype(np.float32), dtype=tf.bfloat16)
        if value.dtype == object:
            if not value.size:
                return tf.zeros(value.shape, tf.string)
            return tf.constant(value.astype(bytes) if value.ndim else value.item(), tf.string)
        return tf.constant(value)

    tensors = mixed_tensors()
    names = sorted(tensors)
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as tmp:
        parts = []
        for shard in range(2):
            part = os.path.join(tmp, f"part{shard}", "mixed.ckpt")
            chosen = names[shard::2]
            tf.raw_ops.SaveV2(
                prefix=part,
                tensor_names=chosen,
                shape_and_slices=[""] * len(chosen),
                tensors=[as_tf(tensors[n]) for n in chosen],
            )
            parts.append(part)
        tf.raw_ops.MergeV2Checkpoints(
            checkpoint_prefixes=parts,
            destination_prefix=os.path.join(here, "mixed.ckpt"),
            delete_old_dirs=False,
        )
    print("wrote", os.path.join(here, "mixed.ckpt"), "with TensorFlow", tf.__version__)


if __name__ == "__main__":
    main()
