"""HFTokenizer (tokenizer.json) against the `tokenizers` package it wraps.

Three tokenizers are trained here, offline, on the mixed corpus (see
hf_fixtures.py): byte-level BPE, Unigram and WordPiece. The reference for ids,
tokens, offsets and decoding is a separate `tokenizers.Tokenizer` read from the
same file; bert4keras' truncation is checked against `truncate_sequences`
(bert4keras' own algorithm) and hand-built templates. Chat templates:
test_chat_template.py.
"""

import itertools
import json
import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from kerasformers.tokenizers import HFTokenizer, TokenizerBase, truncate_sequences  # noqa: E402
from kerasformers.tokenizers.hf import _longest_first  # noqa: E402
from tests.tokenizers import hf_fixtures as fx  # noqa: E402

tokenizers = pytest.importorskip("tokenizers")

KINDS = ["bpe", "unigram", "wordpiece"]
TRAIN = {
    "bpe": fx.train_byte_level_bpe,
    "unigram": fx.train_unigram,
    "wordpiece": fx.train_wordpiece,
}
CONFIG = {
    "bpe": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "unigram": {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": None},
    "wordpiece": {"pad_token": "[PAD]", "unk_token": "[UNK]", "mask_token": "[MASK]"},
}
PAIRS = list(zip(fx.SAMPLES, fx.SAMPLES[::-1], strict=True))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_tokenizers")
    return {kind: fx.save(TRAIN[kind](), root / kind, CONFIG[kind]) for kind in KINDS}


@pytest.fixture(scope="module", params=KINDS)
def kind(request):
    return request.param


@pytest.fixture(scope="module")
def pair(folders, kind):
    """(ours, the package's own Tokenizer read from the same file)."""
    path = str(folders[kind] / "tokenizer.json")
    return HFTokenizer(folders[kind]), tokenizers.Tokenizer.from_file(path)


# ------------------------------------------------------------ ids, tokens, pairs


def test_ids_tokens_and_segments_equal_the_package(pair):
    ours, ref = pair
    for text in fx.TEXTS + fx.SAMPLES:
        expected = ref.encode(text)
        assert ours.encode(text) == (expected.ids, expected.type_ids), repr(text)
        assert ours.tokenize(text) == expected.tokens, repr(text)
        assert ours.tokens_to_ids(ours.tokenize(text)) == expected.ids
        plain = ref.encode(text, add_special_tokens=False)
        assert ours.encode(text, add_special_tokens=False)[0] == plain.ids
        assert ours.tokenize(text, add_special_tokens=False) == plain.tokens
    for first, second in PAIRS:
        expected = ref.encode(first, second)
        assert ours.encode(first, second) == (expected.ids, expected.type_ids)


def test_pair_segment_ids_follow_the_template(pair, kind):
    ours, ref = pair
    first, second = "Hello world 你好", "emoji 😀 and ＡＢＣ"
    a = ref.encode(first, add_special_tokens=False).ids
    b = ref.encode(second, add_special_tokens=False).ids
    token_ids, segment_ids = ours.encode(first, second)
    if kind == "wordpiece":  # [CLS] $A [SEP] $B:1 [SEP]:1
        cls, sep = ref.token_to_id("[CLS]"), ref.token_to_id("[SEP]")
        assert token_ids == [cls, *a, sep, *b, sep]
        assert segment_ids == [0] * (len(a) + 2) + [1] * (len(b) + 1)
    elif kind == "unigram":  # $A </s> $B:1 </s>:1
        eos = ref.token_to_id("</s>")
        assert token_ids == [*a, eos, *b, eos]
        assert segment_ids == [0] * (len(a) + 1) + [1] * (len(b) + 1)
    else:  # byte-level: nothing added, the second text is segment 1
        assert token_ids == a + b
        assert segment_ids == [0] * len(a) + [1] * len(b)


def test_special_tokens_written_in_the_text_stay_whole(pair, kind):
    ours, ref = pair
    specials = {
        "bpe": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "unigram": ["</s>", "<pad>"],
        "wordpiece": ["[MASK]", "[SEP]", "[CLS]"],
    }[kind]
    text = f"x{specials[0]}y 你好{specials[1]} {specials[-1]}😀" + "".join(specials)
    tokens = ours.tokenize(text, add_special_tokens=False)
    token_ids = ours.encode(text, add_special_tokens=False)[0]
    for special in specials:
        assert tokens.count(special) == text.count(special), (special, tokens)
        assert token_ids.count(ref.token_to_id(special)) == text.count(special)


def test_special_token_properties(pair, kind):
    ours, ref = pair
    expected = {
        "bpe": (None, None, "<|endoftext|>", None),
        "unigram": (None, "</s>", "<pad>", "<unk>"),
        "wordpiece": ("[CLS]", "[SEP]", "[PAD]", "[UNK]"),
    }[kind]
    assert (ours.token_start, ours.token_end, ours.token_pad, ours.token_unk) == expected
    for name, token in zip(["start", "end", "pad", "unk"], expected, strict=True):
        assert getattr(ours, f"_token_{name}_id") == (token and ref.token_to_id(token))
    assert ours.pad_id == ref.token_to_id(expected[2])
    assert ours.vocab_size == ref.get_vocab_size(with_added_tokens=True)
    assert ours.eos_token_id == (ref.token_to_id(CONFIG[kind]["eos_token"]) if kind != "wordpiece"
                                 else None)  # fmt: skip
    if kind == "wordpiece":
        assert ours._token_mask_id == ref.token_to_id("[MASK]")
    assert isinstance(ours, TokenizerBase)


# ------------------------------------------------------------ decoding


def test_byte_level_decode_round_trips_exactly(folders):
    ours = HFTokenizer(folders["bpe"])
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    for text in fx.TEXTS + fx.SAMPLES:
        token_ids = ours.encode(text)[0]
        assert ours.decode(token_ids, skip_special_tokens=False) == text, repr(text)
        # By default special tokens are dropped, as bert4keras' decode drops them.
        stripped = text
        for special in specials:
            stripped = stripped.replace(special, "")
        assert ours.decode(token_ids) == stripped, repr(text)


def test_decode_equals_the_package(pair):
    ours, ref = pair
    for text in fx.SAMPLES:
        token_ids = ref.encode(text).ids
        assert ours.decode(token_ids) == ref.decode(token_ids, skip_special_tokens=True)
        assert ours.decode(token_ids, skip_special_tokens=False) == ref.decode(
            token_ids, skip_special_tokens=False
        )
    np = pytest.importorskip("numpy")
    token_ids = ref.encode(fx.SAMPLES[0]).ids
    assert ours.decode(np.array(token_ids)) == ours.decode(token_ids)


def test_out_of_vocab_ids_and_tokens_are_errors(pair, kind):
    ours, _ = pair
    size = ours.vocab_size
    for bad in (size, -1, 10**9):
        with pytest.raises(ValueError, match=rf"token id {bad} is outside .*0\.\.{size - 1}"):
            ours.decode([1, bad])
        with pytest.raises(ValueError, match=rf"token id {bad} is outside"):
            ours.id_to_token(bad)
    with pytest.raises(ValueError, match="not an integer"):
        ours.decode([1, "a"])
    if kind == "bpe":  # no unknown token
        with pytest.raises(ValueError, match="'no-such-token' is not in the vocab"):
            ours.token_to_id("no-such-token")
    else:
        assert ours.token_to_id("no-such-token") == ours._token_unk_id is not None


# ------------------------------------------------------------ truncation


def test_longest_first_lengths_equal_truncate_sequences():
    """The closed form against bert4keras' pop-one-at-a-time truncate_sequences."""
    for a, b, budget in itertools.product(range(9), range(9), range(18)):
        first, second = list(range(a)), list(range(b))
        truncate_sequences(budget, -1, first, second)
        assert _longest_first([a, b], budget) == [len(first), len(second)], (a, b, budget)
    for a, budget in itertools.product(range(9), range(12)):
        assert _longest_first([a], budget) == [min(a, budget)]


def _template(kind, ref, first, second=None):
    """ids and segment ids of the trained templates, built by hand."""
    if kind == "wordpiece":
        cls, sep = ref.token_to_id("[CLS]"), ref.token_to_id("[SEP]")
        ids, segments = [cls, *first, sep], [0] * (len(first) + 2)
        if second is not None:
            ids, segments = ids + [*second, sep], segments + [1] * (len(second) + 1)
        return ids, segments
    if kind == "unigram":
        eos = ref.token_to_id("</s>")
        ids, segments = [*first, eos], [0] * (len(first) + 1)
        if second is not None:
            ids, segments = ids + [*second, eos], segments + [1] * (len(second) + 1)
        return ids, segments
    if second is None:
        return list(first), [0] * len(first)
    return first + second, [0] * len(first) + [1] * len(second)


@pytest.mark.parametrize("truncate_from", ["right", "left"])
def test_maxlen_truncates_like_bert4keras_keeping_special_tokens(pair, kind, truncate_from):
    ours, ref = pair
    n_specials = {"bpe": (0, 0), "unigram": (1, 2), "wordpiece": (2, 3)}[kind]
    for first_text, second_text in PAIRS[:12]:
        a = ref.encode(first_text, add_special_tokens=False).ids
        b = ref.encode(second_text, add_special_tokens=False).ids
        for maxlen in sorted({n_specials[1], n_specials[1] + 1, 5, 9, 16, len(a) + len(b) + 3}):
            first, second = list(a), list(b)
            # bert4keras pops from the right end (index -1) or the left (0).
            truncate_sequences(maxlen - n_specials[1], -1 if truncate_from == "right" else 0,
                               first, second)  # fmt: skip
            expected = _template(kind, ref, first, second)
            got = ours.encode(first_text, second_text, maxlen=maxlen, truncate_from=truncate_from)
            assert got == expected, (first_text, second_text, maxlen)
            assert len(got[0]) <= maxlen
        first = list(a)
        truncate_sequences(7 - n_specials[0], -1 if truncate_from == "right" else 0, first)
        assert ours.encode(first_text, maxlen=7, truncate_from=truncate_from) == _template(
            kind, ref, first
        )
        # A maxlen that fits changes nothing.
        expected = ref.encode(first_text, second_text)
        got = ours.encode(first_text, second_text, maxlen=len(expected.ids))
        assert got == (expected.ids, expected.type_ids)
    if n_specials[1]:
        with pytest.raises(ValueError, match=f"maxlen=1 is too small.*adds {n_specials[1]}"):
            ours.encode("a b", "c", maxlen=1)
    with pytest.raises(ValueError, match="truncate_from"):
        ours.encode("a", maxlen=3, truncate_from="middle")


# ------------------------------------------------------------ rematch


def _gpt2_byte_table():
    """GPT-2's byte alphabet: printable bytes stand for themselves, the others for 256 + n."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [byte for byte in range(256) if byte not in printable]
    table = {chr(byte): byte for byte in printable}
    table.update({chr(256 + n): byte for n, byte in enumerate(others)})
    return table


_BYTES = _gpt2_byte_table()


def _byte_level_bytes(token):
    """The UTF-8 bytes a byte-level BPE token stands for."""
    return bytes(_BYTES[ch] for ch in token)


def test_rematch_maps_tokens_to_the_text_they_came_from(pair, kind):
    ours, ref = pair
    for text in fx.SAMPLES:
        tokens = ours.tokenize(text)
        mapping = ours.rematch(text, tokens)
        assert len(mapping) == len(tokens)
        encoding = ref.encode(text)
        for token, indices, special, (start, end) in zip(
            tokens, mapping, encoding.special_tokens_mask, encoding.offsets, strict=True
        ):
            if special:  # added by the post-processor: no text
                assert indices == [], token
                continue
            assert indices == list(range(start, end))
            piece = "".join(text[i] for i in indices)
            if kind == "bpe":
                # A token may hold part of a character (one byte of an emoji).
                assert _byte_level_bytes(token) in piece.encode("utf-8"), (token, piece)
                if not _byte_level_bytes(token).decode("utf-8", "replace").count("\ufffd"):
                    assert _byte_level_bytes(token).decode("utf-8") == piece
            elif kind == "wordpiece" and token != "[UNK]":
                # The span may hold what the normaliser drops (a ZWJ) or pads (CJK).
                assert ref.normalizer.normalize_str(piece).strip() == token.removeprefix("##")
        # Without special tokens, or cut by maxlen, tokens still map to the same places.
        plain = ours.tokenize(text, add_special_tokens=False)
        expected = [m for m, s in zip(mapping, encoding.special_tokens_mask, strict=True) if not s]
        assert ours.rematch(text, plain) == expected
        if len(plain) > 3:
            cut = ours.tokenize(
                text, maxlen=3 + ours.backend_tokenizer.num_special_tokens_to_add(False)
            )
            cut_mapping = ours.rematch(text, cut)
            assert [m for m in cut_mapping if m] == [m for m in expected[:3] if m]
    assert ours.rematch("abc", ["no-such-token"]) == [[]]


# ------------------------------------------------------------ loading


def test_loading_from_a_file_or_a_folder(folders):
    by_folder = HFTokenizer(folders["wordpiece"])
    by_file = HFTokenizer(str(folders["wordpiece"] / "tokenizer.json"))
    text = fx.SAMPLES[1]
    assert by_folder.encode(text) == by_file.encode(text)
    assert by_file.token_pad == "[PAD]"  # the config beside the file is read
    # An explicit config (a dict, a file or a folder) replaces the one beside it.
    assert HFTokenizer(folders["wordpiece"], tokenizer_config={}).token_pad is None
    assert HFTokenizer(folders["wordpiece"], folders["bpe"]).token_pad == "<|endoftext|>"
    config_file = str(folders["bpe"] / "tokenizer_config.json")
    assert HFTokenizer(folders["wordpiece"], config_file).token_pad == "<|endoftext|>"
    assert "HFTokenizer(" in repr(by_folder) and "WordPiece" in repr(by_folder)


def test_config_tokens_missing_from_the_tokenizer_are_added(tmp_path):
    """As transformers does: a named config token absent from tokenizer.json becomes special."""
    folder = fx.save(fx.train_byte_level_bpe(), tmp_path, {
        "pad_token": {"__type": "AddedToken", "content": "<pad>", "special": True},
        "image_token": "<img>", "extra_special_tokens": {"audio_token": "<aud>"},
    })  # fmt: skip
    ours = HFTokenizer(folder)
    assert ours.special_tokens_map == {"pad_token": "<pad>", "image_token": "<img>",
                                       "audio_token": "<aud>"}  # fmt: skip
    base = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size(True)
    assert ours.vocab_size == base + 3
    assert ours.pad_id == base
    assert ours.tokenize("a<pad>b<img><aud>", add_special_tokens=False)[1:] == [
        "<pad>", "b", "<img>", "<aud>",
    ]  # fmt: skip
    assert ours.decode(ours.encode("a<pad>b")[0]) == "ab"


def test_missing_paths_and_bad_files_name_the_path(tmp_path, folders):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=r"nope does not exist.*tokenizer\.json"):
        HFTokenizer(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "vocab.txt").write_text("[UNK]\n")
    (empty / "config.json").write_text("{}")
    with pytest.raises(
        FileNotFoundError, match=r"no tokenizer\.json in the folder .*empty.*config"
    ):
        HFTokenizer(empty)
    broken = tmp_path / "broken.json"
    broken.write_text('{"model": ')
    with pytest.raises(ValueError, match="broken.json is not a tokenizer.json"):
        HFTokenizer(broken)
    bad_config = tmp_path / "bad_config.json"
    bad_config.write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer config .*bad_config.json is not valid JSON"):
        HFTokenizer(folders["bpe"], bad_config)
    bad_config.write_text(json.dumps(["a list"]))
    with pytest.raises(ValueError, match="must hold a JSON object, got list"):
        HFTokenizer(folders["bpe"], bad_config)
    with pytest.raises(FileNotFoundError, match="tokenizer_config .*nope does not exist"):
        HFTokenizer(folders["bpe"], missing)
    with pytest.raises(TypeError, match="tokenizer_config must be a path or a dict, got int"):
        HFTokenizer(folders["bpe"], 3)
    with pytest.raises(ValueError, match="bos_token .*must be a str or an AddedToken"):
        HFTokenizer(folders["bpe"], {"bos_token": 5})


def test_non_str_text_is_a_type_error(pair):
    ours, _ = pair
    with pytest.raises(TypeError, match="first_text must be a str, got list"):
        ours.encode([1, 2])
    with pytest.raises(TypeError, match="second_text must be a str, got int"):
        ours.encode("a", 3)
    with pytest.raises(TypeError, match="text must be a str, got bytes"):
        ours.rematch(b"a", [])
