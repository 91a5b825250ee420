"""kerasformers.evaluation against hand-worked cases (counts worked out in the comments)."""

import pytest

from kerasformers.evaluation import (
    PRF,
    char_f1,
    entity_prf,
    exact_match,
    prf,
    segmentation_prf,
    tags_to_spans,
    tags_to_words,
    words_to_spans,
)


def test_prf_counts_and_zero_conventions():
    # P = 3/4, R = 3/6, F1 = 2 * 3 / (4 + 6) = 0.6
    assert prf(3, 4, 6) == PRF(0.75, 0.5, 0.6, 3, 4, 6)
    assert prf(0, 0, 5) == PRF(0.0, 0.0, 0.0, 0, 0, 5)
    assert prf(0, 2, 0) == PRF(0.0, 0.0, 0.0, 0, 2, 0)
    assert prf(0, 0, 0).f1 == 0.0
    with pytest.raises(ValueError, match="correct .5. cannot exceed"):
        prf(5, 4, 6)
    with pytest.raises(ValueError, match="predicted must be an int >= 0"):
        prf(1, -1, 2)


def test_bmes_spans_as_msra_ships_them():
    tags = ["B-ORG", "M-ORG", "M-ORG", "E-ORG", "O", "S-LOC", "B-PER", "E-PER"]
    assert tags_to_spans(tags) == [(0, 3, "ORG"), (5, 5, "LOC"), (6, 7, "PER")]


def test_bioes_strict_drops_fragments():
    tags = [
        "B-PER", "I-PER",  # 0-1: never closed by E -> dropped
        "O",
        "E-LOC",  # 3: E without B -> dropped
        "B-LOC", "I-ORG", "E-LOC",  # 4-6: type changes inside -> dropped
        "B-ORG", "E-ORG",  # 7-8: kept
        "I-PER",  # 9: I without B -> dropped
        "S-PER",  # 10: kept
        "B-LOC",  # 11: open at the end -> dropped
    ]  # fmt: skip
    assert tags_to_spans(tags) == [(7, 8, "ORG"), (10, 10, "PER")]


def test_bio_spans_follow_the_conll_rule():
    tags = ["B-PER", "I-PER", "I-LOC", "O", "I-ORG", "I-ORG", "B-ORG", "B-ORG", "I-ORG"]
    # I-LOC after a PER entity starts a LOC entity; a leading I-ORG starts one too;
    # B-ORG always starts a new entity.
    expected = [(0, 1, "PER"), (2, 2, "LOC"), (4, 5, "ORG"), (6, 6, "ORG"), (7, 8, "ORG")]
    assert tags_to_spans(tags) == expected
    assert tags_to_spans(tags, scheme="bio") == expected
    # Auto-detection picks BIOES as soon as an E, S or M appears.
    assert tags_to_spans(["B-PER", "I-PER", "E-PER"]) == [(0, 2, "PER")]
    assert tags_to_spans(["B-PER", "I-PER"], scheme="bioes") == []


def test_untyped_tags_and_bad_tags():
    assert tags_to_spans(["B", "I", "O", "B"]) == [(0, 1, None), (3, 3, None)]
    with pytest.raises(ValueError, match="tag 'X-PER' at position 1"):
        tags_to_spans(["O", "X-PER"])
    with pytest.raises(ValueError, match="scheme must be one of"):
        tags_to_spans(["O"], scheme="iob2")
    with pytest.raises(ValueError, match="not part of BIO"):
        tags_to_spans(["S-PER"], scheme="bio")


def test_entity_prf_hand_worked():
    gold = [
        ["B-PER", "E-PER", "O", "S-LOC", "O"],  # PER(0,1), LOC(3,3)
        ["B-ORG", "M-ORG", "E-ORG", "O", "O"],  # ORG(0,2)
        ["O", "O", "O", "O", "O"],  # nothing
    ]
    pred = [
        ["B-PER", "E-PER", "O", "S-ORG", "O"],  # PER right, ORG(3,3) wrong type
        ["B-ORG", "E-ORG", "O", "O", "O"],  # ORG(0,1) wrong boundary
        ["O", "S-LOC", "O", "O", "O"],  # LOC(1,1) spurious
    ]
    # correct 1, predicted 4, gold 3: P = 1/4, R = 1/3, F1 = 2 / 7
    score = entity_prf(gold, pred)
    assert (score.correct, score.predicted, score.gold) == (1, 4, 3)
    assert score.precision == pytest.approx(0.25)
    assert score.recall == pytest.approx(1 / 3)
    assert score.f1 == pytest.approx(2 / 7)


