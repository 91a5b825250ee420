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

from kerasformers.backend import get_activation
from kerasformers.models.config import export_config
from kerasformers.models.decoder import DecoderOnly
from kerasformers.models.naming import (
    google_attention,
    google_bert_block,
    google_bert_embeddings,
    google_feed_forward,
    google_norm,
    hf_conv1d,
    hf_fused_qkv,
    hf_norm,
    named_block,
)
from kerasformers.models.transformer import Transformer


def _hf_gpt_block(scope):
    """One HF GPT / GPT-2 block under `scope` ("h.3."): Conv1D layers, fused q/k/v."""
    return {
        "MultiHeadSelfAttention": {
            **hf_fused_qkv(scope + "attn.c_attn"),
            **hf_conv1d(scope + "attn.c_proj", "o_dense"),
        },
        "MultiHeadSelfAttention-Norm": hf_norm(scope + "ln_1"),
        "FeedForward": {
            **hf_conv1d(scope + "mlp.c_fc", "i_dense"),
            **hf_conv1d(scope + "mlp.c_proj", "o_dense"),
        },
        "FeedForward-Norm": hf_norm(scope + "ln_2"),
    }


class GPT(DecoderOnly):
    """GPT (as CDial-GPT uses it): post-LN blocks under a causal mask.

    Embeddings are token + segment + position without BERT's LayerNorm; the
    output is the tied LM head. Google-style names are bert4keras' ("gpt/...",
    BERT's with "encoder" -> "transformer"); HF names are OpenAIGPTLMHeadModel's,
    whose token types share the token table (shared_segment_embeddings=True,
    set automatically for an HF "openai-gpt" config).

    Args:
        **kwargs: the `DecoderOnly` arguments.
    """

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

    def config_arguments(self):
        arguments = super().config_arguments()
        if self.shared_segment_embeddings:
            arguments["shared_segment_embeddings"] = True
        return arguments

    def hf_config(self):
        """The HF `config.json` dict (OpenAIGPTLMHeadModel)."""
        if self.segment_vocab_size and not self.shared_segment_embeddings:
            raise ValueError(
                "HF OpenAI GPT looks token types up in the token table: a GPT with its own "
                "segment table (shared_segment_embeddings=False) has no HF form"
            )
        activation = get_activation(self.hidden_act)
        if not any(activation is get_activation(a) for a in ("gelu_new", "relu", "silu")):
            raise ValueError(
                f"HF OpenAI GPT has only the tanh GELU, relu and silu activations, not "
                f"hidden_act={self.hidden_act!r}"
            )
        arguments = self.config_arguments()
        for name in ("segment_vocab_size", "shared_segment_embeddings", "pad_token_id"):
            arguments.pop(name, None)
        if activation is get_activation("gelu_new"):
            arguments["hidden_act"] = "gelu_new"
        config = export_config(arguments, "openai-gpt", model_type="openai-gpt")
        config["embd_pdrop"] = self.dropout_rate
        config["architectures"] = ["OpenAIGPTLMHeadModel"]
        return config

    def variable_mapping(self):
        """bert4keras' GPT names: BERT-style embeddings and blocks under "gpt/"."""
        mapping = google_bert_embeddings("gpt/embeddings/", norm=False)
        for i in range(self.num_hidden_layers):
            block = google_bert_block(f"gpt/transformer/layer_{i}/")
            mapping.update(named_block(f"Transformer-{i}", block))
        return mapping

    def hf_variable_mapping(self):
        """HF OpenAIGPTLMHeadModel names (the "transformer." prefix is optional)."""
        p = self.hf_prefix
        mapping = {
            "Embedding-Token": {"embeddings": (f"{p}tokens_embed.weight", "embeddings")},
            "Embedding-Position": {"embeddings": f"{p}positions_embed.weight"},
        }
        for i in range(self.num_hidden_layers):
            mapping.update(named_block(f"Transformer-{i}", _hf_gpt_block(f"{p}h.{i}.")))
        return mapping


