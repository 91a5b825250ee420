"""RoFormer (rotary position embeddings) and RoFormer-v2.

Reference:
    RoFormer: https://arxiv.org/abs/2104.09864 (https://kexue.fm/archives/8265)
    RoFormer-v2: https://kexue.fm/archives/8998
"""

import keras

from kerasformers.layers import (
    Embedding,
    LayerNormalization,
    OutputActivation,
    RotaryAttention,
    SinusoidalPositionEmbedding,
)
from kerasformers.models.naming import (
    google_bert_block,
    google_bert_embeddings,
    google_dense,
    hf_bert_block,
    hf_bert_embeddings,
    hf_linear,
    named_block,
)
from kerasformers.models.nezha import NEZHA
from kerasformers.models.transformer import Transformer


class RoFormer(NEZHA):
    """RoFormer: BERT whose attention rotates queries and keys by their positions.

    Google-style names are BERT's without position embeddings (the Chinese
    RoFormer release); HF names are RoFormer's ("roformer." prefix).

    Args:
        rotary_value: HF's option to rotate values too; not supported (False).
        **kwargs: the `NEZHA` / `BERT` arguments; custom_position_ids feeds
            "Input-Position" to the rotation.
    """

    attention_layer = RotaryAttention
    hf_prefix = "roformer."
    hf_model_type = "roformer"
    hf_architectures = {(False, False): "RoFormerModel", (False, True): "RoFormerForMaskedLM"}
    ignored_variable_patterns = Transformer.ignored_variable_patterns + (
        r"(^|\.)embed_positions\.weight$",
    )

    def __init__(self, rotary_value=False, **kwargs):
        if rotary_value:
            raise ValueError("RoFormer: rotary_value=True (rotating values) is not supported")
        super().__init__(**kwargs)

    @classmethod
    def accepts_position_ids(cls, option):
        return option == "custom_position_ids"

    def config_arguments(self):
        arguments = super().config_arguments()
        del arguments["max_relative_position"]  # NEZHA's, unused here
        # HF sizes its sinusoidal table by it; any length works here.
        arguments["max_position"] = self.max_position or 512
        return arguments

    def compute_position_bias(self, inputs):
        p = self.position_ids
        # (1|batch, seq, key_size) interleaved sin/cos table
        return self.apply(
            [inputs, p] if p is not None else inputs,
            SinusoidalPositionEmbedding,
            output_dim=self.attention_key_size,
            merge_mode="zero",
            custom_position_ids=p is not None,
            name="Embedding-Rotary-Position",
        )

    def hf_variable_mapping(self):
        mapping = super().hf_variable_mapping()
        mapping["Embedding-Mapping"] = hf_linear(f"{self.hf_prefix}embeddings_project")
        return mapping


class RoFormerV2(RoFormer):
    """RoFormer-v2: RoFormer without biases and with parameter-free RMS norms.

    Embeddings are token (+ segment) -> dropout -> norm; the MLM head is the tied
    embedding alone (after an "Output-Mapping" when embedding_size differs). No
    pooler or NSP head exists in its checkpoints.
    """

    use_bias = False
    hf_model_type = None  # no HF implementation

    def __init__(self, with_pool=False, with_nsp=False, **kwargs):
        if with_pool or with_nsp:
            raise ValueError("RoFormer-v2 has no pooler or NSP head (with_pool / with_nsp)")
        super().__init__(**kwargs)

    def norm_arguments(self):
        return {
            "epsilon": self.layer_norm_epsilon,
            "zero_mean": False,
            "center": False,
            "scale": False,
        }

    def apply_embeddings(self, inputs):
        x = self.sum_embeddings(inputs)  # token (+ segment); no absolute positions
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name="Embedding-Dropout")
        x = self.apply(x, LayerNormalization, **self.norm_arguments(), name="Embedding-Norm")
        if self.embedding_size != self.hidden_size:
            x = self.apply(
                x,
                keras.layers.Dense,
                units=self.hidden_size,
                use_bias=False,
                kernel_initializer=self.initializer,
                name="Embedding-Mapping",
            )
        return x

    def apply_final_layers(self, inputs):
        if not self.with_mlm:
            return inputs
        x = inputs
        if self.embedding_size != self.hidden_size:
            x = self.apply(
                x,
                keras.layers.Dense,
                units=self.embedding_size,
                use_bias=False,
                kernel_initializer=self.initializer,
                name="Output-Mapping",
            )
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name="Output-MLM-Dropout")
        x = self.apply(x, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
        return self.apply(
            x,
            OutputActivation,
            activation="softmax" if self.with_mlm is True else self.with_mlm,
            name="Output-MLM-Activation",
        )

    def variable_mapping(self):
        """bert4keras' RoFormer-v2 names: BERT's scopes, no biases, no norm parameters."""
        mapping = google_bert_embeddings("bert/embeddings/", position=False, norm=False)
        mapping["Embedding-Mapping"] = google_dense(
            "bert/encoder/embedding_hidden_mapping_in", bias=False
        )
        for i in range(self.num_hidden_layers):
            block = google_bert_block(f"bert/encoder/layer_{i}/", bias=False, norms=False)
            mapping.update(named_block(f"Transformer-{i}", block))
        mapping["Output-Mapping"] = google_dense("cls/predictions/transform/dense", bias=False)
        return mapping

    def hf_variable_mapping(self):
        """No HF implementation exists: RoFormer's HF scopes, no biases, no norm parameters."""
        p = self.hf_prefix
        mapping = hf_bert_embeddings(f"{p}embeddings.", position=False, norm=False)
        mapping["Embedding-Mapping"] = hf_linear(f"{p}embeddings_project", bias=False)
        for i in range(self.num_hidden_layers):
            block = hf_bert_block(f"{p}encoder.layer.{i}.", bias=False, norms=False)
            mapping.update(named_block(f"Transformer-{i}", block))
        mapping["Output-Mapping"] = hf_linear("cls.predictions.transform.dense", bias=False)
        return mapping
