"""The stack the BERT and GPT families share: token (+ segment) + position
embeddings, then blocks of self-attention and feed-forward sub-layers."""

import keras

from kerasformers.backend import get_activation
from kerasformers.layers import Embedding, FeedForward, MultiHeadAttention, PositionEmbedding
from kerasformers.models.config import export_config
from kerasformers.models.transformer import Transformer


class SequenceModel(Transformer):
    """Token (+ segment) + absolute position embeddings and self-attention blocks.

    Args:
        max_position: rows of the position table.
        segment_vocab_size: segment (token type) vocabulary; 0 drops the segment input.
        hierarchical_position: extend positions by hierarchical decomposition
            (True or the alpha), for inputs longer than max_position.
        custom_position_ids: take position ids as an extra input "Input-Position".
        shared_segment_embeddings: look segments up in the token table.
        residual_attention_scores: RealFormer: each layer adds the previous
            layer's attention logits to its own (https://arxiv.org/abs/2012.11747).
        **kwargs: the `Transformer` arguments.

    Families change it through hooks: `block_name` (layer sharing),
    `apply_position_embeddings` (absolute positions), `compute_position_bias`
    and `attention_layer` (relative / rotary positions), `norm_position`,
    `norm_arguments` and `use_bias` (pre-norm, simplified norms, bias-free
    layers); see docs/architecture.md.
    """

    attention_layer = MultiHeadAttention
    use_bias = True

    def __init__(
        self,
        max_position=None,
        segment_vocab_size=2,
        hierarchical_position=None,
        custom_position_ids=False,
        shared_segment_embeddings=False,
        residual_attention_scores=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.max_position = max_position
        self.segment_vocab_size = segment_vocab_size or 0
        self.hierarchical_position = hierarchical_position
        self.custom_position_ids = custom_position_ids
        self.shared_segment_embeddings = shared_segment_embeddings
        self.residual_attention_scores = residual_attention_scores
        self.activation = get_activation(self.hidden_act)  # fail early on a bad name

    def config_arguments(self):
        return {
            **super().config_arguments(),
            "max_position": self.max_position,
            "segment_vocab_size": self.segment_vocab_size,
        }

    def google_config(self):
        """The Google-style `bert_config.json` dict (the keys of Google's BERT
        releases, which bert4keras' GPT, GPT-2 and GPT2-ML configs share too; the
        norm epsilon and pad id only where they differ from BERT's fixed values)."""
        config = export_config(self.config_arguments(), "bert")
        if config.get("layer_norm_eps") == 1e-12:
            del config["layer_norm_eps"]
        if config.get("pad_token_id") == 0:
            del config["pad_token_id"]
        return config

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

    def apply_position_embeddings(self, x):
        """Adds the trainable absolute position embedding (hook: families without one)."""
        if self.max_position is None:
            raise ValueError(
                f"{type(self).__name__} needs max_position (max_position_embeddings in the "
                "config) for its absolute position table"
            )
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
        """One block: self-attention, then feed-forward, each with its residual
        connection (post- or pre-norm by `norm_position`)."""
        attention = f"{self.block_name(index)}-MultiHeadSelfAttention"
        feed_forward = f"{self.block_name(index)}-FeedForward"
        x = self.apply_residual(
            inputs, attention, lambda h: self.apply_self_attention(h, attention)
        )
        return self.apply_residual(
            x, feed_forward, lambda h: self.apply_feed_forward(h, feed_forward)
        )

    def attention_layer_options(self):
        """Hook: extra constructor arguments of the self-attention layers (e.g.
        key_value_heads for grouped-query attention)."""
        return {}

    def apply_self_attention(self, x, name):
        """One block's self-attention: positions, masks and RealFormer scores included."""
        if self.position_bias is None:
            self.position_bias = self.compute_position_bias(x)
        options = {
            "heads": self.num_attention_heads,
            "head_size": self.attention_head_size,
            "out_dim": self.hidden_size,
            "key_size": self.attention_key_size,
            "use_bias": self.use_bias,
            "attention_dropout": self.attention_dropout_rate,
            "return_attention_logits": self.residual_attention_scores,
            "kernel_initializer": self.initializer,
            **self.attention_layer_options(),
        }
        x = self.apply(
            [x, x, x],
            self.attention_layer,
            arguments=self.attention_arguments(),
            name=name,
            **options,
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
