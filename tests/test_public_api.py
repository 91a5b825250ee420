"""The public names of the bert4keras-shaped modules stay importable whatever the file layout.

The lists were recorded (on jax and torch) from the modules as they were before
they became packages, minus the stdlib modules they happened to import; a name
removed from a module breaks ported scripts, so it must fail here first.
"""

import importlib
import os
import subprocess
import sys

import pytest

PUBLIC = {
    "kerasformers.tokenizers": [
        "SpTokenizer", "Tokenizer", "TokenizerBase", "load_vocab", "save_vocab",
        "truncate_sequences",
        # added with tokenizer.json support
        "HFTokenizer",
    ],
    "kerasformers.snippets": [
        "AutoRegressiveDecoder", "DataGenerator", "DataGeneratorDataset", "ParallelApplyError",
        "ViterbiDecoder", "convert_to_str", "convert_to_unicode", "delete_arguments",
        "insert_arguments", "is_one_of", "is_py2", "is_string", "longest_common_subsequence",
        "longest_common_substring", "lowercase_and_normalize", "open", "orthogonally_resize",
        "parallel_apply", "parallel_apply_generator", "sequence_padding", "softmax", "strQ2B",
        "string_matching", "text_segmentate", "to_array", "truncate_sequences",
        # added with the package
        "check_inputs",
    ],
    "kerasformers.optimizers": [
        "AdaFactor", "AdaX", "Adam", "AdamEMA", "AdamGA", "AdamLA", "AdamLO", "AdamLR",
        "AdamLazy", "AdamW", "AdamWG", "AdamWLR", "LAMB",
        "extend_with_exponential_moving_average", "extend_with_gradient_accumulation",
        "extend_with_layer_adaptation", "extend_with_lazy_optimization", "extend_with_lookahead",
        "extend_with_parameter_wise_lr", "extend_with_piecewise_linear_lr",
        "extend_with_weight_decay", "piecewise_linear",
    ],
}  # fmt: skip

CASES = [(module, name) for module, names in PUBLIC.items() for name in names]


@pytest.mark.parametrize("module, name", CASES, ids=[f"{m}.{n}" for m, n in CASES])
def test_public_name_is_importable(module, name):
    namespace = {}
    exec(f"from {module} import {name}", namespace)
    assert namespace[name] is getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_all_and_dir_list_only_real_names(module):
    mod = importlib.import_module(module)
    for name in mod.__all__:
        assert getattr(mod, name) is not None, name
    assert set(PUBLIC[module]) <= set(dir(mod))


def test_re_exports_are_the_same_objects():
    from kerasformers.generation.autoregressive import AutoRegressiveDecoder
    from kerasformers.snippets import AutoRegressiveDecoder as FromSnippets
    from kerasformers.snippets import truncate_sequences
    from kerasformers.tokenizers.base import truncate_sequences as from_base

    assert FromSnippets is AutoRegressiveDecoder
    assert truncate_sequences is from_base


def test_tokenizers_import_neither_snippets_nor_keras():
    code = (
        "import sys, kerasformers.tokenizers\n"
        "print(sorted(m for m in ('kerasformers.snippets', 'keras') if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