class GPT2(DecoderOnly):
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
        **kwargs: the `DecoderOnly` arguments (segment_vocab_size is always 0).
    """

    norm_position = "pre"
    final_norm = True
    hf_prefix = GPT.hf_prefix
    ignored_variable_patterns = GPT.ignored_variable_patterns
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

    def config_arguments(self):
        arguments = super().config_arguments()
        del arguments["segment_vocab_size"]  # always 0
        return arguments

    def hf_config(self):
        """The HF `config.json` dict (GPT2LMHeadModel)."""
        config = export_config(self.config_arguments(), "gpt2", model_type="gpt2")
        config["embd_pdrop"] = self.dropout_rate
        config["architectures"] = ["GPT2LMHeadModel"]
        return config

    def variable_mapping(self):
        """bert4keras' GPT2 names: GPT's scopes, each block's norms under "input/"."""
        mapping = google_bert_embeddings("gpt/embeddings/", segment=False, norm=False)
        for i in range(self.num_hidden_layers):
            block = google_bert_block(
                f"gpt/transformer/layer_{i}/",
                attention_norm="attention/input/LayerNorm",
                feed_forward_norm="input/LayerNorm",
            )
            mapping.update(named_block(f"Transformer-{i}", block))
        mapping["Output-Norm"] = google_norm("gpt/output/LayerNorm")
        return mapping

    def hf_variable_mapping(self):
        """HF GPT2LMHeadModel names (the "transformer." prefix is optional)."""
        p = self.hf_prefix
        mapping = {
            "Embedding-Token": {"embeddings": (f"{p}wte.weight", "embeddings")},
            "Embedding-Position": {"embeddings": f"{p}wpe.weight"},
        }
        for i in range(self.num_hidden_layers):
            mapping.update(named_block(f"Transformer-{i}", _hf_gpt_block(f"{p}h.{i}.")))
        mapping["Output-Norm"] = hf_norm(f"{p}ln_f")
        return mapping


class GPT2_ML(DecoderOnly):
    """GPT2-ML (Grover's layout): attention without its own norm, then a
    LayerNorm'ed feed-forward whose residual sum is normalised again.

    Embeddings are token + position, LayerNorm, dropout. Block:
    h = x + Attention(x); out = LN1(h + FeedForward(LN0(h))). Token ids are
    the only input; Google-style names are the released "newslm/..." ones.
    No HF implementation exists.

    Args:
        **kwargs: the `DecoderOnly` arguments (segment_vocab_size is always 0).
    """

    body_prefixes = ("newslm/",)

    def __init__(self, segment_vocab_size=0, **kwargs):
        super().__init__(segment_vocab_size=0, **kwargs)

    def apply_embeddings(self, inputs):
        x = self.sum_embeddings(inputs)
        x = self.apply_norm(x, "Embedding-Norm")
        return self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name="Embedding-Dropout")

    def apply_main_layers(self, inputs, index):
        attention_name = f"Transformer-{index}-MultiHeadSelfAttention"
        feed_forward_name = f"Transformer-{index}-FeedForward"

        x = self.apply_self_attention(inputs, attention_name)
        x = self.apply_residual_add(inputs, x, attention_name)

        y = self.apply_norm(x, f"{feed_forward_name}-Norm-0")
        y = self.apply_feed_forward(y, feed_forward_name)
        y = self.apply_residual_add(x, y, feed_forward_name)
        return self.apply_norm(y, f"{feed_forward_name}-Norm-1")

    def variable_mapping(self):
        """The released GPT2-ML checkpoint names (bert4keras' mapping)."""
        mapping = {
            "Embedding-Token": {"embeddings": ("newslm/embeddings/word_embed", "embeddings")},
            "Embedding-Position": {"embeddings": "newslm/embeddings/pos_embed"},
            "Embedding-Norm": google_norm("newslm/embeddings/LayerNorm_embed_norm"),
        }
        parts = ("query_layer", "key_layer", "value_layer", "context_projection_layer")
        for i in range(self.num_hidden_layers):
            p = f"newslm/layer{i:02d}/"
            stem = f"Transformer-{i}"
            mapping[f"{stem}-MultiHeadSelfAttention"] = google_attention(p, parts)
            mapping[f"{stem}-FeedForward-Norm-0"] = google_norm(p + "LayerNorm_mlp_ln0")
            mapping[f"{stem}-FeedForward"] = google_feed_forward(p + "intermediate", p + "output")
            mapping[f"{stem}-FeedForward-Norm-1"] = google_norm(p + "LayerNorm_mlp_ln1")
        return mapping

    def hf_variable_mapping(self):
        """No HF implementation: Google-style names only."""
        return {}
