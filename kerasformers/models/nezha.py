"""NEZHA: BERT with functional (fixed sinusoidal) relative positions.

Reference:
    https://arxiv.org/abs/1909.00204
"""

from kerasformers.layers import RelativePositionEmbedding, TypicalRelativeAttention
from kerasformers.models.bert import BERT
from kerasformers.models.transformer import Transformer


def _without_positions(mapping):
    mapping = dict(mapping)
    mapping.pop("Embedding-Position", None)
    return mapping


class NEZHA(BERT):
    """NEZHA: no absolute position table; every attention layer adds a fixed
    sinusoidal embedding of the clipped distance j - i to its keys and values.

    Checkpoint names are BERT's (Google) or HF's NezhaModel ("nezha." prefix),
    without position embeddings.

    Args:
        max_relative_position: distances are clipped to [-m, m] (NEZHA: 64).
        max_position: accepted for config compatibility; unused.
        **kwargs: the `BERT` arguments (no hierarchical_position / custom_position_ids).
    """

    attention_layer = TypicalRelativeAttention
    hf_prefix = "nezha."
    hf_model_type = None  # NezhaModel left transformers in version 5
    ignored_variable_patterns = Transformer.ignored_variable_patterns + (
        r"relative_positions_encoding",
    )

    def __init__(self, max_position=None, max_relative_position=64, **kwargs):
        for option in ("hierarchical_position", "custom_position_ids"):
            if kwargs.get(option) and not self.accepts_position_ids(option):
                raise ValueError(
                    f"{type(self).__name__} has no absolute positions: {option} is not available"
                )
        super().__init__(max_position=max_position, **kwargs)
        self.max_relative_position = max_relative_position

    @classmethod
    def accepts_position_ids(cls, option):
        """Whether an absolute-position option makes sense for this family."""
        return False

    def config_arguments(self):
        return {**super().config_arguments(), "max_relative_position": self.max_relative_position}

    def apply_position_embeddings(self, x):
        return x

    def compute_position_bias(self, inputs):
        # (seq, seq, key_size), one table shared by every layer and head.
        return self.apply(
            [inputs, inputs],
            RelativePositionEmbedding,
            input_dim=2 * self.max_relative_position + 1,
            output_dim=self.attention_key_size,
            name="Embedding-Relative-Position",
        )

    def variable_mapping(self):
        return _without_positions(super().variable_mapping())

    def hf_variable_mapping(self):
        return _without_positions(super().hf_variable_mapping())
