"""Bad input to the WordPiece Tokenizer: each is an error that says what was wrong."""

import pytest

from kerasformers.tokenizers import Tokenizer, load_vocab

VOCAB = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b", "##c"])}


def test_missing_vocab_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "vocab.txt"
    with pytest.raises(FileNotFoundError, match="nope"):
        load_vocab(str(missing))
    with pytest.raises(FileNotFoundError, match="nope"):
        Tokenizer(str(missing))


def test_non_str_text_raises_type_error():
    tokenizer = Tokenizer({"[UNK]": 0, "a": 1})
    with pytest.raises(TypeError, match="int"):
        tokenizer.tokenize(123)
    with pytest.raises(TypeError, match="bytes"):
        tokenizer.tokenize(b"a")
    with pytest.raises(TypeError, match="NoneType"):
        tokenizer.encode(None)
    with pytest.raises(TypeError, match="float"):
        tokenizer.rematch(1.5, [])


# ----------------------------------------------------- ids outside the vocab


@pytest.mark.parametrize("bad_id", [999999, 7, -1])
def test_decode_of_an_id_outside_the_vocab_names_it_and_the_range(bad_id):
    tokenizer = Tokenizer(VOCAB)
    pattern = rf"token id {bad_id} is outside the vocabulary .*valid ids: 0\.\.6"
    with pytest.raises(ValueError, match=pattern):
        tokenizer.decode([2, 4, bad_id, 3])
    with pytest.raises(ValueError, match=pattern):
        tokenizer.id_to_token(bad_id)
    with pytest.raises(ValueError, match=pattern):
        tokenizer.ids_to_tokens([4, bad_id])
    # In-range ids still decode, numpy integers included.
    np = pytest.importorskip("numpy")
    assert tokenizer.decode(np.array([2, 4, 5, 3])) == "a b"
    assert tokenizer.id_to_token(np.int64(6)) == "##c"


def test_an_id_without_a_token_inside_the_range_says_so():
    # Ids are line numbers: a duplicated line leaves the id of its first copy empty.
    tokenizer = Tokenizer({"[UNK]": 0, "a": 2, "b": 3})
    with pytest.raises(ValueError, match=r"token id 1 has no token .*0\.\.3"):
        tokenizer.decode([1])
    with pytest.raises(ValueError, match=r"token id 'x' is not an integer"):
        tokenizer.id_to_token("x")


# ------------------------------------------------------- ids given as text


def test_encode_of_a_list_of_ids_is_a_type_error():
    tokenizer = Tokenizer(VOCAB)
    expected = r"must be a text \(str\) or a list of str tokens, got a list whose item"
    with pytest.raises(TypeError, match=rf"first_text {expected} 0 is of type int"):
        tokenizer.encode([2, 4, 3])
    with pytest.raises(TypeError, match=rf"second_text {expected} 1 is of type int"):
        tokenizer.encode("a", ["b", 5])
    np = pytest.importorskip("numpy")
    with pytest.raises(TypeError, match=r"first_text must be a text \(str\).*got ndarray"):
        tokenizer.encode(np.array([2, 4, 3]))
    with pytest.raises(TypeError, match=r"second_text.*got int"):
        tokenizer.encode("a", 5)


def test_encode_still_takes_text_pairs_maxlen_and_token_lists():
    tokenizer = Tokenizer(VOCAB)
    assert tokenizer.encode("a bc", "b") == ([2, 4, 5, 6, 3, 5, 3], [0, 0, 0, 0, 0, 1, 1])
    # 7 tokens for 6: the longer first sequence loses one, then (a tie) one more.
    assert tokenizer.encode("a a a", "b b", maxlen=6) == ([2, 4, 3, 5, 5, 3], [0] * 3 + [1] * 3)
    # A list of str tokens (bert4keras accepted one) is taken as already tokenized.
    assert tokenizer.encode(["[CLS]", "a", "zzz", "[SEP]"]) == ([2, 4, 1, 3], [0, 0, 0, 0])
    assert tokenizer.encode(("[CLS]", "a", "[SEP]"), ["b", "[SEP]"]) == (
        [2, 4, 3, 3],
        [0, 0, 0, 1],
    )


# ------------------------------------------------- vocab without [UNK]


def test_vocab_dict_without_unk_fails_at_construction():
    vocab = {"[CLS]": 0, "[SEP]": 1, "a": 2}
    expected = r"vocab \(a dict of 3 tokens\) has no unknown token '\[UNK\]'"
    with pytest.raises(ValueError, match=expected):
        Tokenizer(vocab)
    with pytest.raises(ValueError, match=r"vocab \(a dict of 0 tokens\) has no unknown token"):
        Tokenizer({})
    with pytest.raises(TypeError, match="token_dict must be a vocab file path or a .* got list"):
        Tokenizer(["[UNK]", "a"])


def test_vocab_file_without_unk_names_the_file(tmp_path):
    path = tmp_path / "no_unk_vocab.txt"
    path.write_text("[CLS]\n[SEP]\na\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no_unk_vocab\.txt.*no unknown token '\[UNK\]'"):
        Tokenizer(str(path))


def test_token_unk_names_the_vocabs_own_unknown_token():
    tokenizer = Tokenizer({"<unk>": 0, "[CLS]": 1, "[SEP]": 2, "a": 3}, token_unk="<unk>")
    assert tokenizer._token_unk_id == 0
    assert tokenizer.tokenize("a zz") == ["[CLS]", "a", "<unk>", "[SEP]"]
    assert tokenizer.encode("a zz")[0] == [1, 3, 0, 2]
    assert tokenizer.rematch("a zz", ["[CLS]", "a", "<unk>", "[SEP]"]) == [[], [0], [2, 3], []]
    with pytest.raises(ValueError, match="no unknown token '<unk>'"):
        Tokenizer({"[UNK]": 0, "a": 1}, token_unk="<unk>")


def test_token_unk_none_allows_a_vocab_without_one_and_rejects_unknown_text():
    tokenizer = Tokenizer({"[CLS]": 0, "[SEP]": 1, "a": 2, "##b": 3}, token_unk=None)
    assert tokenizer._token_unk_id is None
    assert tokenizer.encode("ab a") == ([0, 2, 3, 2, 1], [0] * 5)
    with pytest.raises(ValueError, match=r"'zz' .*not in the vocab.*token_unk=None"):
        tokenizer.encode("a zz")
    with pytest.raises(ValueError, match=r"token 'zz' is not in the vocab.*token_unk=None"):
        tokenizer.token_to_id("zz")
    with pytest.raises(ValueError, match=r"token 'c' is not in the vocab"):
        tokenizer.tokens_to_ids(["a", "c"])
    # An empty vocab still splits text (kerasformers.pretraining reads its tables).
    assert "ab c".translate(Tokenizer({}, token_unk=None)._split_table).split() == ["ab", "c"]
