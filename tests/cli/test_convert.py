"""`kerasformers convert`: Google TF checkpoints -> HF safetensors that transformers
loads with our outputs (float32, tolerance 1e-4), and back to TF bit for bit.

SRC checkpoints: the BERT and ALBERT ones TensorFlow 2.21 wrote (tests/data/tf_written),
and tiny randomised RoFormer / GPT-2 models written by our TF writer. The RoFormer
source also holds what training leaves in a TF checkpoint besides the model
(global_step, Adam's m and v slots): they are not model tensors, so they are not
converted (a note on stderr names them) and the round trip gives back exactly the
model tensors.
"""

import io
import json
import os
import shutil
import subprocess
import sys

import keras
import ml_dtypes
import numpy as np
import pytest

from kerasformers.checkpoints.tf_bundle import write_tf_checkpoint
from kerasformers.cli.display import Progress
from kerasformers.cli.families import arguments
from kerasformers.models import MODELS, _auto_model, build_transformer_model, translate_config
from tests.cli.helpers import (
    TF_ALBERT,
    TF_BERT,
    assert_one_line_error,
    bits,
    google_config,
    run_cli,
    tensors_of,
    write_json,
)
from tests.conftest import TINY_T5, tiny_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4
SLOTS = ("global_step", "bert/encoder/layer_0/output/dense/kernel/adam_m")


def _from_tf_written(folder):
    def make(directory):
        for name in os.listdir(folder):
            shutil.copy(os.path.join(folder, name), directory)
        return directory

    return make


def _from_ours(model, config, slots=False, **heads):
    """A tiny randomised `model` written as a Google-named TF checkpoint by our writer
    (with an optimizer's leftovers when `slots`), its config under Google's keys."""

    def make(directory):
        builder = tiny_model(model, seed=3, **heads)._kf_builder
        tensors = {n: np.asarray(v) for n, v in builder.checkpoint_tensors("tf").items()}
        if slots:
            tensors["global_step"] = np.asarray(1000, np.int64)
            kernel = tensors[SLOTS[1][: -len("/adam_m")]]
            tensors[SLOTS[1]] = np.full_like(kernel, 0.5)
        write_tf_checkpoint(tensors, os.path.join(directory, "model.ckpt"))
        write_json(os.path.join(directory, "bert_config.json"), config)
        with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(f"t{i}" for i in range(97)))
        return directory

    return make


# name -> (make SRC, --model, HF class with heads, our head options, HF head outputs)
CASES = {
    "bert": (
        _from_tf_written(TF_BERT),
        "bert",
        "BertForPreTraining",
        dict(with_pool=True, with_nsp="linear", with_mlm="linear"),
        lambda out: [out.seq_relationship_logits, out.prediction_logits],
    ),
    "albert": (
        _from_tf_written(TF_ALBERT),
        "albert",
        "AlbertForPreTraining",
        dict(with_pool=True, with_nsp="linear", with_mlm="linear"),
        lambda out: [out.sop_logits, out.prediction_logits],
    ),
    "roformer": (
        _from_ours("roformer", google_config(), slots=True, with_mlm=True),
        "roformer",
        "RoFormerForMaskedLM",
        dict(with_mlm="linear"),
        lambda out: [out.logits],
    ),
    "gpt2": (
        _from_ours("gpt2", google_config(type_vocab_size=0, layer_norm_eps=1e-5)),
        "gpt2",
        "GPT2LMHeadModel",
        dict(final_activation="linear"),
        lambda out: [out.logits],
    ),
}


def _config_path(directory):
    for name in ("bert_config.json", "albert_config.json"):
        if os.path.isfile(os.path.join(directory, name)):
            return os.path.join(directory, name)
    raise AssertionError(f"no config in {directory}")


def _inputs(config, segments=True):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, config["vocab_size"], (2, 11)).astype("int32")
    segment_ids = np.zeros_like(ids)
    segment_ids[:, 6:] = 1
    return (ids, segment_ids) if segments else (ids, None)


def _ours(model, ids, segments):
    inputs = [ids, segments] if segments is not None else [ids]
    out = model.predict(inputs, verbose=0)  # one compiled program (jax: not one per op)
    return out if isinstance(out, list) else [out]


