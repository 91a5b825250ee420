"""Keras layers of kerasformers (bert4keras' `bert4keras.layers`)."""

from kerasformers.layers.attention import MultiHeadAttention
from kerasformers.layers.core import BiasAdd, TakePosition
from kerasformers.layers.embeddings import (
    Embedding,
    PositionEmbedding,
    SinusoidalPositionEmbedding,
)
from kerasformers.layers.feedforward import FeedForward
from kerasformers.layers.normalization import LayerNormalization

__all__ = [
    "BiasAdd",
    "Embedding",
    "FeedForward",
    "LayerNormalization",
    "MultiHeadAttention",
    "PositionEmbedding",
    "SinusoidalPositionEmbedding",
    "TakePosition",
]
