"""Gemma: a LLaMA-layout decoder with GeGLU, scaled embeddings and (1 + w) norms.

Reference:
    https://arxiv.org/abs/2403.08295
"""

from kerasformers.layers import Scale
from kerasformers.models.llama import LLaMA


class Gemma(LLaMA):
    """Gemma (1): LLaMA with

    - token embeddings multiplied by sqrt(hidden_size) ("Embedding-Scale", the
      constant rounded to the compute dtype as HF does);
    - RMS norms whose gain is 1 + w, applied in float32;
    - a GELU-gated feed-forward network (hidden_act default "gelu_pytorch_tanh");
    - the LM head tied to the token table by default; head_dim explicit (256 in
      the released checkpoints).

    Args:
        use_bidirectional_attention: HF option; only False.
        **kwargs: the `LLaMA` arguments.
    """

    model_types = ("gemma",)
    hf_architecture = "GemmaForCausalLM"

    def __init__(
        self,
        hidden_act="gelu_pytorch_tanh",
        tie_word_embeddings=True,
        use_bidirectional_attention=False,
        **kwargs,
    ):
        if use_bidirectional_attention:
            raise ValueError("Gemma: use_bidirectional_attention=True is not supported")
        super().__init__(hidden_act=hidden_act, tie_word_embeddings=tie_word_embeddings, **kwargs)

    def norm_arguments(self):
        return {**super().norm_arguments(), "unit_offset": True}

    def apply_position_embeddings(self, x):
        return self.apply(x, Scale, factor=self.hidden_size**0.5, name="Embedding-Scale")
