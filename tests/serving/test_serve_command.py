"""`kerasformers serve` refuses what it cannot serve with one line and exit code 2,
before it listens."""

import json
import socket

import pytest

from kerasformers.cli import main


def _error_line(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("kerasformers serve: error: ")
    return err


def test_serve_refuses_bad_directories(tmp_path, capsys, generation_dir):
    assert "not a directory" in _error_line(capsys, ["serve", str(tmp_path / "missing")])
    assert "no model config" in _error_line(capsys, ["serve", str(tmp_path)])
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    assert "--model" in _error_line(capsys, ["serve", str(tmp_path)])  # no model_type
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert "no tokenizer" in _error_line(capsys, ["serve", str(tmp_path)])
    err = _error_line(capsys, ["serve", str(generation_dir), "--model", "bart"])
    assert "bart" in err and "qwen2" in err
    assert "--max-batch" in _error_line(capsys, ["serve", str(generation_dir), "--max-batch", "0"])
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n")
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1,
                    "num_attention_heads": 2, "intermediate_size": 8, "vocab_size": 4,
                    "hidden_act": "gelu", "max_position_embeddings": 8})
    )  # fmt: skip
    assert "checkpoint" in _error_line(capsys, ["serve", str(tmp_path)]).lower()


def test_serve_reports_a_busy_port(generation_dir, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = ["serve", str(generation_dir), "--port", str(port), "--no-warmup"]
        assert str(port) in _error_line(capsys, argv)


def test_help_of_every_subcommand(capsys):
    for command in ("convert", "inspect", "serve"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
        assert f"kerasformers {command}" in capsys.readouterr().out
