"""Pretraining loop: exact resume (weights, optimizer state incl. accumulators,
dropout seeds, data position), the CLI end to end, and an output directory that
our builder and HF transformers' BertForMaskedLM both load to the same logits."""

import importlib.util
import json
import os

import keras
import numpy as np
import pytest

from kerasformers import pretraining as P
from kerasformers.backend import distribution as ddp
from kerasformers.models import build_transformer_model

pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEXTS = [
    "迈向充满希望的新世纪——一九九八年新年讲话",
    "中共中央总书记、国家主席江泽民发表1998年新年讲话",
    "这本书的翻译非常好，推荐给大家。ABC abc 123",
    "希望工程救助的百万儿童成长起来，科教兴国蔚然成风",
    "今天的天气很好，我们一起去公园散步吧",
    "人民日报记者报道了北京的新闻",
    "上海的经济发展很快，浦东新区建设了很多高楼",
    "他在学校里认真学习，老师表扬了他",
]
# Enough distinct texts for a held-out split with predicted positions.
TEXTS = [f"{text}第{i}次" for i in range(6) for text in TEXTS]


def _script(name):
    spec = importlib.util.spec_from_file_location(
        f"pretraining_{name}", os.path.join(ROOT, "examples", "pretraining", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain_data")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = root / "data"
    _script("data_utils").main(
        ["--out", str(out), "--maxlen", "16", "--heldout-percent", "30", "--min-count", "1",
         "--shard-size", "4", "--workers", "0", "--source", f"lines:{corpus}"]
    )  # fmt: skip
    return out


def tiny_model(vocab_size, seed, dropout=0.1):
    keras.utils.set_random_seed(seed)
    config = dict(
        vocab_size=vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        hidden_act="gelu",
        max_position_embeddings=16,
        type_vocab_size=2,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return build_transformer_model(config, with_mlm="linear")


def compiled(model, steps):
    optimizer = P.pretraining_optimizer(
        1e-2, total_steps=steps, warmup_steps=2, grad_accum_steps=2, optimizer="lamb"
    )
    return P.compile_for_pretraining(model, optimizer)


def _values(variables):
    return [keras.ops.convert_to_numpy(v) for v in variables]


def test_resume_gives_the_weights_of_an_uninterrupted_run(data, tmp_path):
    from kerasformers.tokenizers import load_vocab

    vocab = load_vocab(str(data / "vocab.txt"))
    dataset = P.ShardedDataset(str(data / "train"), P.MLMSampleBuilder(vocab, 16), 4, seed=1)
    steps = 6
    # One model object (one compiled train step); "a new process" is simulated
    # by overwriting every model and optimizer variable before resuming.
    model = compiled(tiny_model(len(vocab), 0), steps)
    initial = P.training_state(model)
    ckpt = str(tmp_path / "ckpt")
    # Stop at step 3: in the middle of a 2-batch accumulation, with dropout on.
    P.train(model, dataset, steps, ckpt, checkpoint_every=1, log_every=0, stop_after=3)
    assert P.latest_checkpoint(ckpt)["step"] == 3
    assert len([f for f in os.listdir(ckpt) if f.endswith(".npz")]) == 2  # keep=2
    noise = np.random.default_rng(7)
    for variable in model.variables + model.optimizer.variables:
        value = keras.ops.convert_to_numpy(variable)
        variable.assign(noise.integers(0, 3, value.shape).astype(value.dtype))
    P.train(model, dataset, steps, ckpt, checkpoint_every=2, log_every=0)
    assert P.latest_checkpoint(ckpt)["step"] == steps
    resumed = _values(model.variables) + _values(model.optimizer.variables)

    for variable, value in zip(model.variables + model.optimizer.variables, initial.values(),
                               strict=False):  # fmt: skip
        variable.assign(value)
    ddp.set_rng_state(initial)  # torch's dropout draws from its global generator
    P.train(model, dataset, steps, log_every=0)
    straight = _values(model.variables) + _values(model.optimizer.variables)
    paths = [v.path for v in model.variables + model.optimizer.variables]
    for a, b, path in zip(straight, resumed, paths, strict=True):
        # The same float ops in the same order: equal (bitwise in practice).
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=path)
    # A checkpoint of another architecture is refused, naming the problem.
    other = compiled(tiny_model(len(vocab) + 8, 0), steps)
    with pytest.raises(ValueError, match="Embedding-Token/embeddings has shape"):
        P.restore_checkpoint(ckpt, other)


def test_cli_trains_and_exports_a_model_our_builder_and_hf_load(data, tmp_path):
    out = tmp_path / "model"
    history = _script("pretrain").main(
        ["--data", str(data), "--out", str(out), "--layers", "1", "--hidden", "16",
         "--heads", "2", "--intermediate", "32", "--maxlen", "16", "--batch-size", "4",
         "--steps", "4", "--warmup", "1", "--eval-every", "2", "--checkpoint-every", "2",
         "--log-every", "2", "--optimizer", "adam", "--history", str(tmp_path / "h.json")]
    )  # fmt: skip
    assert [h["step"] for h in history] == [2, 4]
    assert all(0 <= h["eval"]["accuracy"] <= 1 and h["eval"]["tokens"] > 0 for h in history)
    assert json.loads((tmp_path / "h.json").read_text())["history"][-1]["step"] == 4
    names = set(os.listdir(out))
    assert {"config.json", "vocab.txt", "model.safetensors", "bert_model.ckpt.index"} <= names
    assert P.latest_checkpoint(str(out / "checkpoints"))["step"] == 4

    config = str(out / "config.json")
    x = np.array([[2, 10, 11, 4, 12, 3, 0, 0]], dtype="int32")
    s = np.zeros_like(x)
    logits = {}
    for name in ("model.safetensors", "bert_model.ckpt"):
        model = build_transformer_model(config, str(out / name), with_mlm="linear")
        # An eager call: compiling a predict function per model would double the time.
        logits[name] = keras.ops.convert_to_numpy(model([x, s], training=False))
    np.testing.assert_allclose(logits["model.safetensors"], logits["bert_model.ckpt"], atol=1e-6)

    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertForMaskedLM.from_pretrained(str(out)).eval()
    with torch.no_grad():
        reference = hf(
            input_ids=torch.tensor(x, dtype=torch.long),
            attention_mask=torch.tensor(x != 0, dtype=torch.long),
        ).logits.numpy()
    valid = x[0] != 0
    np.testing.assert_allclose(
        logits["model.safetensors"][:, valid], reference[:, valid], atol=1e-4
    )


def test_optimizer_stack_and_errors():
    opt = P.pretraining_optimizer(1e-3, total_steps=100, warmup_steps=10, grad_accum_steps=4)
    assert type(opt).__name__ == "PretrainingLAMBLRG"
    assert opt.grad_accum_steps == 4 and opt.lr_schedule == {100: 0.0, 10: 1.0}
    assert opt.exclude_from_layer_adaptation == ["Norm", "bias"]
    assert type(P.pretraining_optimizer(optimizer="adam")).__name__ == "AdamWLR"
    with pytest.raises(ValueError, match="optimizer must be"):
        P.pretraining_optimizer(optimizer="sgd")
    with pytest.raises(ValueError, match="warmup_steps < total_steps"):
        P.pretraining_optimizer(total_steps=10, warmup_steps=10)


@pytest.mark.slow  # one more compiled train step (~15 s on jax); the builder has fast tests
def test_cli_unilm_task_trains_with_the_seq2seq_mask(data, tmp_path):
    history = _script("pretrain").main(
        ["--data", str(data), "--task", "unilm", "--layers", "1", "--hidden", "16",
         "--heads", "2", "--intermediate", "32", "--maxlen", "16", "--batch-size", "4",
         "--steps", "2", "--warmup", "1", "--eval-every", "0", "--checkpoint-every", "0",
         "--log-every", "1", "--lr", "1e-2"]
    )  # fmt: skip
    assert [h["step"] for h in history] == [1, 2]
    assert all(np.isfinite(h["loss"]) and h["loss"] > 0 for h in history)
