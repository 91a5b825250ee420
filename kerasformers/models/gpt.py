"""GPT (CDial-GPT), GPT-2 and GPT2-ML: left-to-right language models.

All three always carry the causal LM mask (application "encoder" means "lm"
here) and end in the LM head tied to the token embedding ("Embedding-Token"
in dense mode, then "LM-Activation").

Reference:
    GPT: https://github.com/openai/finetune-transformer-lm (CDial-GPT:
        https://github.com/thu-coai/CDial-GPT)
    GPT-2: https://github.com/openai/gpt-2
    GPT2-ML: https://github.com/imcaspar/gpt2-ml
"""

import keras

from kerasformers.layers import Embedding, LayerNormalization
from kerasformers.models.bert import BERT, _hf_norm
from kerasformers.models.transformer import Transformer
from kerasformers.models.weights import FusedPart


def _hf_conv1d(name):
    """HF's Conv1D already stores (in, out), Keras' Dense layout."""
    return [f"{name}.weight", f"{name}.bias"]


def _hf_fused_qkv(name):
    """q, k and v kernels/biases as thirds of one Conv1D (GPT's c_attn)."""
    return [
        (f"{name}.{kind}", FusedPart(part, 3)) for part in range(3) for kind in ("weight", "bias")
    ]


class GPT(BERT):
    """GPT (as CDial-GPT uses it): BERT's post-LN blocks under a causal mask.

    Embeddings are token + segment + position without BERT's LayerNorm; the
    output is the tied LM head. Google-style names are bert4keras' ("gpt/...",
    BERT's with "encoder" -> "transformer"); HF names are OpenAIGPTLMHeadModel's,
    whose token types share the token table (shared_segment_embeddings=True,
    set automatically for an HF "openai-gpt" config).

    Args:
        final_activation: activation of the LM head ("softmax" = probabilities,
            "linear" = logits).
        intermediate_size: feed-forward width (default 4 * hidden_size).
        tie_word_embeddings: must be True (the LM head is the token table).
        **kwargs: the `BERT` arguments except with_pool / with_nsp / with_mlm.
    """

    always_lm_head = True
    lm_activation_layer = "LM-Activation"
    hf_prefix = "transformer."
    body_prefixes = (
        "gpt/embeddings/",
        "gpt/transformer/",
        "tokens_embed.",
        "positions_embed.",
        "h.",
    )
    ignored_variable_patterns = Transformer.ignored_variable_patterns + (
        # HF's causal-mask buffers in older checkpoints (not c_attn.bias).
        r"(^|\.)attn\.(masked_)?bias$",
    )

    def __init__(
        self,
        final_activation="softmax",
        intermediate_size=None,
        tie_word_embeddings=True,
        with_pool=False,
        with_nsp=False,
        with_mlm=False,
        layer_norm_epsilon=1e-5,
        application="encoder",
        **kwargs,
    ):
        name = type(self).__name__
        if with_pool or with_nsp or with_mlm:
            raise ValueError(
                f"{name} always ends in its LM head: with_pool / with_nsp / with_mlm are not "
                "available (final_activation='linear' gives logits)"
            )
        if not tie_word_embeddings:
            raise ValueError(
                f"{name}: untied LM heads (tie_word_embeddings=False) are not supported"
            )
        hidden_size = kwargs.get("hidden_size")
        if intermediate_size is None and hidden_size is not None:
            intermediate_size = 4 * hidden_size
        embedding_size = kwargs.get("embedding_size")
        if embedding_size and embedding_size != hidden_size:
            raise ValueError(
                f"{name}: the tied LM head needs embedding_size == hidden_size, got "
                f"{embedding_size} and {hidden_size}"
            )
        if application == "encoder":
            application = "lm"  # a GPT is a language model whatever it is asked
        super().__init__(
            intermediate_size=intermediate_size,
            layer_norm_epsilon=layer_norm_epsilon,
            application=application,
            **kwargs,
        )
        self.final_activation = final_activation
        self.tie_word_embeddings = tie_word_embeddings

    def apply_embeddings(self, inputs):
        x = self.sum_embeddings(inputs)
        return self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name="Embedding-Dropout")

    def apply_final_layers(self, inputs):
        x = self.apply(inputs, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
        return self.apply(
            x, keras.layers.Activation, activation=self.final_activation, name="LM-Activation"
        )

    def variable_mapping(self):
        """bert4keras' GPT names: BERT's with "bert/" -> "gpt/", "encoder" -> "transformer"."""

        def rename(name):
            return name.replace("bert/", "gpt/").replace("encoder", "transformer")

        keep = ("Embedding-Token", "Embedding-Segment", "Embedding-Position", "Transformer-")
        return {
            layer: [rename(e) if isinstance(e, str) else (rename(e[0]), *e[1:]) for e in entries]
            for layer, entries in super().variable_mapping().items()
            if layer.startswith(keep)
        }

    def apply_residual_add(self, inputs, branch, name):
        """Block tail without a norm: dropout on the branch, then the residual add."""
        x = self.apply(branch, keras.layers.Dropout, rate=self.dropout_rate, name=f"{name}-Dropout")
        return self.apply([inputs, x], keras.layers.Add, name=f"{name}-Add")

    def hf_variable_mapping(self):
        """HF OpenAIGPTLMHeadModel names (the "transformer." prefix is optional)."""
        p = self.hf_prefix
        mapping = {
            "Embedding-Token": [(f"{p}tokens_embed.weight", "embeddings")],
            "Embedding-Position": [f"{p}positions_embed.weight"],
        }
        for i in range(self.num_hidden_layers):
            b = f"{p}h.{i}."
            mapping[f"Transformer-{i}-MultiHeadSelfAttention"] = _hf_fused_qkv(
                b + "attn.c_attn"
            ) + _hf_conv1d(b + "attn.c_proj")
            mapping[f"Transformer-{i}-MultiHeadSelfAttention-Norm"] = _hf_norm(b + "ln_1")
            mapping[f"Transformer-{i}-FeedForward"] = _hf_conv1d(b + "mlp.c_fc") + _hf_conv1d(
                b + "mlp.c_proj"
            )
            mapping[f"Transformer-{i}-FeedForward-Norm"] = _hf_norm(b + "ln_2")
        return mapping


class GPT2(GPT):
    """GPT-2: pre-LN blocks, learned positions, a final LayerNorm, tied LM head.

    Block: x + Attention(LN(x)), then x + FeedForward(LN(x)); "Output-Norm"
    after the last block. Token ids are the only input (plus "Input-Position"
    with custom_position_ids). GPT-2 has no padding token (its id 0 is "!"),
    so by default nothing is masked out: right padding cannot reach real
    tokens through the causal mask; pass pad_token_id to mask an id as keys.

    Google-style names are bert4keras' ("gpt/..." with "input/LayerNorm");
    HF names are GPT2LMHeadModel's, whose fused c_attn is split into our
    q/k/v on load and fused back on save.

    Args:
        pad_token_id: id to mask out of attention (default None: none).
        scale_attn_weights: HF option; only True (divide by sqrt(head size)).
        scale_attn_by_inverse_layer_idx: HF option; only False.
        add_cross_attention: HF option; only False.
        **kwargs: the `GPT` arguments (segment_vocab_size is always 0).
    """

    body_prefixes = ("gpt/embeddings/", "gpt/transformer/", "gpt/output/", "wte.", "wpe.", "h.")

    def __init__(
        self,
        pad_token_id=None,
        segment_vocab_size=0,
        scale_attn_weights=True,
        scale_attn_by_inverse_layer_idx=False,
        add_cross_attention=False,
        **kwargs,
    ):
        if not scale_attn_weights or scale_attn_by_inverse_layer_idx or add_cross_attention:
            raise ValueError(
                "GPT2: only scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False "
                "and add_cross_attention=False are supported"
            )
        # GPT-2 has no segment embeddings, whatever a config says.
        super().__init__(pad_token_id=pad_token_id, segment_vocab_size=0, **kwargs)
        self.pad_token_id = pad_token_id
        self.scale_attn_weights = scale_attn_weights
        self.scale_attn_by_inverse_layer_idx = scale_attn_by_inverse_layer_idx
        self.add_cross_attention = add_cross_attention

    def padding_mask(self, token_ids):
        if self.pad_token_id is None:
            return None
        return super().padding_mask(token_ids)

    def apply_main_layers(self, inputs, index):
        attention_name = f"Transformer-{index}-MultiHeadSelfAttention"
        feed_forward_name = f"Transformer-{index}-FeedForward"

        x = self.apply(
            inputs, LayerNormalization, **self.norm_arguments(), name=f"{attention_name}-Norm"
        )
        x = self.apply_self_attention(x, attention_name)
        x = self.apply_residual_add(inputs, x, attention_name)

        y = self.apply(
            x, LayerNormalization, **self.norm_arguments(), name=f"{feed_forward_name}-Norm"
        )
        y = self.apply_feed_forward(y, feed_forward_name)
        return self.apply_residual_add(x, y, feed_forward_name)

    def apply_final_layers(self, inputs):
        x = self.apply(inputs, LayerNormalization, **self.norm_arguments(), name="Output-Norm")
        return super().apply_final_layers(x)

    def variable_mapping(self):
        """bert4keras' GPT2 names: GPT's with "output/LayerNorm" -> "input/LayerNorm"."""

        def rename(name):
            return name.replace("output/LayerNorm", "input/LayerNorm")

        mapping = {
            layer: [rename(e) if isinstance(e, str) else (rename(e[0]), *e[1:]) for e in entries]
            for layer, entries in super().variable_mapping().items()
        }
        mapping["Output-Norm"] = ["gpt/output/LayerNorm/beta", "gpt/output/LayerNorm/gamma"]
        return mapping

    def hf_variable_mapping(self):
        """HF GPT2LMHeadModel names (the "transformer." prefix is optional)."""
        p = self.hf_prefix
        mapping = {
            "Embedding-Token": [(f"{p}wte.weight", "embeddings")],
            "Embedding-Position": [f"{p}wpe.weight"],
            "Output-Norm": _hf_norm(f"{p}ln_f"),
        }
        for layer, entries in super().hf_variable_mapping().items():
            if layer.startswith("Transformer-"):
                mapping[layer] = entries
        return mapping


class GPT2_ML(GPT):
    """GPT2-ML (Grover's layout): attention without its own norm, then a
    LayerNorm'ed feed-forward whose residual sum is normalised again.

    Embeddings are token + position, LayerNorm, dropout. Block:
    h = x + Attention(x); out = LN1(h + FeedForward(LN0(h))). Token ids are
    the only input; Google-style names are the released "newslm/..." ones.
    No HF implementation exists.

    Args:
        **kwargs: the `GPT` arguments (segment_vocab_size is always 0).
    """

    body_prefixes = ("newslm/",)

    def __init__(self, segment_vocab_size=0, **kwargs):
        super().__init__(segment_vocab_size=0, **kwargs)

    def apply_embeddings(self, inputs):
        x = self.sum_embeddings(inputs)
        x = self.apply(x, LayerNormalization, **self.norm_arguments(), name="Embedding-Norm")
        return self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name="Embedding-Dropout")

    def apply_main_layers(self, inputs, index):
        attention_name = f"Transformer-{index}-MultiHeadSelfAttention"
        feed_forward_name = f"Transformer-{index}-FeedForward"

        x = self.apply_self_attention(inputs, attention_name)
        x = self.apply_residual_add(inputs, x, attention_name)

        y = self.apply(
            x, LayerNormalization, **self.norm_arguments(), name=f"{feed_forward_name}-Norm-0"
        )
        y = self.apply_feed_forward(y, feed_forward_name)
        y = self.apply_residual_add(x, y, feed_forward_name)
        return self.apply(
            y, LayerNormalization, **self.norm_arguments(), name=f"{feed_forward_name}-Norm-1"
        )

    def variable_mapping(self):
        """The released GPT2-ML checkpoint names (bert4keras' mapping)."""
        mapping = {
            "Embedding-Token": [("newslm/embeddings/word_embed", "embeddings")],
            "Embedding-Position": ["newslm/embeddings/pos_embed"],
            "Embedding-Norm": [
                "newslm/embeddings/LayerNorm_embed_norm/beta",
                "newslm/embeddings/LayerNorm_embed_norm/gamma",
            ],
        }
        for i in range(self.num_hidden_layers):
            p = f"newslm/layer{i:02d}/"
            mapping[f"Transformer-{i}-MultiHeadSelfAttention"] = [
                p + f"{part}/{kind}"
                for part in ("query_layer", "key_layer", "value_layer", "context_projection_layer")
                for kind in ("kernel", "bias")
            ]
            mapping[f"Transformer-{i}-FeedForward-Norm-0"] = [
                p + "LayerNorm_mlp_ln0/beta",
                p + "LayerNorm_mlp_ln0/gamma",
            ]
            mapping[f"Transformer-{i}-FeedForward"] = [
                p + "intermediate/kernel",
                p + "intermediate/bias",
                p + "output/kernel",
                p + "output/bias",
            ]
            mapping[f"Transformer-{i}-FeedForward-Norm-1"] = [
                p + "LayerNorm_mlp_ln1/beta",
                p + "LayerNorm_mlp_ln1/gamma",
            ]
        return mapping

    def hf_variable_mapping(self):
        """No HF implementation: Google-style names only."""
        return {}