def test_entity_prf_spans_and_tags_mix_between_gold_and_pred():
    gold = [["B-LOC", "E-LOC", "O"]]
    assert entity_prf(gold, [[(0, 1, "LOC")]]).f1 == 1.0
    assert entity_prf(gold, [{(0, 1, "LOC"), (2, 2, "PER")}]) == PRF(0.5, 1.0, 2 / 3, 1, 2, 1)
    with pytest.raises(ValueError, match="gold has 1 sentences but pred has 2"):
        entity_prf(gold, [[], []])
    with pytest.raises(ValueError, match="sentence 0 mixes tags and spans"):
        entity_prf(gold, [["O", (0, 1, "LOC")]])


def test_tags_to_words_and_lenient_repairs():
    assert tags_to_words("我爱北京天安门", "ssbebme") == ["我", "爱", "北京", "天安门"]
    # "m" after "s" starts a word; "e" after "e" starts a word; a leading "m" too.
    assert tags_to_words("abcdef", ["m", "s", "m", "e", "e", "B"]) == ["a", "b", "cd", "e", "f"]
    assert tags_to_words("", "") == []
    with pytest.raises(ValueError, match="3 characters but 2 tags"):
        tags_to_words("abc", "bs")
    with pytest.raises(ValueError, match="tag 'x' at position 1"):
        tags_to_words("ab", "sx")


def test_words_to_spans():
    assert words_to_spans(["中国", "人", "民银行"]) == [(0, 1), (2, 2), (3, 5)]
    with pytest.raises(ValueError, match="word 1 must be a non-empty str"):
        words_to_spans(["a", ""])


def test_segmentation_prf_hand_worked():
    gold = [["我", "爱", "北京", "天安门"], ["中华", "人民", "共和国"]]
    pred = [["我爱", "北京", "天安", "门"], ["中华人民", "共和国"]]
    # sentence 1: gold spans {0,1,2-3,4-6}, pred {0-1,2-3,4-5,6}: 1 correct, 4 / 4
    # sentence 2: gold {0-1,2-3,4-6}, pred {0-3,4-6}: 1 correct, 2 / 3
    # total correct 2, predicted 6, gold 7: P = 1/3, R = 2/7, F1 = 4/13
    score = segmentation_prf(gold, pred)
    assert (score.correct, score.predicted, score.gold) == (2, 6, 7)
    assert score.f1 == pytest.approx(4 / 13)
    tags = segmentation_prf(["ssbebme", "bebebme"], ["bebebes", "bmmebme"], inputs="tags")
    assert tags == score


def test_segmentation_prf_rejects_mismatched_texts():
    with pytest.raises(ValueError, match="sentence 0: the predicted words do not spell"):
        segmentation_prf([["北京"]], [["上海"]])
    with pytest.raises(ValueError, match="sentence 0 has 2 gold tags but 3"):
        segmentation_prf(["be"], ["sss"], inputs="tags")
    with pytest.raises(ValueError, match="inputs must be one of"):
        segmentation_prf([], [], inputs="chars")


def test_exact_match_and_char_f1():
    assert exact_match(["北京", "上海 ", "a"], ["北京", "上", " a"]) == pytest.approx(2 / 3)
    # "北京大学" vs "北京": overlap 2, F1 = 2 * 2 / (4 + 2) = 2/3
    assert char_f1(["北京大学"], ["北京"]) == pytest.approx(2 / 3)
    # Multiplicity counts: gold "aab", pred "ab b" -> {a:2,b:1} & {a:1,b:2} = 2 chars,
    # F1 = 2 * 2 / (3 + 3) = 2/3; both empty -> 1; one empty -> 0.
    assert char_f1(["aab", "", "x"], ["ab b", " ", ""]) == pytest.approx((2 / 3 + 1 + 0) / 3)
    with pytest.raises(ValueError, match="got no sentences"):
        char_f1([], [])
    with pytest.raises(ValueError, match="gold has 1 sentences but pred has 0"):
        exact_match(["a"], [])
