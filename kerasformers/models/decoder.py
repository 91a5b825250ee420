"""The decoder-only language model: the base of the GPT family (and of LLM decoders)."""

import keras

from kerasformers.layers import Embedding, OutputActivation
from kerasformers.models.sequence import SequenceModel


class DecoderOnly(SequenceModel):
    """A left-to-right language model that ends in its LM head.

    It always carries the causal mask (application "encoder" means "lm" here;
    "unilm" is allowed for models with segments). Embeddings are token (+
    segment) + position, then dropout; blocks follow `norm_position`; with
    `final_norm` an "Output-Norm" precedes the head; the head is the token
    table in dense mode ("Embedding-Token"), then "LM-Activation".

    Args:
        final_activation: activation of the LM head ("softmax" = probabilities,
            "linear" = logits).
        intermediate_size: feed-forward width (default 4 * hidden_size).
        tie_word_embeddings: the LM head is the token table (False: a separate
            "LM-Head", for families with `untied_head`).
        layer_norm_epsilon: norm epsilon (default 1e-5, the GPT checkpoints').
        **kwargs: the `SequenceModel` and `Transformer` arguments.

    Hooks: `norm_position`, `final_norm`, `apply_lm_head`, and those of
    `SequenceModel` (see docs/architecture.md).
    """

    lm_activation_layer = "LM-Activation"
    # An "Output-Norm" after the last block (pre-norm models).
    final_norm = False
    # Whether tie_word_embeddings=False is available: the head is then its own
    # bias-free Dense "LM-Head" (families whose checkpoints have one).
    untied_head = False

    def __init__(
        self,
        final_activation="softmax",
        intermediate_size=None,
        tie_word_embeddings=True,
        layer_norm_epsilon=1e-5,
        application="encoder",
        **kwargs,
    ):
        name = type(self).__name__
        if not tie_word_embeddings and not self.untied_head:
            raise ValueError(
                f"{name}: untied LM heads (tie_word_embeddings=False) are not supported"
            )
        hidden_size = kwargs.get("hidden_size")
        if intermediate_size is None and hidden_size is not None:
            intermediate_size = 4 * hidden_size
        embedding_size = kwargs.get("embedding_size")
        if tie_word_embeddings and embedding_size and embedding_size != hidden_size:
            raise ValueError(
                f"{name}: the tied LM head needs embedding_size == hidden_size, got "
                f"{embedding_size} and {hidden_size}"
            )
        if application == "encoder":
            application = "lm"  # a decoder is a language model whatever it is asked
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
        x = self.apply_norm(inputs, "Output-Norm") if self.final_norm else inputs
        x = self.apply_lm_head(x)
        return self.apply(
            x, OutputActivation, activation=self.final_activation, name=self.lm_activation_layer
        )

    def apply_lm_head(self, x):
        """Hidden states -> vocabulary logits: the tied token table, or "LM-Head"."""
        if self.tie_word_embeddings:
            return self.apply(x, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
        return self.apply(
            x,
            keras.layers.Dense,
            units=self.vocab_size,
            use_bias=False,
            kernel_initializer=self.initializer,
            name="LM-Head",
        )
