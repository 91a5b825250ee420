"""LLaMA and the decoders in its layout: Mistral here, Qwen2 / Qwen3 in qwen.py,
Gemma in gemma.py.

Pre-norm blocks with RMS norms, grouped-query attention with rotary positions
(HF's `rope_scaling` types), a gated SiLU feed-forward network, a final norm and
a tied or untied LM head. Checkpoints are HF's (`LlamaForCausalLM` names,
"model." prefix optional); the same names are used for TF-format saves.

Reference:
    LLaMA: https://arxiv.org/abs/2302.13971; Llama 2: https://arxiv.org/abs/2307.09288
    Mistral 7B: https://arxiv.org/abs/2310.06825
"""

from kerasformers.layers import FeedForward, LlamaAttention, RotaryEmbedding
from kerasformers.layers.rope import check_rope_scaling
from kerasformers.models.config import export_config
from kerasformers.models.decoder import DecoderOnly
from kerasformers.models.masks import AttentionBias
from kerasformers.models.naming import hf_linear, named_block

LAYER_TYPES = ("full_attention", "sliding_attention")


class LLaMA(DecoderOnly):
    """LLaMA 1/2/3.x and the checkpoints in its layout (Yi, DeepSeek dense,
    TinyLlama, Chinese-LLaMA).

    Block: x + Attention(RMSNorm(x)), then x + FFN(RMSNorm(x)) with FFN =
    down(silu(gate(x)) * up(x)); "Output-Norm" after the last block, then the
    LM head. Token ids are the only input (plus "Input-Position" with
    custom_position_ids). Nothing is masked by pad id: left padding is hidden
    by `generate`, and right padding cannot reach real tokens through the
    causal mask.

    Args:
        num_key_value_heads: key/value heads (grouped-query attention; default
            num_attention_heads); must divide num_attention_heads.
        rope_theta: base of the rotary wavelengths.
        rope_scaling: HF's rope_scaling dict ("linear", "dynamic", "llama3",
            "yarn"), or None.
        projection_bias: biases in the q/k/v/o projections (HF's attention_bias).
        mlp_bias: biases in the feed-forward projections.
        sliding_window: keys further back than this are hidden (Mistral; Qwen2's
            sliding layers); None: full causal attention.
        layer_types: per layer "full_attention" or "sliding_attention" (HF's
            list); None: every layer slides when sliding_window is set.
        tie_word_embeddings: the LM head is the token table (default False:
            "LM-Head").
        pad_token_id: kept for tokenizers and generation; never masked.
        pretraining_tp: HF option, ignored (it only splits matmuls).
        **kwargs: the `DecoderOnly` arguments (hidden_act default "silu",
            layer_norm_epsilon = rms_norm_eps).
    """

    norm_position = "pre"
    final_norm = True
    untied_head = True
    attention_layer = LlamaAttention
    hf_prefix = "model."
    body_prefixes = ("embed_tokens.", "layers.", "norm.")
    ignored_variable_patterns = DecoderOnly.ignored_variable_patterns + (
        r"(^|\.)rotary_emb\.inv_freq$",  # a buffer older checkpoints saved
    )
    # HF model_type values this builder reads (checked against model=).
    model_types = ("llama",)
    # Per-projection biases: Qwen2 has q/k/v biases without an output bias.
    qkv_bias_only = False
    qk_norm = False

    def __init__(
        self,
        num_key_value_heads=None,
        rope_theta=10000.0,
        rope_scaling=None,
        projection_bias=False,
        mlp_bias=False,
        sliding_window=None,
        layer_types=None,
        tie_word_embeddings=False,
        hidden_act="silu",
        layer_norm_epsilon=1e-6,
        pad_token_id=None,
        segment_vocab_size=0,
        pretraining_tp=1,
        **kwargs,
    ):
        name = type(self).__name__
        super().__init__(
            tie_word_embeddings=tie_word_embeddings,
            hidden_act=hidden_act,
            layer_norm_epsilon=layer_norm_epsilon,
            pad_token_id=pad_token_id,
            segment_vocab_size=0,
            **kwargs,
        )
        heads = self.num_attention_heads
        self.num_key_value_heads = num_key_value_heads or heads
        if heads % self.num_key_value_heads:
            raise ValueError(
                f"{name}: num_attention_heads ({heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        self.rope_theta = float(rope_theta)
        self.rope_scaling = check_rope_scaling(rope_scaling, f"{name}: rope_scaling")
        if self.rope_scaling and self.rope_scaling["rope_type"] == "default":
            self.rope_scaling = None
        self.projection_bias = projection_bias
        self.mlp_bias = mlp_bias
        self.sliding_window = sliding_window
        if layer_types is not None:
            layer_types = list(layer_types)
            bad = [t for t in layer_types if t not in LAYER_TYPES]
            if bad or len(layer_types) != self.num_hidden_layers:
                raise ValueError(
                    f"{name}: layer_types must list one of {list(LAYER_TYPES)} per layer "
                    f"({self.num_hidden_layers}), got {layer_types}"
                )
        self.layer_types = layer_types
        self.pad_token_id = pad_token_id

    def padding_mask(self, token_ids):
        return None

    def norm_arguments(self):
        return {"epsilon": self.layer_norm_epsilon, "zero_mean": False, "center": False}

    def apply_position_embeddings(self, x):
        return x  # positions enter through the rotary table

    def compute_position_bias(self, inputs):
        p = self.position_ids
        # (1|batch, seq, 2 * key_size) cos / sin table shared by every layer
        return self.apply(
            [inputs, p] if p is not None else inputs,
            RotaryEmbedding,
            head_dim=self.attention_key_size,
            rope_theta=self.rope_theta,
            rope_scaling=self.rope_scaling,
            max_position=self.max_position,
            custom_position_ids=p is not None,
            name="Embedding-Rotary-Position",
        )

    def layer_window(self, index):
        """The sliding window of layer `index`, or None for full attention."""
        if self.sliding_window is None:
            return None
        if self.layer_types is not None and self.layer_types[index] != "sliding_attention":
            return None
        return self.sliding_window

    def compute_attention_bias(self, inputs=None):
        bias = super().compute_attention_bias(inputs)
        windows = {self.layer_window(i) for i in range(self.num_hidden_layers)} - {None}
        if windows:
            (window,) = windows
            self.window_bias = self.apply(
                inputs, AttentionBias, application="lm", window=window, name="Attention-Window-Mask"
            )
        return bias

    def apply_main_layers(self, inputs, index):
        self.layer_index = index
        return super().apply_main_layers(inputs, index)

    def attention_arguments(self):
        arguments = super().attention_arguments()
        if self.layer_window(self.layer_index) is not None:
            arguments["attention_bias"] = self.window_bias
        return arguments

    def attention_layer_options(self):
        return {
            "key_value_heads": self.num_key_value_heads,
            "use_bias": self.projection_bias or self.qkv_bias_only,
            "output_bias": self.projection_bias,
            "qk_norm": self.qk_norm,
            "qk_norm_epsilon": self.layer_norm_epsilon,
        }

    def apply_feed_forward(self, x, name):
        return self.apply(
            x,
            FeedForward,
            units=self.intermediate_size,
            activation=[self.hidden_act, "linear"],
            use_bias=self.mlp_bias,
            kernel_initializer=self.initializer,
            name=name,
        )

    def hf_block(self, scope):
        """{layer-name suffix: entries} of one HF decoder layer under `scope`."""
        qkv_bias = self.projection_bias or self.qkv_bias_only
        attention = {}
        for proj, at in zip("qkv", ("q_dense", "k_dense", "v_dense"), strict=True):
            attention.update(hf_linear(f"{scope}self_attn.{proj}_proj", at, qkv_bias))
        attention.update(hf_linear(f"{scope}self_attn.o_proj", "o_dense", self.projection_bias))
        if self.qk_norm:
            attention["q_norm/gamma"] = f"{scope}self_attn.q_norm.weight"
            attention["k_norm/gamma"] = f"{scope}self_attn.k_norm.weight"
        return {
            "MultiHeadSelfAttention-Norm": {"gamma": f"{scope}input_layernorm.weight"},
            "MultiHeadSelfAttention": attention,
            "FeedForward-Norm": {"gamma": f"{scope}post_attention_layernorm.weight"},
            "FeedForward": {
                **hf_linear(f"{scope}mlp.gate_proj", "i0_dense", self.mlp_bias),
                **hf_linear(f"{scope}mlp.up_proj", "i1_dense", self.mlp_bias),
                **hf_linear(f"{scope}mlp.down_proj", "o_dense", self.mlp_bias),
            },
        }

    def hf_variable_mapping(self):
        """HF `LlamaForCausalLM` names (the "model." prefix is optional)."""
        p = self.hf_prefix
        mapping = {"Embedding-Token": {"embeddings": (f"{p}embed_tokens.weight", "embeddings")}}
        for i in range(self.num_hidden_layers):
            mapping.update(named_block(f"Transformer-{i}", self.hf_block(f"{p}layers.{i}.")))
        mapping["Output-Norm"] = {"gamma": f"{p}norm.weight"}
        if not self.tie_word_embeddings:
            mapping["LM-Head"] = hf_linear("lm_head", bias=False)
        return mapping

    def variable_mapping(self):
        """No Google-format release exists: TF-format saves use the HF names."""
        return self.hf_variable_mapping()

    # HF architecture class written into config.json by `hf_config`.
    hf_architecture = "LlamaForCausalLM"

    def config_arguments(self):
        arguments = {
            **super().config_arguments(),
            "num_key_value_heads": self.num_key_value_heads,
            "attention_head_size": self.attention_head_size,  # always: HF's head_dim
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling,
            "projection_bias": self.projection_bias,
            "mlp_bias": self.mlp_bias,
            "tie_word_embeddings": self.tie_word_embeddings,
            "sliding_window": self.sliding_window,
            "layer_types": self.layer_types if self.sliding_window is not None else None,
        }
        for name in ("dropout_rate", "segment_vocab_size", "embedding_size"):
            arguments.pop(name, None)
        return arguments

    def hf_config(self):
        """The HF `config.json` dict of this model (transformers loads it with
        the weights `save_weights_as_checkpoint(..., format="safetensors")` writes)."""
        config = export_config(self.config_arguments(), "llama", model_type=self.model_types[0])
        # transformers 5 keeps theta and scaling in one dict; older readers, apart.
        rope = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.rope_scaling:
            rope.update(self.rope_scaling)
        config["rope_parameters"] = rope
        config["rope_scaling"] = self.rope_scaling
        config["pad_token_id"] = self.pad_token_id
        config["architectures"] = [self.hf_architecture]
        return config

    def google_config(self):
        raise NotImplementedError(
            f"{type(self).__name__} has no Google checkpoint naming: its checkpoints are "
            "HF's (a TF-format save uses the HF names)"
        )


class Mistral(LLaMA):
    """Mistral: LLaMA with sliding-window attention in every layer.

    Args:
        sliding_window: keys further back than this many positions are hidden
            (default 4096, HF's; None: full causal attention).
        **kwargs: the `LLaMA` arguments.
    """

    model_types = ("mistral",)
    hf_architecture = "MistralForCausalLM"

    def __init__(self, sliding_window=4096, **kwargs):
        kwargs.pop("layer_types", None)  # Mistral slides in every layer
        super().__init__(sliding_window=sliding_window, **kwargs)
