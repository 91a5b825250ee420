"""Format detection, the format-independent entry points, and their error messages."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from kerasformers.checkpoints import (
    CheckpointError,
    CheckpointReader,
    detect_format,
    open_checkpoint,
    save_checkpoint,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "tf_written"
BERT_DIR = DATA / "tiny_bert"
BERT = BERT_DIR / "bert_model.ckpt"


def test_checkpoint_error_is_value_error():
    assert issubclass(CheckpointError, ValueError)


@pytest.mark.parametrize(
    "given",
    [BERT, str(BERT) + ".index", str(BERT) + ".data-00000-of-00001", BERT_DIR, str(BERT_DIR)],
)
def test_detects_tensorflow(given):
    assert detect_format(given) == ("tf", str(BERT))


def test_directory_state_file_and_ambiguity(tmp_path):
    tensors = {"w": np.ones(2, np.float32)}
    save_checkpoint(tensors, tmp_path / "model.ckpt-1")
    save_checkpoint(tensors, tmp_path / "model.ckpt-2")  # the state file now points here
    assert detect_format(tmp_path) == ("tf", str(tmp_path / "model.ckpt-2"))
    # A state file written on another machine: fall back to the base name.
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "/elsewhere/run/model.ckpt-1"\n')
    assert detect_format(tmp_path) == ("tf", str(tmp_path / "model.ckpt-1"))
    (tmp_path / "checkpoint").unlink()
    with pytest.raises(CheckpointError, match=r"several TensorFlow checkpoints .*model\.ckpt-1"):
        detect_format(tmp_path)


def test_directory_preference_order(tmp_path):
    shutil.copy(str(BERT) + ".index", tmp_path)
    shutil.copy(str(BERT) + ".data-00000-of-00001", tmp_path)
    save_checkpoint({"w": np.ones(1, np.float32)}, tmp_path / "model.safetensors")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    (tmp_path / "training_args.bin").write_bytes(b"")
    (tmp_path / "model.weights.h5").write_bytes(b"")
    expected = [
        ("tf", tmp_path / "bert_model.ckpt"),
        ("safetensors", tmp_path / "model.safetensors"),
        ("torch", tmp_path / "pytorch_model.bin"),
        ("keras", tmp_path / "model.weights.h5"),
    ]
    for fmt, path in expected:
        assert detect_format(tmp_path) == (fmt, str(path))
        for p in tmp_path.glob(Path(path).name + "*"):
            p.unlink()
    # Only training_args.bin is left: not taken for a checkpoint.
    with pytest.raises(CheckpointError, match=rf"no checkpoint found in directory {tmp_path}"):
        detect_format(tmp_path)


def test_empty_directory_lists_what_was_looked_for(tmp_path):
    with pytest.raises(CheckpointError) as info:
        detect_format(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    for looked_for in (
        "checkpoint",
        ".index",
        "model.safetensors",
        "pytorch_model.bin",
        ".weights.h5",
    ):
        assert looked_for in message


def test_single_files(tmp_path):
    for name, fmt in (
        ("m.safetensors", "safetensors"),
        ("model.safetensors.index.json", "safetensors"),
        ("pytorch_model.bin", "torch"),
        ("w.pt", "torch"),
        ("w.pth", "torch"),
        ("pytorch_model.bin.index.json", "torch"),
        ("model.weights.h5", "keras"),
    ):
        (tmp_path / name).write_bytes(b"")
        assert detect_format(tmp_path / name) == (fmt, str(tmp_path / name))


def test_keras_weights_are_left_to_the_model(tmp_path):
    path = tmp_path / "model.weights.h5"
    path.write_bytes(b"")
    with pytest.raises(
        CheckpointError, match=r"model\.weights\.h5 is a Keras weights file.*load_weights"
    ):
        open_checkpoint(path)


def test_missing_and_unknown(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*nothing_here"):
        open_checkpoint(tmp_path / "nothing_here")
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(
        CheckpointError, match=r"unrecognised checkpoint file .*model\.onnx: expected .*safetensors"
    ):
        detect_format(tmp_path / "model.onnx")
    (tmp_path / "tf_model.h5").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"tf_model\.h5.*\.weights\.h5"):
        detect_format(tmp_path / "tf_model.h5")
    (tmp_path / "x.ckpt.data-00000-of-00001").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"x\.ckpt\.index is missing"):
        detect_format(tmp_path / "x.ckpt.data-00000-of-00001")


def test_save_checkpoint_formats(tmp_path):
    tensors = {"a": np.arange(3, dtype=np.float32)}
    assert save_checkpoint(tensors, tmp_path / "t" / "model.ckpt") == str(
        tmp_path / "t" / "model.ckpt"
    )
    assert (tmp_path / "t" / "model.ckpt.index").exists()
    assert (tmp_path / "t" / "checkpoint").exists()
    assert save_checkpoint(tensors, tmp_path / "s.safetensors") == str(tmp_path / "s.safetensors")
    for path in (tmp_path / "t" / "model.ckpt", tmp_path / "s.safetensors", tmp_path / "t"):
        with open_checkpoint(path) as reader:
            assert isinstance(reader, CheckpointReader)
            assert list(reader) == ["a"] and len(reader) == 1 and "a" in reader
            assert 3 not in reader and "b" not in reader
            np.testing.assert_array_equal(reader.get("a"), tensors["a"])
            assert "1 tensors" in repr(reader)
    with pytest.raises(CheckpointError, match=r"unknown format 'onnx'.*'tf' or 'safetensors'"):
        save_checkpoint(tensors, tmp_path / "x", format="onnx")
    with pytest.raises(CheckpointError, match=r"prefix .*x\.safetensors"):
        save_checkpoint(tensors, tmp_path / "x.safetensors", format="tf")
