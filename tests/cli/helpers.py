"""What the CLI tests share: running the command in-process, and tiny checkpoints."""

import contextlib
import io
import json
import os

import numpy as np

from kerasformers.cli.main import main
from tests.conftest import DATA, TINY

TF_BERT = os.path.join(DATA, "tf_written", "tiny_bert")  # written by TensorFlow 2.21
TF_ALBERT = os.path.join(DATA, "tf_written", "tiny_albert")


def run_cli(*argv):
    """`kerasformers *argv` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code, err, expected, wanted_code=2):
    """A user-facing failure: the exit code, one line on stderr naming `expected`."""
    assert code == wanted_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert expected in lines[0], lines[0]


def google_config(**overrides):
    """The conftest TINY sizes under Google's bert_config.json keys."""
    config = {
        "vocab_size": TINY["vocab_size"],
        "hidden_size": TINY["hidden_size"],
        "num_hidden_layers": TINY["num_hidden_layers"],
        "num_attention_heads": TINY["num_attention_heads"],
        "intermediate_size": TINY["intermediate_size"],
        "hidden_act": TINY["hidden_act"],
        "max_position_embeddings": TINY["max_position"],
        "type_vocab_size": 2,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
    }
    config.update(overrides)
    return config


def write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return path


def tensors_of(path):
    """{name: array} of a whole checkpoint."""
    from kerasformers.checkpoints import open_checkpoint

    with open_checkpoint(path) as reader:
        return {name: reader.get(name) for name in reader.names()}


def bits(array):
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)
