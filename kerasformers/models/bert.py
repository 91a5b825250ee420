"""BERT and RoBERTa.

Reference:
    BERT: https://arxiv.org/abs/1810.04805
    RoBERTa: https://arxiv.org/abs/1907.11692
"""

import keras
import numpy as np

from kerasformers.layers import (
    BiasAdd,
    Embedding,
    LayerNormalization,
    OutputActivation,
    TakePosition,
)
from kerasformers.models.config import export_config
from kerasformers.models.naming import (
    google_bert_block,
    google_bert_embeddings,
    google_dense,
    google_norm,
    hf_bert_block,
    hf_bert_embeddings,
    hf_linear,
    hf_norm,
    named_block,
)
from kerasformers.models.sequence import SequenceModel


class BERT(SequenceModel):
    """BERT: token + segment + absolute position embeddings, post-LN blocks.

    Args:
        with_pool: add the pooler (True = tanh, or an activation name).
        with_nsp: add the next-sentence head (implies with_pool; True = softmax).
        with_mlm: add the masked-LM head tied to the token embedding (True =
            softmax, "linear" = logits, or another activation name).
        **kwargs: the `SequenceModel` arguments (max_position, segment_vocab_size,
            hierarchical_position, custom_position_ids, shared_segment_embeddings,
            residual_attention_scores) and the `Transformer` ones.
    """

    # The LM head's final activation, left out when generating (logits wanted).
    lm_activation_layer = "MLM-Activation"

    hf_prefix = "bert."
    body_prefixes = ("bert/embeddings/", "bert/encoder/", "embeddings.", "encoder.")

    def __init__(self, with_pool=False, with_nsp=False, with_mlm=False, **kwargs):
        super().__init__(**kwargs)
        self.with_pool = with_pool or bool(with_nsp)
        self.with_nsp = with_nsp
        self.with_mlm = with_mlm

    def apply_embeddings(self, inputs):
        x = self.sum_embeddings(inputs)
        x = self.apply(x, LayerNormalization, **self.norm_arguments(), name="Embedding-Norm")
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name="Embedding-Dropout")
        if self.embedding_size != self.hidden_size:
            x = self.apply(
                x,
                keras.layers.Dense,
                units=self.hidden_size,
                kernel_initializer=self.initializer,
                name="Embedding-Mapping",
            )
        return x

    def apply_final_layers(self, inputs):
        """Sequence output alone, or the requested heads (bert4keras' output rule)."""
        outputs = [inputs]
        if self.with_pool:
            x = self.apply(inputs, TakePosition, index=0, name="Pooler")
            x = self.apply(
                x,
                keras.layers.Dense,
                units=self.hidden_size,
                activation="tanh" if self.with_pool is True else self.with_pool,
                kernel_initializer=self.initializer,
                name="Pooler-Dense",
            )
            if self.with_nsp:
                x = self.apply(
                    x,
                    keras.layers.Dense,
                    units=2,
                    activation="softmax" if self.with_nsp is True else self.with_nsp,
                    kernel_initializer=self.initializer,
                    name="NSP-Proba",
                )
            outputs.append(x)
        if self.with_mlm:
            x = self.apply(
                inputs,
                keras.layers.Dense,
                units=self.embedding_size,
                activation=self.activation,
                kernel_initializer=self.initializer,
                name="MLM-Dense",
            )
            x = self.apply(x, LayerNormalization, epsilon=self.layer_norm_epsilon, name="MLM-Norm")
            x = self.apply(x, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
            x = self.apply(x, BiasAdd, name="MLM-Bias")
            x = self.apply(
                x,
                OutputActivation,
                activation="softmax" if self.with_mlm is True else self.with_mlm,
                name="MLM-Activation",
            )
            outputs.append(x)
        if len(outputs) == 1:
            return outputs[0]
        if len(outputs) == 2:
            return outputs[1]
        return outputs[1:]

    # HF model_type and architecture (by the heads held: (with_nsp, with_mlm)) that
    # `hf_config` records; families without an HF class set hf_model_type = None.
    hf_model_type = "bert"
    hf_architectures = {
        (False, False): "BertModel",
        (True, False): "BertForNextSentencePrediction",
        (False, True): "BertForMaskedLM",
        (True, True): "BertForPreTraining",
    }

    def hf_config(self):
        """The HF `config.json` dict (transformers' `from_pretrained` reads it with the
        weights `save_weights_as_checkpoint(..., format="safetensors")` writes)."""
        if self.hf_model_type is None:
            return super().hf_config()
        config = export_config(self.config_arguments(), "bert", model_type=self.hf_model_type)
        heads = (bool(self.with_nsp), bool(self.with_mlm))
        config["architectures"] = [
            self.hf_architectures.get(heads, self.hf_architectures[False, False])
        ]
        return config

    def variable_mapping(self):
        """Google BERT checkpoint names (bert4keras' mapping)."""
        mapping = google_bert_embeddings("bert/embeddings/")
        mapping["Embedding-Mapping"] = google_dense("bert/encoder/embedding_hidden_mapping_in")
        for i in range(self.num_hidden_layers):
            block = google_bert_block(f"bert/encoder/layer_{i}/")
            mapping.update(named_block(f"Transformer-{i}", block))
        mapping["Pooler-Dense"] = google_dense("bert/pooler/dense")
        mapping["NSP-Proba"] = {
            "kernel": ("cls/seq_relationship/output_weights", "transpose"),
            "bias": "cls/seq_relationship/output_bias",
        }
        mapping["MLM-Dense"] = google_dense("cls/predictions/transform/dense")
        mapping["MLM-Norm"] = google_norm("cls/predictions/transform/LayerNorm")
        mapping["MLM-Bias"] = {"bias": ("cls/predictions/output_bias", "embeddings")}
        return mapping

    def hf_variable_mapping(self):
        """HF transformers names (BertForPreTraining; the "bert." prefix is optional)."""
        p = self.hf_prefix
        mapping = hf_bert_embeddings(f"{p}embeddings.")
        for i in range(self.num_hidden_layers):
            mapping.update(named_block(f"Transformer-{i}", hf_bert_block(f"{p}encoder.layer.{i}.")))
        mapping["Pooler-Dense"] = hf_linear(f"{p}pooler.dense")
        mapping["NSP-Proba"] = hf_linear("cls.seq_relationship")
        mapping["MLM-Dense"] = hf_linear("cls.predictions.transform.dense")
        mapping["MLM-Norm"] = hf_norm("cls.predictions.transform.LayerNorm")
        mapping["MLM-Bias"] = {"bias": ("cls.predictions.bias", "embeddings")}
        return mapping


class RoBERTa(BERT):
    """RoBERTa: BERT's architecture, loaded from Google-style or HF RoBERTa names.

    Google-style names (e.g. the Chinese RoBERTa-wwm releases) are BERT's. HF's
    RoBERTa numbers positions from `padding_idx + 1 = 2`, so its position table
    loses its first two rows on load (and gets two zero rows back on save) and
    our positions 0..n-1 line up with HF's 2..n+1 for unpadded or right-padded
    input.
    """

    hf_prefix = "roberta."
    body_prefixes = BERT.body_prefixes
    # HF RoBERTa's position offset: padding_idx (its pad id, 1) + 1.
    hf_position_offset = 2
    hf_model_type = "roberta"
    hf_architectures = {(False, False): "RobertaModel", (False, True): "RobertaForMaskedLM"}

    def hf_config(self):
        if self.pad_token_id + 1 != self.hf_position_offset:
            # HF RoBERTa numbers positions from pad_token_id + 1; our table lines up
            # with HF's from row 2 only.
            raise ValueError(
                f"HF RoBERTa numbers positions from pad_token_id + 1, and this model's "
                f"pad_token_id is {self.pad_token_id}, not {self.hf_position_offset - 1}: "
                "its positions would be off by one in transformers. Google-named RoBERTa "
                "releases (e.g. the Chinese RoBERTa-wwm) are BERT checkpoints: convert them "
                "with model bert"
            )
        return super().hf_config()

    def load_roberta_positions(self, value):
        return value[self.hf_position_offset :]

    def save_roberta_positions(self, value):
        pad = np.zeros((self.hf_position_offset, value.shape[1]), value.dtype)
        return np.concatenate([pad, value], axis=0)

    def hf_variable_mapping(self):
        mapping = super().hf_variable_mapping()
        p = self.hf_prefix
        mapping["Embedding-Position"] = {
            "embeddings": (f"{p}embeddings.position_embeddings.weight", "roberta_positions")
        }
        mapping["MLM-Dense"] = hf_linear("lm_head.dense")
        mapping["MLM-Norm"] = hf_norm("lm_head.layer_norm")
        mapping["MLM-Bias"] = {"bias": ("lm_head.bias", "embeddings")}
        del mapping["NSP-Proba"]  # HF RoBERTa has no next-sentence head
        return mapping
