"""`kerasformers inspect`: format, family and naming, tensor table, size and checksums
of a TF bundle (written by TensorFlow), a safetensors file, a sharded safetensors set
and a torch .bin; damaged files are reported (a failed checksum: exit code 1) or
refused in one line (exit code 2)."""

import json
import math
import shutil
import struct
import zipfile

import numpy as np
import pytest

from kerasformers.checkpoints import CheckpointError, open_checkpoint
from kerasformers.checkpoints.tf_bundle import TFCheckpointReader
from tests.cli.helpers import TF_BERT, assert_one_line_error, run_cli, write_json
from tests.conftest import tiny_model

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """{kind: (path, format, family, naming, checksum status)} of checkpoints to inspect."""
    root = tmp_path_factory.mktemp("inspect")
    gpt2 = tiny_model("gpt2", randomize=False)._kf_builder
    gpt2.save_weights_as_checkpoint(str(root / "gpt2" / "model.safetensors"))
    bert = tiny_model("bert", randomize=False, with_mlm=True)._kf_builder
    index = bert.save_weights_as_checkpoint(
        str(root / "sharded" / "model.safetensors"), max_shard_size="20KB"
    )
    state = {n: torch.from_numpy(np.array(v)) for n, v in bert.checkpoint_tensors().items()}
    (root / "torch").mkdir()
    torch.save(state, root / "torch" / "pytorch_model.bin")
    return {
        "tf": (TF_BERT, "tf", "bert", "google", "ok"),
        "safetensors": (str(root / "gpt2"), "safetensors", "gpt2", "hf", "none"),
        "sharded": (index, "safetensors", "bert", "hf", "none"),
        "torch": (str(root / "torch"), "torch", "bert", "hf", "ok"),
    }


def _expected(path):
    with open_checkpoint(path) as reader:
        rows = [
            {"name": n, "shape": list(reader.shape(n)), "dtype": reader.dtype(n).name}
            for n in reader.names()
        ]
        size = sum(math.prod(reader.shape(n)) * reader.dtype(n).itemsize for n in reader.names())
    return rows, size


@pytest.mark.parametrize("kind", ["tf", "safetensors", "sharded", "torch"])
def test_json_report(written, kind):
    path, fmt, family, naming, checksums = written[kind]
    code, out, err = run_cli("inspect", path, "--json")
    assert code == 0, err
    report = json.loads(out)
    rows, size = _expected(path)
    assert report["format"] == fmt
    assert (report["family"], report["naming"]) == (family, naming)
    assert report["tensor_count"] == len(rows) and report["tensors"] == rows
    assert report["total_bytes"] == size and report["more"] == 0
    assert report["checksums"]["status"] == checksums
    if kind == "sharded":
        assert len(report["files"]) >= 3 and report["files"][0].endswith(".index.json")
    if kind == "tf":
        assert report["also_fits"] == ["roberta"]  # Google's names do not tell them apart
        assert report["checksums"]["detail"] == "ok (62 tensors, CRC-32C each)"


def test_text_report_of_a_tf_bundle_written_by_tensorflow():
    code, out, err = run_cli("inspect", TF_BERT, "--limit", "5")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1] == "format:    tf (2 file(s))"
    assert lines[2].startswith("family:    bert (google names; the names fit roberta just as well)")
    assert "tensors:   62" in lines and "size:      330,092 bytes (322.4 KiB)" in lines
    assert "checksums: ok (62 tensors, CRC-32C each)" in lines
    table = lines[lines.index("") + 1 :]
    assert table[0].split() == ["name", "shape", "dtype"]
    assert table[1].split() == ["bert/embeddings/LayerNorm/beta", "[48]", "float32"]
    assert len(table) == 1 + 5 + 1 and table[-1] == "… 57 more"


