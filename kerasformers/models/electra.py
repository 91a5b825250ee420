"""ELECTRA: BERT's encoder under "electra/" names, with the replaced-token discriminator.

Reference:
    https://arxiv.org/abs/2003.10555
"""

import keras

from kerasformers.backend import get_activation
from kerasformers.models.bert import BERT
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


class ELECTRA(BERT):
    """ELECTRA's encoder, optionally with its discriminator or generator head.

    `with_discriminator` adds "Discriminator-Dense" (hidden_act) and
    "Discriminator-Prediction" (one unit; True = sigmoid probability that a token
    was replaced, or an activation name such as "linear" for logits).
    `with_mlm` adds the generator's MLM head (dense + GELU + LayerNorm + tied
    embedding + bias), loaded from the generator_predictions / generator_lm_head
    tensors. Both heads together return [discriminator, mlm]. ELECTRA has no pooler.

    Args:
        with_discriminator: add the discriminator head.
        **kwargs: the `BERT` arguments (no with_pool / with_nsp).
    """

    hf_prefix = "electra."
    body_prefixes = ("electra/embeddings/", "electra/encoder/", "embeddings.", "encoder.")
    hf_model_type = "electra"

    def __init__(self, with_discriminator=False, with_pool=False, with_nsp=False, **kwargs):
        if with_pool or with_nsp:
            raise ValueError("ELECTRA has no pooler or NSP head (with_pool / with_nsp)")
        super().__init__(**kwargs)
        self.with_discriminator = with_discriminator
        # The generator's prediction head uses GELU whatever hidden_act is.
        self.activation = get_activation("gelu")

    def apply_final_layers(self, inputs):
        outputs = super().apply_final_layers(inputs)
        if not self.with_discriminator:
            return outputs
        x = self.apply(
            inputs,
            keras.layers.Dense,
            units=self.hidden_size,
            activation=get_activation(self.hidden_act),
            kernel_initializer=self.initializer,
            name="Discriminator-Dense",
        )
        x = self.apply(
            x,
            keras.layers.Dense,
            units=1,
            activation="sigmoid" if self.with_discriminator is True else self.with_discriminator,
            kernel_initializer=self.initializer,
            name="Discriminator-Prediction",
        )
        return [x, outputs] if self.with_mlm else x

    def hf_config(self):
        config = super().hf_config()
        # One HF class per head: the discriminator's, else the generator's.
        if self.with_discriminator:
            config["architectures"] = ["ElectraForPreTraining"]
        else:
            config["architectures"] = ["ElectraForMaskedLM" if self.with_mlm else "ElectraModel"]
        return config

    def variable_mapping(self):
        """Google ELECTRA names (bert4keras' mapping): the encoder under "electra/",
        the heads under "generator_predictions/" and "discriminator_predictions/"."""
        mapping = google_bert_embeddings("electra/embeddings/")
        mapping["Embedding-Mapping"] = google_dense("electra/embeddings_project")
        for i in range(self.num_hidden_layers):
            block = google_bert_block(f"electra/encoder/layer_{i}/")
            mapping.update(named_block(f"Transformer-{i}", block))
        mapping["MLM-Dense"] = google_dense("generator_predictions/dense")
        mapping["MLM-Norm"] = google_norm("generator_predictions/LayerNorm")
        mapping["MLM-Bias"] = {"bias": ("generator_predictions/output_bias", "embeddings")}
        mapping["Discriminator-Dense"] = google_dense("discriminator_predictions/dense")
        # Google's own name; HF's conversion renames it "dense_prediction".
        mapping["Discriminator-Prediction"] = google_dense("discriminator_predictions/dense_1")
        return mapping

    def hf_variable_mapping(self):
        """HF ElectraForPreTraining / ElectraForMaskedLM names ("electra." is optional)."""
        p = self.hf_prefix
        mapping = hf_bert_embeddings(f"{p}embeddings.")
        mapping["Embedding-Mapping"] = hf_linear(f"{p}embeddings_project")
        for i in range(self.num_hidden_layers):
            mapping.update(named_block(f"Transformer-{i}", hf_bert_block(f"{p}encoder.layer.{i}.")))
        mapping["MLM-Dense"] = hf_linear("generator_predictions.dense")
        mapping["MLM-Norm"] = hf_norm("generator_predictions.LayerNorm")
        mapping["MLM-Bias"] = {"bias": ("generator_lm_head.bias", "embeddings")}
        mapping["Discriminator-Dense"] = hf_linear("discriminator_predictions.dense")
        mapping["Discriminator-Prediction"] = hf_linear(
            "discriminator_predictions.dense_prediction"
        )
        return mapping
