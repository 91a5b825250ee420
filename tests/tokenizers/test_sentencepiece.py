"""Tests of kerasformers.tokenizers.SpTokenizer against sentencepiece itself.

The model is trained in the test on the Latin-script part of the tokenizer corpus.
"""

import pytest

from kerasformers.tokenizers import SpTokenizer
from tests.tokenizers.corpus import CORPUS


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    spm = pytest.importorskip("sentencepiece")
    prefix = tmp_path_factory.mktemp("sp") / "tiny"
    # Only the Latin-script characters: ~200 pieces cannot cover the corpus'
    # thousands of characters; the tests then meet unknown ones too.
    lines = ["".join(ch for ch in line if ord(ch) < 0x250) for line in CORPUS]
    lines = [line for line in lines if line.strip()]
    assert len(lines) > 300
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(prefix),
        vocab_size=200,
        character_coverage=0.98,
        hard_vocab_limit=False,
        # T5's layout: pad 0, eos 1, unk 2, no bos; plus a [MASK] piece.
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        user_defined_symbols=["[MASK]"],
        minloglevel=2,
    )
    path = str(prefix) + ".model"
    return path, spm.SentencePieceProcessor(model_file=path)


def test_sp_tokenizer_matches_sentencepiece(sp_model):
    path, sp = sp_model
    tokenizer = SpTokenizer(path)
    assert tokenizer.vocab_size == sp.get_piece_size()
    assert (tokenizer._token_pad_id, tokenizer._token_end_id, tokenizer._token_unk_id) == (0, 1, 2)
    assert tokenizer._token_mask_id == sp.piece_to_id("[MASK]")
    assert tokenizer._token_start_id is None
    for line in CORPUS:
        assert tokenizer.tokenize(line) == sp.encode_as_pieces(line) + ["</s>"]
        token_ids, segment_ids = tokenizer.encode(line)
        assert token_ids == sp.encode(line) + [1]
        assert segment_ids == [0] * len(token_ids)
        assert tokenizer.decode(token_ids) == sp.decode(sp.encode(line))


def test_sp_tokenizer_pairs_and_special_ids(sp_model):
    path, sp = sp_model
    tokenizer = SpTokenizer(path)
    token_ids, segment_ids = tokenizer.encode("hello world", "café")
    first, second = sp.encode("hello world"), sp.encode("café")
    assert token_ids == first + [1] + second + [1]
    assert segment_ids == [0] * (len(first) + 1) + [1] * (len(second) + 1)
    assert tokenizer._is_special(1) and tokenizer._is_special(2)
    assert not tokenizer._is_decodable(1)
    assert tokenizer._is_decodable(token_ids[0])
    assert not tokenizer._is_decodable(tokenizer.vocab_size)
    assert tokenizer.id_to_token(tokenizer.vocab_size + 3) == ""
    assert tokenizer.decode(tokenizer.encode("the quick brown fox")[0]) == "the quick brown fox"
    with pytest.raises(TypeError, match="list"):
        tokenizer.tokenize(["hello"])


def test_sp_tokenizer_start_token_and_missing_model(sp_model, tmp_path):
    path, sp = sp_model
    tokenizer = SpTokenizer(path, token_start="[MASK]", token_end=None)
    assert tokenizer.tokenize("hello") == ["[MASK]"] + sp.encode_as_pieces("hello")
    with pytest.raises(FileNotFoundError, match="missing.model"):
        SpTokenizer(str(tmp_path / "missing.model"))


def test_sp_tokenizer_rejects_ids_given_as_text(sp_model):
    path, _ = sp_model
    tokenizer = SpTokenizer(path)
    with pytest.raises(TypeError, match=r"first_text must be a text \(str\).*item 0 is of type"):
        tokenizer.encode([5, 6])
    # Pieces (str tokens) are still accepted, as in bert4keras.
    assert tokenizer.encode(["▁hello", "</s>"])[0] == [tokenizer.token_to_id("▁hello"), 1]
