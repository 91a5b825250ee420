"""Data and utility helpers of `bert4keras.snippets`, with the same names and arguments.

One topic per module, everything re-exported here:

- `text`: string helpers, `text_segmentate`, longest common substring/subsequence;
- `padding`: `sequence_padding` (and `truncate_sequences`, from the tokenizers);
- `arrays`: `to_array`, `softmax`, `orthogonally_resize`;
- `compat`: `insert_arguments`, `delete_arguments`, `is_one_of`, `is_py2`;
- `io`: bert4keras' indexable `open`;
- `parallel`: `parallel_apply` (processes or threads, errors raised instead of hanging);
- `viterbi`: `ViterbiDecoder`;
- `data_generator`: the `DataGenerator` batch template (with a `keras.utils.PyDataset`
  bridge) and `inputs`: `check_inputs`, which it uses to catch ids outside a model's
  embedding tables;
- `webserving`: `WebServing`, a function served over HTTP (FastAPI + uvicorn, imported
  when one is made);
- `AutoRegressiveDecoder`, from `kerasformers.generation.autoregressive`.

The names that need Keras (`DataGenerator`, `DataGeneratorDataset`, `check_inputs`,
`AutoRegressiveDecoder`) load on first use, so importing this package needs no backend.
"""

from typing import TYPE_CHECKING

from kerasformers.snippets.arrays import orthogonally_resize, softmax, to_array
from kerasformers.snippets.compat import (  # is_py2 and open: importable, kept out of `*`
    delete_arguments,
    insert_arguments,
    is_one_of,
    is_py2,  # noqa: F401
)
from kerasformers.snippets.io import open  # noqa: F401
from kerasformers.snippets.padding import sequence_padding, truncate_sequences
from kerasformers.snippets.parallel import (
    ParallelApplyError,
    parallel_apply,
    parallel_apply_generator,
)
from kerasformers.snippets.text import (
    convert_to_str,
    convert_to_unicode,
    is_string,
    longest_common_subsequence,
    longest_common_substring,
    lowercase_and_normalize,
    string_matching,
    strQ2B,
    text_segmentate,
)
from kerasformers.snippets.viterbi import ViterbiDecoder
from kerasformers.snippets.webserving import WebServing

if TYPE_CHECKING:  # imported lazily by __getattr__ below
    from kerasformers.generation.autoregressive import AutoRegressiveDecoder
    from kerasformers.snippets.data_generator import DataGenerator, DataGeneratorDataset
    from kerasformers.snippets.inputs import check_inputs

__all__ = [
    "AutoRegressiveDecoder",
    "DataGenerator",
    "DataGeneratorDataset",
    "ParallelApplyError",
    "ViterbiDecoder",
    "WebServing",
    "check_inputs",
    "convert_to_str",
    "convert_to_unicode",
    "delete_arguments",
    "insert_arguments",
    "is_one_of",
    "is_string",
    "longest_common_subsequence",
    "longest_common_substring",
    "lowercase_and_normalize",
    "orthogonally_resize",
    "parallel_apply",
    "parallel_apply_generator",
    "sequence_padding",
    "softmax",
    "strQ2B",
    "string_matching",
    "text_segmentate",
    "to_array",
    "truncate_sequences",
]  # `open` is importable by name but kept out of `*` so it never shadows the builtin.

# name -> module holding it. These modules import keras (the generation package does
# too), so they load on first use: the rest of snippets works without a Keras backend.
_LAZY = {
    "AutoRegressiveDecoder": "kerasformers.generation.autoregressive",
    "DataGenerator": "kerasformers.snippets.data_generator",
    "DataGeneratorDataset": "kerasformers.snippets.data_generator",
    "check_inputs": "kerasformers.snippets.inputs",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