def _hf(model, ids, segments):
    kwargs = {"input_ids": torch.as_tensor(ids, dtype=torch.long)}
    if segments is not None:
        kwargs["token_type_ids"] = torch.as_tensor(segments, dtype=torch.long)
    with torch.no_grad():
        return model.eval()(**kwargs, output_hidden_states=True)


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    make, model, hf_class, heads, refs = CASES[request.param]
    src = make(str(tmp_path_factory.mktemp(f"{request.param}_src")))
    dst = str(tmp_path_factory.mktemp(f"{request.param}_dst") / "hf")
    code, out, err = run_cli("convert", src, dst, "--model", model)
    assert code == 0, err
    return dict(
        name=request.param,
        src=src,
        dst=dst,
        model=model,
        hf_class=hf_class,
        heads=heads,
        refs=refs,
        out=out,
        err=err,
    )


def test_transformers_loads_the_output_with_our_outputs(case):
    """The HF class with the heads gives our head outputs (which depend on every
    position of the sequence output); the base class (AutoModel: BertModel, ...)
    reads the same encoder from the directory."""
    config_path = _config_path(case["src"])
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    ids, segments = _inputs(config, segments=case["model"] != "gpt2")
    ours = build_transformer_model(config_path, case["src"], model=case["model"], **case["heads"])
    hf = getattr(transformers, case["hf_class"]).from_pretrained(case["dst"])
    out = _hf(hf, ids, segments)
    for mine, theirs in zip(_ours(ours, ids, segments), case["refs"](out), strict=True):
        assert mine.shape == tuple(theirs.shape)
        assert np.max(np.abs(mine - theirs.numpy())) <= TOL
    base = transformers.AutoModel.from_pretrained(case["dst"])
    sequence = _hf(base, ids, segments).last_hidden_state.numpy()
    np.testing.assert_allclose(sequence, out.hidden_states[-1].numpy(), atol=1e-6)

    with open(os.path.join(case["dst"], "config.json"), encoding="utf-8") as f:
        written = json.load(f)
    assert written["architectures"] == [case["hf_class"]]
    assert "verified" in case["out"] and case["out"].count("\n") == 1
    if os.path.isfile(os.path.join(case["src"], "vocab.txt")):
        with open(os.path.join(case["src"], "vocab.txt"), "rb") as a:
            with open(os.path.join(case["dst"], "vocab.txt"), "rb") as b:
                assert a.read() == b.read()


def test_back_to_tf_gives_the_model_tensors_bit_for_bit(case, tmp_path):
    code, out, err = run_cli("convert", case["dst"], tmp_path / "back")
    assert code == 0, err
    original = tensors_of(case["src"])
    back = tensors_of(str(tmp_path / "back"))
    # Optimizer slots and global_step are not model tensors: left out, and said so.
    skipped = [n for n in SLOTS if n in original]
    for name in skipped:
        del original[name]
        assert name in case["err"]
    assert case["name"] != "roformer" or len(skipped) == 2
    assert sorted(back) == sorted(original)
    for name, value in original.items():
        assert back[name].dtype == value.dtype and back[name].shape == value.shape, name
        assert np.array_equal(bits(back[name]), bits(value)), name
    # The configs written beside read back into the model of the source's config.
    with open(_config_path(case["src"]), encoding="utf-8") as f:
        want = _builder(case["model"], json.load(f)).config_arguments()
    for config in (
        os.path.join(case["dst"], "config.json"),
        os.path.join(tmp_path, "back", os.path.basename(_config_path(case["src"]))),
    ):
        with open(config, encoding="utf-8") as f:
            assert _builder(case["model"], json.load(f)).config_arguments() == want


def test_bfloat16_and_shards_load_in_transformers(tmp_path):
    """--dtype bfloat16 casts every tensor (checked bit for bit against the cast, back
    in TF form); --shard-size forces an index with several shards transformers loads."""
    dst = tmp_path / "bf16"
    code, out, err = run_cli(
        "convert", TF_BERT, dst, "--model", "bert", "--dtype", "bfloat16", "--shard-size", "60KB"
    )
    assert code == 0, err
    index = dst / "model.safetensors.index.json"
    with open(index, encoding="utf-8") as f:
        shards = set(json.load(f)["weight_map"].values())
    assert len(shards) >= 3 and not (dst / "model.safetensors").exists()
    assert all((dst / s).stat().st_size <= 60_000 for s in shards)
    with open(dst / "config.json", encoding="utf-8") as f:
        assert json.load(f)["dtype"] == "bfloat16"

    code, out, err = run_cli("convert", dst, tmp_path / "back")  # bfloat16 stays bfloat16
    assert code == 0, err
    back, original = tensors_of(str(tmp_path / "back")), tensors_of(TF_BERT)
    assert sorted(back) == sorted(original)
    for name, value in original.items():
        assert back[name].dtype == ml_dtypes.bfloat16
        assert np.array_equal(bits(back[name]), bits(value.astype(ml_dtypes.bfloat16))), name

    hf = transformers.BertModel.from_pretrained(str(dst), dtype=torch.float32)
    reference = transformers.BertModel.from_pretrained(str(_f32_dst(tmp_path)))
    ids, segments = _inputs({"vocab_size": 333})
    got = _hf(hf, ids, segments).last_hidden_state.numpy()
    want = _hf(reference, ids, segments).last_hidden_state.numpy()
    assert 0 < np.max(np.abs(got - want)) < 0.1  # bfloat16 rounding, nothing worse


