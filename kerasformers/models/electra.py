"""ELECTRA: BERT's encoder under "electra/" names, with the replaced-token discriminator.

Reference:
    https://arxiv.org/abs/2003.10555
"""

import keras

from kerasformers.backend import get_activation
from kerasformers.models.bert import BERT, _hf_linear, _hf_norm


def _electra_names(name):
    return name.replace("bert/", "electra/", 1)


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

    def variable_mapping(self):
        mapping = {
            layer: [
                (_electra_names(e), None) if isinstance(e, str) else (_electra_names(e[0]), e[1])
                for e in entries
            ]
            for layer, entries in super().variable_mapping().items()
            if not layer.startswith(("Pooler", "NSP", "MLM"))
        }
        mapping.update(
            {
                "Embedding-Mapping": [
                    "electra/embeddings_project/kernel",
                    "electra/embeddings_project/bias",
                ],
                "MLM-Dense": [
                    "generator_predictions/dense/kernel",
                    "generator_predictions/dense/bias",
                ],
                "MLM-Norm": [
                    "generator_predictions/LayerNorm/beta",
                    "generator_predictions/LayerNorm/gamma",
                ],
                "MLM-Bias": [("generator_predictions/output_bias", "embeddings")],
                "Discriminator-Dense": [
                    "discriminator_predictions/dense/kernel",
                    "discriminator_predictions/dense/bias",
                ],
                "Discriminator-Prediction": [
                    "discriminator_predictions/dense_prediction/kernel",
                    "discriminator_predictions/dense_prediction/bias",
                ],
            }
        )
        return mapping

    def hf_variable_mapping(self):
        mapping = {
            layer: entries
            for layer, entries in super().hf_variable_mapping().items()
            if not layer.startswith(("Pooler", "NSP", "MLM"))
        }
        mapping.update(
            {
                "Embedding-Mapping": _hf_linear(f"{self.hf_prefix}embeddings_project"),
                "MLM-Dense": _hf_linear("generator_predictions.dense"),
                "MLM-Norm": _hf_norm("generator_predictions.LayerNorm"),
                "MLM-Bias": [("generator_lm_head.bias", "embeddings")],
                "Discriminator-Dense": _hf_linear("discriminator_predictions.dense"),
                "Discriminator-Prediction": _hf_linear(
                    "discriminator_predictions.dense_prediction"
                ),
            }
        )
        return mapping
