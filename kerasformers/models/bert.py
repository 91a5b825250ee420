"""BERT and RoBERTa.

Reference:
    BERT: https://arxiv.org/abs/1810.04805
    RoBERTa: https://arxiv.org/abs/1907.11692
"""

import keras
import numpy as np

from kerasformers.backend import get_activation
from kerasformers.layers import (
    BiasAdd,
    Embedding,
    FeedForward,
    LayerNormalization,
    MultiHeadAttention,
    PositionEmbedding,
    TakePosition,
)
from kerasformers.models.transformer import Transformer


def _hf_linear(name):
    """HF nn.Linear stores (out, in); Keras Dense stores (in, out)."""
    return [(f"{name}.weight", "transpose"), f"{name}.bias"]


def _hf_norm(name):
    return [f"{name}.bias", f"{name}.weight"]  # our order: beta, gamma


class BERT(Transformer):
    """BERT: token + segment + absolute position embeddings, post-LN blocks.

    Args:
        max_position: rows of the position table.
        segment_vocab_size: segment (token type) vocabulary; 0 drops the segment input.
        with_pool: add the pooler (True = tanh, or an activation name).
        with_nsp: add the next-sentence head (implies with_pool; True = softmax).
        with_mlm: add the masked-LM head tied to the token embedding (True =
            softmax, "linear" = logits, or another activation name).
        hierarchical_position: extend positions by hierarchical decomposition
            (True or the alpha), for inputs longer than max_position.
        custom_position_ids: take position ids as an extra input "Input-Position".
        shared_segment_embeddings: look segments up in the token table.
        residual_attention_scores: RealFormer: each layer adds the previous
            layer's attention logits to its own (https://arxiv.org/abs/2012.11747).
        **kwargs: the `Transformer` arguments.

    Families change BERT through hooks: `block_name` (layer sharing),
    `apply_position_embeddings` (absolute positions), `compute_position_bias`
    and `attention_layer` (relative / rotary positions), `norm_arguments` and
    `use_bias` (simplified norms, bias-free layers).
    """

    attention_layer = MultiHeadAttention
    use_bias = True
    # The LM head's final activation, left out when generating (logits wanted).
    lm_activation_layer = "MLM-Activation"

    hf_prefix = "bert."
    body_prefixes = ("bert/embeddings/", "bert/encoder/", "embeddings.", "encoder.")

    def __init__(
        self,
        max_position,
        segment_vocab_size=2,
        with_pool=False,
        with_nsp=False,
        with_mlm=False,
        hierarchical_position=None,
        custom_position_ids=False,
        shared_segment_embeddings=False,
        residual_attention_scores=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.max_position = max_position
        self.segment_vocab_size = segment_vocab_size or 0
        self.with_pool = with_pool or bool(with_nsp)
        self.with_nsp = with_nsp
        self.with_mlm = with_mlm
        self.hierarchical_position = hierarchical_position
        self.custom_position_ids = custom_position_ids
        self.shared_segment_embeddings = shared_segment_embeddings
        self.residual_attention_scores = residual_attention_scores
        self.position_ids = None  # the Input-Position tensor, if any
        self.position_bias = None  # relative / rotary position table, built once
        self.attention_scores = None  # RealFormer: logits of the previous layer
        self.activation = get_activation(self.hidden_act)  # fail early on a bad name

    def get_inputs(self):
        shape = (self.sequence_length,)
        inputs = [keras.Input(shape=shape, dtype="int32", name=self.prefix + "Input-Token")]
        if self.segment_vocab_size > 0:
            inputs.append(
                keras.Input(shape=shape, dtype="int32", name=self.prefix + "Input-Segment")
            )
        if self.custom_position_ids:
            inputs.append(
                keras.Input(shape=shape, dtype="int32", name=self.prefix + "Input-Position")
            )
        return inputs

    def sum_embeddings(self, inputs):
        """Token (+ segment) + position embeddings, before any norm or dropout."""
        inputs = list(inputs)
        x = inputs.pop(0)
        s = inputs.pop(0) if self.segment_vocab_size > 0 else None
        self.position_ids = inputs.pop(0) if self.custom_position_ids else None
        self.token_mask = self.padding_mask(x)

        x = self.apply(
            x,
            Embedding,
            input_dim=self.vocab_size,
            output_dim=self.embedding_size,
            embeddings_initializer=self.initializer,
            name="Embedding-Token",
        )
        if s is not None:
            if self.shared_segment_embeddings:
                s = self.apply(s, name="Embedding-Token", layer=Embedding)
            else:
                s = self.apply(
                    s,
                    Embedding,
                    input_dim=self.segment_vocab_size,
                    output_dim=self.embedding_size,
                    embeddings_initializer=self.initializer,
                    name="Embedding-Segment",
                )
            x = self.apply([x, s], keras.layers.Add, name="Embedding-Token-Segment")
        return self.apply_position_embeddings(x)

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

    def apply_position_embeddings(self, x):
        """Adds the trainable absolute position embedding (hook: families without one)."""
        p = self.position_ids
        return self.apply(
            [x, p] if p is not None else x,
            PositionEmbedding,
            input_dim=self.max_position,
            output_dim=self.embedding_size,
            merge_mode="add",
            hierarchical=self.hierarchical_position,
            embeddings_initializer=self.initializer,
            custom_position_ids=self.custom_position_ids,
            name="Embedding-Position",
        )

    def block_name(self, index):
        """Name stem of block `index`'s layers; one stem for all blocks shares them."""
        return f"Transformer-{index}"

    def norm_arguments(self):
        """Keyword arguments of every LayerNormalization of the model."""
        return {"epsilon": self.layer_norm_epsilon}

    def compute_position_bias(self, inputs):
        """Position input of the attention layers (None: positions are absolute)."""
        return None

    def attention_arguments(self):
        """Call arguments of each self-attention layer."""
        arguments = {"attention_mask": self.token_mask, "attention_bias": self.attention_bias}
        if self.attention_scores is not None:
            # RealFormer: the previous logits already hold the shared bias.
            arguments["attention_bias"] = self.attention_scores
        if self.position_bias is not None:
            arguments["position_inputs"] = self.position_bias
        return arguments

    def apply_main_layers(self, inputs, index):
        attention_name = f"{self.block_name(index)}-MultiHeadSelfAttention"
        feed_forward_name = f"{self.block_name(index)}-FeedForward"
        x = self.apply_self_attention(inputs, attention_name)
        x = self.apply_residual(inputs, x, attention_name)
        return self.apply_residual(
            x, self.apply_feed_forward(x, feed_forward_name), feed_forward_name
        )

    def apply_self_attention(self, x, name):
        """One block's self-attention: positions, masks and RealFormer scores included."""
        if self.position_bias is None:
            self.position_bias = self.compute_position_bias(x)
        x = self.apply(
            [x, x, x],
            self.attention_layer,
            arguments=self.attention_arguments(),
            heads=self.num_attention_heads,
            head_size=self.attention_head_size,
            out_dim=self.hidden_size,
            key_size=self.attention_key_size,
            use_bias=self.use_bias,
            attention_dropout=self.attention_dropout_rate,
            return_attention_logits=self.residual_attention_scores,
            kernel_initializer=self.initializer,
            name=name,
        )
        if self.residual_attention_scores:
            x, self.attention_scores = x
        return x

    def apply_feed_forward(self, x, name):
        """One block's feed-forward network."""
        return self.apply(
            x,
            FeedForward,
            units=self.intermediate_size,
            activation=self.hidden_act,
            use_bias=self.use_bias,
            kernel_initializer=self.initializer,
            name=name,
        )

    def apply_residual(self, inputs, branch, name):
        """Post-LN block tail: dropout on the branch, residual add, LayerNorm."""
        x = self.apply(branch, keras.layers.Dropout, rate=self.dropout_rate, name=f"{name}-Dropout")
        x = self.apply([inputs, x], keras.layers.Add, name=f"{name}-Add")
        return self.apply(x, LayerNormalization, **self.norm_arguments(), name=f"{name}-Norm")

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
                keras.layers.Activation,
                activation="softmax" if self.with_mlm is True else self.with_mlm,
                name="MLM-Activation",
            )
            outputs.append(x)
        if len(outputs) == 1:
            return outputs[0]
        if len(outputs) == 2:
            return outputs[1]
        return outputs[1:]

    def variable_mapping(self):
        """Google BERT checkpoint names (bert4keras' mapping)."""
        mapping = {
            "Embedding-Token": [("bert/embeddings/word_embeddings", "embeddings")],
            "Embedding-Segment": ["bert/embeddings/token_type_embeddings"],
            "Embedding-Position": ["bert/embeddings/position_embeddings"],
            "Embedding-Norm": ["bert/embeddings/LayerNorm/beta", "bert/embeddings/LayerNorm/gamma"],
            "Embedding-Mapping": [
                "bert/encoder/embedding_hidden_mapping_in/kernel",
                "bert/encoder/embedding_hidden_mapping_in/bias",
            ],
            "Pooler-Dense": ["bert/pooler/dense/kernel", "bert/pooler/dense/bias"],
            "NSP-Proba": [
                ("cls/seq_relationship/output_weights", "transpose"),
                "cls/seq_relationship/output_bias",
            ],
            "MLM-Dense": [
                "cls/predictions/transform/dense/kernel",
                "cls/predictions/transform/dense/bias",
            ],
            "MLM-Norm": [
                "cls/predictions/transform/LayerNorm/beta",
                "cls/predictions/transform/LayerNorm/gamma",
            ],
            "MLM-Bias": [("cls/predictions/output_bias", "embeddings")],
        }
        for i in range(self.num_hidden_layers):
            prefix = f"bert/encoder/layer_{i}/"
            mapping[f"Transformer-{i}-MultiHeadSelfAttention"] = [
                prefix + name
                for name in (
                    "attention/self/query/kernel",
                    "attention/self/query/bias",
                    "attention/self/key/kernel",
                    "attention/self/key/bias",
                    "attention/self/value/kernel",
                    "attention/self/value/bias",
                    "attention/output/dense/kernel",
                    "attention/output/dense/bias",
                )
            ]
            mapping[f"Transformer-{i}-MultiHeadSelfAttention-Norm"] = [
                prefix + "attention/output/LayerNorm/beta",
                prefix + "attention/output/LayerNorm/gamma",
            ]
            mapping[f"Transformer-{i}-FeedForward"] = [
                prefix + "intermediate/dense/kernel",
                prefix + "intermediate/dense/bias",
                prefix + "output/dense/kernel",
                prefix + "output/dense/bias",
            ]
            mapping[f"Transformer-{i}-FeedForward-Norm"] = [
                prefix + "output/LayerNorm/beta",
                prefix + "output/LayerNorm/gamma",
            ]
        return mapping

    def hf_variable_mapping(self):
        """HF transformers names (BertForPreTraining; the "bert." prefix is optional)."""
        p = self.hf_prefix
        mapping = {
            "Embedding-Token": [(f"{p}embeddings.word_embeddings.weight", "embeddings")],
            "Embedding-Segment": [f"{p}embeddings.token_type_embeddings.weight"],
            "Embedding-Position": [f"{p}embeddings.position_embeddings.weight"],
            "Embedding-Norm": _hf_norm(f"{p}embeddings.LayerNorm"),
            "Pooler-Dense": _hf_linear(f"{p}pooler.dense"),
            "NSP-Proba": _hf_linear("cls.seq_relationship"),
            "MLM-Dense": _hf_linear("cls.predictions.transform.dense"),
            "MLM-Norm": _hf_norm("cls.predictions.transform.LayerNorm"),
            "MLM-Bias": [("cls.predictions.bias", "embeddings")],
        }
        for i in range(self.num_hidden_layers):
            prefix = f"{p}encoder.layer.{i}."
            mapping[f"Transformer-{i}-MultiHeadSelfAttention"] = (
                _hf_linear(prefix + "attention.self.query")
                + _hf_linear(prefix + "attention.self.key")
                + _hf_linear(prefix + "attention.self.value")
                + _hf_linear(prefix + "attention.output.dense")
            )
            mapping[f"Transformer-{i}-MultiHeadSelfAttention-Norm"] = _hf_norm(
                prefix + "attention.output.LayerNorm"
            )
            mapping[f"Transformer-{i}-FeedForward"] = _hf_linear(
                prefix + "intermediate.dense"
            ) + _hf_linear(prefix + "output.dense")
            mapping[f"Transformer-{i}-FeedForward-Norm"] = _hf_norm(prefix + "output.LayerNorm")
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

    def load_roberta_positions(self, value):
        return value[self.hf_position_offset :]

    def save_roberta_positions(self, value):
        pad = np.zeros((self.hf_position_offset, value.shape[1]), value.dtype)
        return np.concatenate([pad, value], axis=0)

    def hf_variable_mapping(self):
        mapping = super().hf_variable_mapping()
        p = self.hf_prefix
        mapping["Embedding-Position"] = [
            (f"{p}embeddings.position_embeddings.weight", "roberta_positions")
        ]
        mapping["MLM-Dense"] = _hf_linear("lm_head.dense")
        mapping["MLM-Norm"] = _hf_norm("lm_head.layer_norm")
        mapping["MLM-Bias"] = [("lm_head.bias", "embeddings")]
        del mapping["NSP-Proba"]  # HF RoBERTa has no next-sentence head
        return mapping