def _f32_dst(tmp_path):
    dst = tmp_path / "f32"
    code, _, err = run_cli("convert", TF_BERT, dst, "--model", "bert")
    assert code == 0, err
    return dst


def test_refuses_to_overwrite_without_force(tmp_path):
    dst = _f32_dst(tmp_path)
    before = (dst / "model.safetensors").stat().st_mtime_ns
    code, out, err = run_cli("convert", TF_BERT, dst, "--model", "bert")
    assert_one_line_error(code, err, "already exists")
    assert "--force" in err and str(dst) in err and out == ""
    assert (dst / "model.safetensors").stat().st_mtime_ns == before
    code, out, err = run_cli("convert", TF_BERT, dst, "--model", "bert", "--force", "--progress")
    assert code == 0, err
    assert "verified" in out and out.count("\n") == 1  # progress goes to stderr only
    assert f"writing {dst / 'model.safetensors'} 62/62" in err.splitlines()
    assert f"verifying {dst / 'model.safetensors'} 62/62" in err.splitlines()


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_redraws_one_line_on_a_terminal():
    terminal = _Terminal()
    progress = Progress(enabled=True, stream=terminal)
    progress.start("writing")
    for done in range(1, 4):
        progress(done, 3)
    progress.finish()
    text = terminal.getvalue()
    assert text.endswith("\r\x1b[Kwriting 3/3\n") and text.count("\n") == 1  # one line
    quiet = _Terminal()
    Progress(enabled=False, stream=quiet).start("writing")
    assert quiet.getvalue() == ""


def test_a_bad_write_fails_verification(tmp_path, monkeypatch):
    """The writer is made to swap two same-shaped tensors: the read-back check catches
    it (exit code 1), naming a tensor."""
    from kerasformers import checkpoints

    save = checkpoints.save_checkpoint

    def swapping(tensors, path, **options):
        tensors = dict(tensors)
        a, b = "bert.pooler.dense.bias", "bert.embeddings.LayerNorm.bias"
        tensors[a], tensors[b] = tensors[b], tensors[a]
        return save(tensors, path, **options)

    monkeypatch.setattr(checkpoints, "save_checkpoint", swapping)
    code, out, err = run_cli("convert", TF_BERT, tmp_path / "out", "--model", "bert")
    assert_one_line_error(code, err, "verification failed", wanted_code=1)
    assert "bert.embeddings.LayerNorm.bias" in err or "bert.pooler.dense.bias" in err


def _truncated(tmp_path):
    folder = tmp_path / "truncated"
    shutil.copytree(TF_BERT, folder)
    data = folder / "bert_model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    return folder


