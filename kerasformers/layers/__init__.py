"""Keras layers of kerasformers (bert4keras' `bert4keras.layers`)."""

from kerasformers.layers.attention import (
    LlamaAttention,
    MultiHeadAttention,
    RotaryAttention,
    TypicalRelativeAttention,
)
from kerasformers.layers.core import BiasAdd, OutputActivation, Scale, TakePosition
from kerasformers.layers.crf import ConditionalRandomField, MaximumEntropyMarkovModel
from kerasformers.layers.embeddings import Embedding
from kerasformers.layers.feedforward import FeedForward
from kerasformers.layers.global_pointer import EfficientGlobalPointer, GlobalPointer
from kerasformers.layers.loss import Loss
from kerasformers.layers.normalization import LayerNormalization
from kerasformers.layers.pooling import (
    Concatenate1D,
    GlobalAveragePooling1D,
    GlobalMaxPooling1D,
)
from kerasformers.layers.positions import (
    PositionEmbedding,
    RelativePositionEmbedding,
    RelativePositionEmbeddingT5,
    SinusoidalPositionEmbedding,
    t5_relative_position_bucket,
)
from kerasformers.layers.rope import RotaryEmbedding, rotate_half

__all__ = [
    "BiasAdd",
    "Concatenate1D",
    "ConditionalRandomField",
    "EfficientGlobalPointer",
    "Embedding",
    "FeedForward",
    "GlobalAveragePooling1D",
    "GlobalMaxPooling1D",
    "GlobalPointer",
    "LayerNormalization",
    "LlamaAttention",
    "Loss",
    "MaximumEntropyMarkovModel",
    "MultiHeadAttention",
    "OutputActivation",
    "PositionEmbedding",
    "RelativePositionEmbedding",
    "RelativePositionEmbeddingT5",
    "RotaryAttention",
    "RotaryEmbedding",
    "Scale",
    "SinusoidalPositionEmbedding",
    "TakePosition",
    "TypicalRelativeAttention",
    "rotate_half",
    "t5_relative_position_bucket",
]
