"""ALBERT, and ALBERT with its weight sharing undone for fine-tuning.

Reference:
    ALBERT: https://arxiv.org/abs/1909.11942
    Unsharing for fine-tuning: https://kexue.fm/archives/7846 (bert4keras' ALBERT_Unshared)
"""

import keras
import numpy as np

from kerasformers.models.bert import BERT
from kerasformers.models.naming import (
    google_attention,
    google_feed_forward,
    google_norm,
    hf_attention,
    hf_feed_forward,
    hf_linear,
    hf_norm,
    named_block,
)

_GOOGLE_BLOCK = "bert/encoder/transformer/group_0/inner_group_0/"
_HF_BLOCK = "encoder.albert_layer_groups.0.albert_layers.0."


class ALBERT(BERT):
    """ALBERT: factorised embedding (embedding_size -> hidden) and one shared block.

    Every block reuses the layers named "Transformer-MultiHeadSelfAttention",
    "Transformer-FeedForward", ... (no index). `with_nsp` is ALBERT's sentence-order
    head. Only the released layout is supported: one layer group holding one layer.

    Args:
        num_hidden_groups: ALBERT's number of layer groups (must be 1).
        inner_group_num: layers per group (must be 1).
        **kwargs: the `BERT` arguments.
    """

    hf_prefix = "albert."
    body_prefixes = BERT.body_prefixes
    hf_model_type = "albert"
    hf_architectures = {
        (False, False): "AlbertModel",
        (False, True): "AlbertForMaskedLM",
        (True, True): "AlbertForPreTraining",
    }
    google_config_file = "albert_config.json"

    def __init__(self, num_hidden_groups=1, inner_group_num=1, **kwargs):
        if num_hidden_groups != 1 or inner_group_num != 1:
            raise ValueError(
                "ALBERT: only num_hidden_groups=1 and inner_group_num=1 are supported (the "
                f"released models), got {num_hidden_groups} and {inner_group_num}"
            )
        super().__init__(**kwargs)
        self.num_hidden_groups = num_hidden_groups
        self.inner_group_num = inner_group_num

    def config_arguments(self):
        return {
            **super().config_arguments(),
            "embedding_size": self.embedding_size,  # ALBERT's configs always say it
            "num_hidden_groups": self.num_hidden_groups,
            "inner_group_num": self.inner_group_num,
        }

    def block_name(self, index):
        return "Transformer"

    def block_mapping(self):
        """Google names of the shared block, keyed by the layer-name suffix."""
        b = _GOOGLE_BLOCK
        return {
            "MultiHeadSelfAttention": google_attention(b + "attention_1/"),
            "MultiHeadSelfAttention-Norm": google_norm(b + "LayerNorm"),
            "FeedForward": google_feed_forward(
                b + "ffn_1/intermediate/dense", b + "ffn_1/intermediate/output/dense"
            ),
            "FeedForward-Norm": google_norm(b + "LayerNorm_1"),
        }

    def hf_block_mapping(self):
        """HF names of the shared block, keyed by the layer-name suffix."""
        b = self.hf_prefix + _HF_BLOCK
        return {
            "MultiHeadSelfAttention": hf_attention(
                b + "attention.query",
                b + "attention.key",
                b + "attention.value",
                b + "attention.dense",
            ),
            "MultiHeadSelfAttention-Norm": hf_norm(b + "attention.LayerNorm"),
            "FeedForward": hf_feed_forward(b + "ffn", b + "ffn_output"),
            "FeedForward-Norm": hf_norm(b + "full_layer_layer_norm"),
        }

    def _with_blocks(self, mapping, block):
        """`mapping` with its per-layer blocks replaced by the (shared) `block`."""
        mapping = {k: v for k, v in mapping.items() if not k.startswith("Transformer-")}
        for index in range(self.num_hidden_layers):
            mapping.update(named_block(self.block_name(index), block))
        return mapping

    def variable_mapping(self):
        return self._with_blocks(super().variable_mapping(), self.block_mapping())

    def hf_variable_mapping(self):
        p = self.hf_prefix
        mapping = super().hf_variable_mapping()
        mapping["Embedding-Mapping"] = hf_linear(f"{p}encoder.embedding_hidden_mapping_in")
        mapping["Pooler-Dense"] = hf_linear(f"{p}pooler")
        mapping["NSP-Proba"] = hf_linear("sop_classifier.classifier")
        mapping["MLM-Dense"] = hf_linear("predictions.dense")
        mapping["MLM-Norm"] = hf_norm("predictions.LayerNorm")
        mapping["MLM-Bias"] = {"bias": ("predictions.bias", "embeddings")}
        return self._with_blocks(mapping, self.hf_block_mapping())


class ALBERT_Unshared(ALBERT):
    """ALBERT's checkpoint poured into independent per-layer copies of its block.

    Before training the outputs equal ALBERT's; fine-tuning then updates each
    layer on its own, which kexue.fm found to help on downstream tasks. Saving
    back to ALBERT's (shared) names works only while all copies are still equal.
    """

    def block_name(self, index):
        return BERT.block_name(self, index)

    def save_weights_as_checkpoint(self, filename, mapping=None, **options):
        if mapping is None:
            self._check_still_shared()
        return super().save_weights_as_checkpoint(filename, mapping, **options)

    def _check_still_shared(self):
        first = self._block_weights(0)
        for index in range(1, self.num_hidden_layers):
            for (_, a), (path, b) in zip(first, self._block_weights(index), strict=True):
                if not np.array_equal(a, b):
                    raise ValueError(
                        f"albert_unshared: {path} no longer equals layer 0's copy, so the "
                        "model cannot be written under ALBERT's shared names; pass a "
                        "`mapping` with one name per layer (e.g. BERT's) instead"
                    )

    def _block_weights(self, index):
        """[(path, value)] of block `index`'s weights, in mapping order."""
        stem = self.prefix + self.block_name(index)
        return [
            (v.path, keras.ops.convert_to_numpy(v))
            for suffix in self.block_mapping()
            for v in self.layers[f"{stem}-{suffix}"].weights
        ]