def _two_layers(tmp_path):
    with open(os.path.join(TF_BERT, "bert_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    return write_json(tmp_path / "config.json", {**config, "num_hidden_layers": 2})


def _gpt2_ml(tmp_path):
    folder = tmp_path / "gpt2_ml"
    folder.mkdir()
    builder = tiny_model("gpt2_ml", randomize=False)._kf_builder
    builder.save_weights_as_checkpoint(str(folder / "model.ckpt"))
    write_json(folder / "bert_config.json", google_config(type_vocab_size=0))
    return folder


# name -> (arguments after "convert" given tmp_path, what the one-line error says)
ERRORS = {
    "missing source": (lambda t: [t / "nothing", t / "out"], "checkpoint not found"),
    "unknown model": (lambda t: [TF_BERT, t / "out", "--model", "bort"], "allowed: auto, bert,"),
    "bad dtype": (lambda t: [TF_BERT, t / "out", "--dtype", "int8"], "--dtype must be one of"),
    "bad shard size": (lambda t: [TF_BERT, t / "out", "--shard-size", "lots"], "--shard-size"),
    "no model_type": (lambda t: [TF_BERT, t / "out"], "has no model_type"),
    "corrupt source": (lambda t: [_truncated(t), t / "out", "--model", "bert"], "truncated"),
    "config does not fit": (  # 3 layers in the checkpoint, 2 in the config
        lambda t: [TF_BERT, t / "out", "--model", "bert", "--config", _two_layers(t)],
        "does not fit the model",
    ),
    "bad config": (
        lambda t: [
            TF_BERT,
            t / "out",
            "--model",
            "bert",
            "--config",
            write_json(t / "c.json", [1]),
        ],
        "must hold a JSON object",
    ),
    "unwritable target name": (
        lambda t: [TF_BERT, t / "out.bin", "--model", "bert"],
        "cannot write",
    ),
    "one naming only": (
        lambda t: [_gpt2_ml(t), t / "out", "--model", "gpt2_ml"],
        "cannot convert gpt2_ml to HF safetensors",
    ),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_user_mistakes_are_one_line_errors(name, tmp_path):
    arguments, expected = ERRORS[name]
    code, out, err = run_cli("convert", *arguments(tmp_path))
    assert_one_line_error(code, err, expected)
    assert not (tmp_path / "out").exists()


def test_shard_size_needs_a_safetensors_target(tmp_path):
    code, out, err = run_cli("convert", _f32_dst(tmp_path), tmp_path / "out", "--shard-size", "1GB")
    assert_one_line_error(code, err, "--shard-size applies to safetensors only")


def _environment():
    env = dict(os.environ)
    env.setdefault("KERAS_BACKEND", keras.backend.backend())
    env["PYTHONPATH"] = os.getcwd() + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_entry_points(tmp_path):
    """`python -m kerasformers` and the installed console script."""
    help_run = subprocess.run(
        [sys.executable, "-m", "kerasformers", "convert", "--help"],
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=120,
    )
    assert help_run.returncode == 0, help_run.stderr
    assert "SRC" in help_run.stdout and "--shard-size" in help_run.stdout

    script = os.path.join(os.path.dirname(sys.executable), "kerasformers")
    run = subprocess.run(
        [script, "convert", TF_BERT, str(tmp_path / "out"), "--model", "bert"],
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "verified" in run.stdout
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert (tmp_path / "out" / "config.json").is_file()


# model= name -> the tiny config of the builder whose configs are written
_BERT = google_config()
_T5 = dict(TINY_T5, num_heads=2, d_kv=16, d_ff=37)
CONFIG_FAMILIES = {
    "bert": _BERT,
    "roberta": {**_BERT, "pad_token_id": 1},
    "albert": {**_BERT, "embedding_size": 16},
    "electra": {**_BERT, "embedding_size": 16},
    "roformer": _BERT,
    "gpt": {**_BERT, "hidden_act": "gelu_new", "shared_segment_embeddings": True},
    "gpt2": {**_BERT, "type_vocab_size": 0},
    "t5.1.0": _T5,
    "t5.1.1": _T5,
    "mt5.1.1": _T5,
    "mt5.1.1_encoder": _T5,
}


_GOOGLE_BERT = [
    "attention_probs_dropout_prob",
    "hidden_act",
    "hidden_dropout_prob",
    "hidden_size",
    "initializer_range",
    "intermediate_size",
    "max_position_embeddings",
    "num_attention_heads",
    "num_hidden_layers",
    "type_vocab_size",
    "vocab_size",
]
GOOGLE_KEYS = {
    "bert": _GOOGLE_BERT,
    "albert": [*_GOOGLE_BERT, "embedding_size", "inner_group_num", "num_hidden_groups"],
}


def _builder(model, config):
    """The builder `build_transformer_model(config, model=model)` makes, not built."""
    cls = MODELS[model]
    accepted = arguments(cls)
    return cls(**{k: v for k, v in translate_config(config).items() if k in accepted})


@pytest.mark.parametrize("model", sorted(CONFIG_FAMILIES))
def test_written_configs_read_back_as_the_same_model(model):
    """hf_config: a config transformers makes its class from, naming the family for
    model="auto" and reading back into the same arguments; google_config: the same
    with the model given (Google's configs name no family)."""
    builder = _builder(model, CONFIG_FAMILIES[model])
    hf = builder.hf_config()
    (architecture,) = hf["architectures"]
    getattr(transformers, architecture)(transformers.AutoConfig.for_model(**hf))
    if not model.endswith("_encoder"):  # "auto" reads an encoder's config as the whole T5
        assert MODELS[_auto_model(hf, "config.json")] is type(builder)
    assert _builder(model, json.loads(json.dumps(hf))).config_arguments() == (
        builder.config_arguments()
    )
    google = json.loads(json.dumps(builder.google_config()))
    assert "model_type" not in google
    if model in GOOGLE_KEYS:  # the keys of Google's own bert_config.json / albert_config.json
        assert sorted(google) == sorted(GOOGLE_KEYS[model])
    assert _builder(model, google).config_arguments() == builder.config_arguments()
