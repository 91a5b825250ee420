"""Sentence embeddings from an encoder: CLS or mean pooling, L2-normalised."""

import threading

import numpy as np
from keras import ops

from kerasformers.backend import compiles_per_shape

CHUNK = 32  # texts per forward pass
BUCKET = 16


class Embedder:
    """Embeds texts with the served encoder, one forward pass per chunk.

    Args:
        served: the `ServedModel` (kind "embedding").
        bucket: round the batch up to a power of two and the length to a
            multiple of `BUCKET` (default: where the backend compiles per shape).
    """

    def __init__(self, served, bucket=None):
        self.served = served
        self.bucket = compiles_per_shape() if bucket is None else bool(bucket)
        self._lock = threading.Lock()

    def embed(self, texts):
        """(vectors (n, hidden) float32 with unit norms, number of tokens read)."""
        served = self.served
        rows = [served.tokenizer.encode(text)[0] for text in texts]
        for i, ids in enumerate(rows):
            if served.context is not None and len(ids) > served.context:
                raise ValueError(
                    f"input {i} has {len(ids)} tokens, more than the model's context of "
                    f"{served.context}"
                )
        out = []
        with self._lock:
            for start in range(0, len(rows), CHUNK):
                out.append(self._pooled(rows[start : start + CHUNK]))
        vectors = np.concatenate(out, axis=0)
        norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12), sum(len(r) for r in rows)

    def _pooled(self, rows):
        width = max(len(r) for r in rows)
        count = len(rows)
        if self.bucket:
            width = -(-width // BUCKET) * BUCKET
            if self.served.context is not None:
                width = min(width, self.served.context)
            count = 1 << (count - 1).bit_length()
        ids = np.zeros((count, width), "int32")
        mask = np.zeros((count, width), "float32")
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1.0
        model = self.served.model
        inputs = [ids, np.zeros_like(ids)][: len(model.inputs)]
        hidden = model.predict_on_batch(inputs)
        if isinstance(hidden, (list, tuple)):
            hidden = hidden[0]
        hidden = np.asarray(ops.convert_to_numpy(hidden), dtype="float32")[: len(rows)]
        mask = mask[: len(rows), :, None]
        if self.served.pooling == "cls":
            return hidden[:, 0]
        return (hidden * mask).sum(axis=1) / mask.sum(axis=1)