def test_family_from_a_config_beside_and_unknown_names(tmp_path, written):
    folder = tmp_path / "with_config"
    shutil.copytree(written["safetensors"][0], folder)
    write_json(folder / "config.json", {"model_type": "gpt2"})
    code, out, err = run_cli("inspect", folder, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["family"], report["naming"]) == ("gpt2", "hf")
    assert "config.json" in report["family_note"]

    from safetensors.numpy import save_file

    save_file({"foo.weight": np.zeros((3, 4), np.float32)}, str(tmp_path / "odd.safetensors"))
    code, out, err = run_cli("inspect", tmp_path / "odd.safetensors")
    assert code == 0, err
    assert "family:    unknown [no family's names fit these tensors]" in out.splitlines()


def test_a_damaged_tf_data_file_names_the_failing_tensor(tmp_path):
    folder = tmp_path / "damaged"
    shutil.copytree(TF_BERT, folder)
    data = folder / "bert_model.ckpt.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    failing = []
    with TFCheckpointReader(str(folder / "bert_model.ckpt")) as reader:
        for name in reader.names():
            try:
                reader.get(name)
            except CheckpointError:
                failing.append(name)
    assert len(failing) == 1
    code, out, err = run_cli("inspect", folder)
    assert_one_line_error(code, err, f"checksum mismatch for tensor {failing[0]!r}", wanted_code=1)
    assert "checksums: checksum mismatch for tensor" in out  # the report is still printed


def test_a_damaged_torch_zip_fails_its_crc(tmp_path, written):
    path = tmp_path / "pytorch_model.bin"
    shutil.copy(f"{written['torch'][0]}/pytorch_model.bin", path)
    with zipfile.ZipFile(path) as archive:
        member = max(archive.infolist(), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", raw[member.header_offset + 26 :][:4])
    start = member.header_offset + 30 + name_length + extra_length
    raw[start + member.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    code, out, err = run_cli("inspect", path)
    assert_one_line_error(code, err, f"zip CRC mismatch in {path}", wanted_code=1)


def test_truncated_or_missing_files_are_one_line_errors(tmp_path, written):
    source = f"{written['safetensors'][0]}/model.safetensors"
    truncated = tmp_path / "model.safetensors"
    with open(source, "rb") as f:
        raw = f.read()
    truncated.write_bytes(raw[: len(raw) // 2])
    code, out, err = run_cli("inspect", truncated)
    assert_one_line_error(code, err, str(truncated))
    assert out == ""
    code, out, err = run_cli("inspect", tmp_path / "nothing.safetensors")
    assert_one_line_error(code, err, "checkpoint not found")
    code, out, err = run_cli("inspect", TF_BERT, "--limit", "-1")
    assert_one_line_error(code, err, "--limit must be >= 0")


# model, naming, head options -> the family reported first, and the others that fit
# just as well (their names are the same)
NAMES = [
    ("roformer", "google", (("with_mlm", True),), "nezha", ["roformer"]),
    ("roformer", "hf", (), "roformer", []),
    ("bert", "hf", (("with_nsp", True),), "bert", []),
    ("electra", "google", (("with_discriminator", True),), "electra", []),
    ("roformer_v2", "google", (), "roformer_v2", []),
    ("gpt2", "hf", (), "gpt2", []),
    ("llama", "hf", (), "llama", ["mistral", "gemma"]),
    ("qwen2", "hf", (), "qwen2", []),
    ("qwen3", "hf", (), "qwen3", []),
    ("t5.1.1", "hf", (), "t5.1.1", ["mt5.1.1"]),
    ("mt5.1.1_encoder", "google", (), "mt5.1.1_encoder", []),
]


@pytest.mark.parametrize("model, naming, options, family, also", NAMES)
def test_the_names_tell_the_family(model, naming, options, family, also):
    """Each family's own names (written by a tiny model of it) are told apart from
    every other family's; look-alikes are reported as such, never picked silently."""
    from kerasformers.cli.families import detect_family, mapped_names, probe
    from kerasformers.models import MODELS

    builder = probe(MODELS[model], options)
    names = [n for layer in mapped_names(builder, naming).values() for n in layer]
    match = detect_family(names + ["global_step"])
    assert (match.family, match.naming, match.also_fits) == (family, naming, also)
    assert match.unused == ["global_step"]
