"""Operations missing from `keras.ops`, shared by layers and models
(bert4keras' `bert4keras.backend`).

This package is the only part of the library allowed to branch on
`keras.backend.backend()`; everything else is plain `keras.ops`.
"""

from kerasformers.backend.generation import (
    autocast,
    compile_generation,
    compiles_per_shape,
    random_uniform,
    update_cache,
)
from kerasformers.backend.ops import (
    activation_name,
    apply_rotary_position_embeddings,
    check_ids_in_range,
    dense,
    dot_product_attention,
    gelu_erf,
    gelu_tanh,
    get_activation,
    infinity,
    layer_norm,
    multilabel_categorical_crossentropy,
    piecewise_linear,
    sequence_masking,
    set_gelu,
    set_packed_linear,
    sparse_multilabel_categorical_crossentropy,
    tied_dense,
)
from kerasformers.backend.recompute import (
    recompute_enabled,
    recompute_grad,
)
from kerasformers.backend.train_steps import (
    embedding_train_step,
)
from kerasformers.backend.variables import (
    assign_variable,
    discard_variable_value,
    variable_storage,
    variable_to_numpy,
)

__all__ = [
    "activation_name",
    "apply_rotary_position_embeddings",
    "assign_variable",
    "autocast",
    "check_ids_in_range",
    "compile_generation",
    "compiles_per_shape",
    "dense",
    "discard_variable_value",
    "dot_product_attention",
    "embedding_train_step",
    "gelu_erf",
    "gelu_tanh",
    "get_activation",
    "infinity",
    "layer_norm",
    "multilabel_categorical_crossentropy",
    "piecewise_linear",
    "random_uniform",
    "recompute_enabled",
    "recompute_grad",
    "sequence_masking",
    "set_gelu",
    "set_packed_linear",
    "sparse_multilabel_categorical_crossentropy",
    "tied_dense",
    "update_cache",
    "variable_storage",
    "variable_to_numpy",
]
