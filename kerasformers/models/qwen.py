"""Qwen2 (Qwen1.5 / 2 / 2.5) and Qwen3: LLaMA-layout decoders.

Reference:
    Qwen2: https://arxiv.org/abs/2407.10671; Qwen2.5: https://arxiv.org/abs/2412.15115
    Qwen3: https://arxiv.org/abs/2505.09388
"""

from kerasformers.models.llama import LLaMA


class Qwen2(LLaMA):
    """Qwen2: LLaMA with biases on the q/k/v projections (none on the output).

    Sliding windows (use_sliding_window) apply to the layers from
    max_window_layers on, or as `layer_types` says.

    Args:
        use_sliding_window: turn sliding_window on (HF default False).
        max_window_layers: the first layer that slides.
        sliding_window: the window (used only with use_sliding_window).
        **kwargs: the `LLaMA` arguments.
    """

    model_types = ("qwen2",)
    hf_architecture = "Qwen2ForCausalLM"
    qkv_bias_only = True

    def __init__(
        self,
        use_sliding_window=False,
        sliding_window=4096,
        max_window_layers=28,
        layer_types=None,
        **kwargs,
    ):
        if not use_sliding_window:
            sliding_window = None
        layers = kwargs.get("num_hidden_layers")
        if sliding_window is not None and layer_types is None and layers is not None:
            layer_types = [
                "sliding_attention" if i >= max_window_layers else "full_attention"
                for i in range(layers)
            ]
        super().__init__(sliding_window=sliding_window, layer_types=layer_types, **kwargs)
        self.use_sliding_window = use_sliding_window
        self.max_window_layers = max_window_layers

    def hf_config(self):
        config = super().hf_config()
        config.pop("mlp_bias")
        config["attention_bias"] = self.projection_bias
        config["use_sliding_window"] = self.use_sliding_window
        config["max_window_layers"] = self.max_window_layers
        return config


class Qwen3(Qwen2):
    """Qwen3: Qwen2 without projection biases (attention_bias), with per-head RMS
    norms of queries and keys ("q_norm", "k_norm") and an explicit head_dim that
    may differ from hidden_size / num_attention_heads.

    Args:
        **kwargs: the `Qwen2` arguments (attention_head_size = head_dim).
    """

    model_types = ("qwen3",)
    hf_architecture = "Qwen3ForCausalLM"
    qkv_bias_only = False
    qk_norm = True
