"""kerasformers.snippets: bert4keras' data and utility helpers (DataGenerator is in
test_data_generator.py, parallel_apply in test_parallel.py, check_inputs in
test_check_inputs.py)."""

import itertools
import os
import subprocess
import sys
import unicodedata

import numpy as np
import pytest

from kerasformers import snippets
from kerasformers.snippets import (
    convert_to_str,
    convert_to_unicode,
    delete_arguments,
    insert_arguments,
    is_one_of,
    is_string,
    longest_common_subsequence,
    longest_common_substring,
    lowercase_and_normalize,
    orthogonally_resize,
    sequence_padding,
    softmax,
    string_matching,
    strQ2B,
    text_segmentate,
    to_array,
    truncate_sequences,
)


def _pad_reference(items, length, value, mode):
    """One sequence axis, plain Python: cut to the first `length`, pad on one side."""
    out = []
    for x in items:
        x = list(x)[:length]
        pad = [value] * (length - len(x))
        out.append(x + pad if mode == "post" else pad + x)
    return np.array(out)


def test_sequence_padding_post_pre_and_length(rng):
    np.testing.assert_array_equal(
        sequence_padding([[1, 2, 3], [4]]), np.array([[1, 2, 3], [4, 0, 0]])
    )
    np.testing.assert_array_equal(
        sequence_padding([[1, 2, 3], [4]], mode="pre", value=-1),
        np.array([[1, 2, 3], [-1, -1, 4]]),
    )
    # Cutting keeps the head in both modes (bert4keras slices x[:length] before padding).
    np.testing.assert_array_equal(sequence_padding([[1, 2, 3]], length=2), [[1, 2]])
    np.testing.assert_array_equal(sequence_padding([[1, 2, 3]], length=2, mode="pre"), [[1, 2]])
    items = [list(rng.integers(1, 9, size=n)) for n in (0, 3, 7, 5)]
    for length in (None, 4, np.int64(9)):
        for mode in ("post", "pre"):
            want = _pad_reference(items, length or 7, -1, mode)
            got = sequence_padding(items, length=length, value=-1, mode=mode)
            np.testing.assert_array_equal(got, want)
            assert got.dtype.kind == "i"


def test_sequence_padding_seq_dims_and_item_shape(rng):
    a = np.ones((2, 3))
    b = np.ones((1, 2)) * 2
    out = sequence_padding([a, b], seq_dims=2)
    assert out.shape == (2, 2, 3)
    assert out[1, 0, 1] == 2 and out[1, 1].sum() == 0 and out[1, 0, 2] == 0
    vecs = [np.ones((2, 4)), np.ones((3, 4))]
    assert sequence_padding(vecs).shape == (2, 3, 4)
    # seq_dims=2 against an element-by-element reference, int length broadcast to both axes.
    mats = [rng.normal(size=shape) for shape in ((2, 5), (4, 1), (3, 3))]
    for mode in ("post", "pre"):
        got = sequence_padding(mats, length=3, value=7.0, seq_dims=2, mode=mode)
        want = np.full((3, 3, 3), 7.0)
        for row, m in enumerate(mats):
            for i in range(min(3, m.shape[0])):
                for j in range(min(3, m.shape[1])):
                    ri = i if mode == "post" else 3 - min(3, m.shape[0]) + i
                    rj = j if mode == "post" else 3 - min(3, m.shape[1]) + j
                    want[row, ri, rj] = m[i, j]
        np.testing.assert_array_equal(got, want)
    # Per-axis lengths default to the longest along each axis.
    assert sequence_padding(mats, seq_dims=2).shape == (3, 4, 5)


def test_sequence_padding_errors():
    with pytest.raises(ValueError, match="mode must be 'post' or 'pre'"):
        sequence_padding([[1]], mode="middle")
    with pytest.raises(ValueError, match="empty batch"):
        sequence_padding([])
    with pytest.raises(ValueError, match=r"item 1 has trailing shape \(5,\)"):
        sequence_padding([np.ones((2, 4)), np.ones((2, 5))])
    with pytest.raises(ValueError, match="seq_dims must be an int >= 1"):
        sequence_padding([[1]], seq_dims=0)
    with pytest.raises(ValueError, match="item 0 has 1 axes, fewer than seq_dims=2"):
        sequence_padding([[1, 2]], seq_dims=2)
    with pytest.raises(ValueError, match="fewer lengths than seq_dims=2"):
        sequence_padding([np.ones((2, 2))], length=[2], seq_dims=2)


def test_truncate_sequences_pops_from_longest_keeping_sep():
    first = ["[CLS]", "a", "b", "c", "d", "[SEP]"]
    second = ["x", "y", "[SEP]"]
    # 6+3 -> pop "d" (6>3), "c" (5>3), "b" (4>3): the shorter one is untouched.
    truncate_sequences(6, -2, first, second)
    assert first == ["[CLS]", "a", "[SEP]"]
    assert second == ["x", "y", "[SEP]"]
    # On a tie the first sequence loses a token first.
    first, second = ["a", "b", "E"], ["x", "y", "E"]
    truncate_sequences(5, -2, first, second)
    assert first == ["a", "E"] and second == ["x", "y", "E"]
    with pytest.raises(ValueError, match="maxlen=0 is too small"):
        truncate_sequences(0, -2, ["[SEP]"])


def test_truncate_sequences_per_sequence_indices_follow_their_sequence():
    # The empty first sequence is skipped; -1 stays with the second, 0 with the third.
    second, third = ["a", "b", "c"], ["x", "y", "z"]
    kept = truncate_sequences(4, [-2, -1, 0], [], second, third)
    # 3+3 > 4: "c" leaves the second (tie: first wins) at -1, then "x" the third at 0.
    assert kept == [["a", "b"], ["y", "z"]]
    with pytest.raises(ValueError, match="got 1 indices for 2 sequences"):
        truncate_sequences(2, [-1], ["a"], ["b"])


def _is_subsequence(seq, target):
    it = iter(target)
    return all(any(c == t for t in it) for c in seq)


def test_longest_common_subsequence_against_brute_force(rng):
    # A tie, worked by hand: bert4keras walks back from the end and drops the source
    # item on ties, so "ab" vs "ba" matches the "a"s.
    assert longest_common_subsequence("ab", "ba") == (1, [(0, 1)])
    assert longest_common_subsequence("", "abc") == (0, [])
    for _ in range(60):
        source = "".join(rng.choice(list("abc"), size=rng.integers(0, 7)))
        target = "".join(rng.choice(list("abc"), size=rng.integers(0, 7)))
        best = 0
        for r in range(len(source) + 1):
            for idx in itertools.combinations(range(len(source)), r):
                if _is_subsequence([source[i] for i in idx], target):
                    best = max(best, r)
        length, mapping = longest_common_subsequence(source, target)
        assert length == best == len(mapping)
        assert all(source[i] == target[j] for i, j in mapping)
        assert all(i1 < i2 and j1 < j2 for (i1, j1), (i2, j2) in itertools.pairwise(mapping))


def test_longest_common_substring_against_brute_force(rng):
    assert longest_common_substring("xabcy", "zabcw") == (3, (1, 4, 1, 4))
    for _ in range(60):
        source = "".join(rng.choice(list("ab"), size=rng.integers(0, 8)))
        target = "".join(rng.choice(list("ab"), size=rng.integers(0, 8)))
        best = max(
            (
                j - i
                for i in range(len(source))
                for j in range(i + 1, len(source) + 1)
                if source[i:j] in target
            ),
            default=0,
        )
        length, (i0, i1, j0, j1) = longest_common_substring(source, target)
        assert length == best == i1 - i0 == j1 - j0
        assert source[i0:i1] == target[j0:j1]


def test_strQ2B_matches_nfkc_on_full_width_forms():
    full = "".join(chr(c) for c in range(0xFF01, 0xFF5F)) + "\u3000"
    assert strQ2B(full) == unicodedata.normalize("NFKC", full).replace("\u3000", " ")
    assert strQ2B(full) == "".join(chr(c) for c in range(0x21, 0x7F)) + " "
    # Outside that range nothing changes, even where NFKC would (half-width katakana).
    other = "中文。、「」abc ｶﾞ"
    assert strQ2B(other) == other


def test_string_helpers():
    assert lowercase_and_normalize("Ångström ÉCOLE") == "angstrom ecole"
    assert lowercase_and_normalize("中文") == "中文"
    assert is_string("a") and not is_string(b"a") and not is_string(1)
    assert string_matching("今天天气不错", ["天气", "下雨"])
    assert not string_matching("今天", [r"\d+"])
    assert convert_to_unicode("中".encode()) == "中" == convert_to_str("中".encode())
    assert convert_to_unicode("abc") == "abc"
    array = np.ones(3)
    # `array in [array]` raises (ambiguous truth value); identity does not.
    assert is_one_of(array, [None, array]) and not is_one_of(np.ones(3), [array])


def test_to_array_and_softmax(rng):
    a, b = to_array([1, 2], [[3.0]])
    assert isinstance(a, np.ndarray) and a.tolist() == [1, 2] and b.shape == (1, 1)
    assert to_array([1]).tolist() == [1]
    x = rng.normal(size=(3, 4)) * 50
    want = np.exp(x) / np.exp(x).sum(axis=0, keepdims=True)
    np.testing.assert_allclose(softmax(x, axis=0), want, rtol=1e-12)


def test_text_segmentate_hand_worked():
    text = "今天天气很好。我们去公园吧！好的"
    assert text_segmentate(text, 8, "。！") == ["今天天气很好。", "我们去公园吧！", "好的"]
    # A short text is returned whole (stripped); strips removes separators at the ends.
    assert text_segmentate("  短句，  ", 10, "，", "，") == ["短句"]
    # Parts are packed greedily while they fit; the second sep splits what is still long.
    assert text_segmentate("ab,cd,efghij;kl", 6, ",;") == ["ab,cd,", "efghij;", "kl"]
    # Empty parts never close a piece, so a run of separators stays with the piece
    # before it, even past maxlen (as in bert4keras).
    assert text_segmentate("aa。b。。。。c", 4, "。") == ["aa。", "b。。。。", "c"]


def test_text_segmentate_invariants(rng):
    seps = "。，"
    for _ in range(300):
        # Words joined by single separators (a run of separators is a known bert4keras
        # quirk: it stays glued to the piece before it, see the hand-worked test).
        words = ["".join(rng.choice(list("ab"), size=rng.integers(1, 8))) for _ in range(9)]
        text = "".join(w + str(rng.choice(list(seps))) for w in words)[: rng.integers(1, 80)]
        maxlen = int(rng.integers(2, 12))
        pieces = text_segmentate(text, maxlen, seps)
        assert "".join(pieces) == text
        for p in pieces:
            # Longer than maxlen only where no separator allowed a cut.
            assert len(p) <= maxlen or not any(s in p.rstrip(seps) for s in seps)
        stripped = text_segmentate(text, maxlen, seps, strips="，")
        assert "".join(stripped).replace("，", "") == text.replace("，", "")
        assert not any(p.startswith("，") or p.endswith("，") for p in stripped)
    with pytest.raises(TypeError, match="text must be a str"):
        text_segmentate(["a"], 3)


def _window_index(d, k, window):
    """Index list of orthogonally_resize's layout: each window repeated k times in place."""
    return [b * window + r for b in range(d // window) for _ in range(k) for r in range(window)]


def test_orthogonally_resize_hand_worked_and_norm(rng):
    a = np.array([0.0, 1.0, 2.0, 3.0])
    want = np.array([0.0, 1.0, 0.0, 1.0, 2.0, 3.0])
    want = want / np.linalg.norm(want) * np.linalg.norm(a)
    np.testing.assert_allclose(orthogonally_resize(a, (6,)), want, rtol=1e-12)
    # Shrinking cuts, then restores the norm.
    np.testing.assert_allclose(
        orthogonally_resize(a, (2,)), a[:2] / np.linalg.norm(a[:2]) * np.linalg.norm(a)
    )
    for old, new in [
        ((4, 6), (8, 6)),
        ((4, 6), (6, 10)),
        ((6, 4), (4, 12)),
        ((2, 4, 6), (4, 4, 3)),
    ]:
        x = rng.normal(size=old)
        y = orthogonally_resize(x, new)
        assert y.shape == new
        np.testing.assert_allclose(np.linalg.norm(y), np.linalg.norm(x), rtol=1e-12)


def test_orthogonally_resize_keeps_orthonormal_rows_and_repeated_maps(rng):
    # Rows orthonormal (Q from a QR): growing the columns by k keeps Q @ Q.T = I.
    q = np.linalg.qr(rng.normal(size=(8, 4)))[0].T  # (4, 8), orthonormal rows
    for k in (2, 3):
        grown = orthogonally_resize(q, (4, 8 * k))
        np.testing.assert_allclose(grown @ grown.T, np.eye(4), atol=1e-12)
    # A (d, d) kernel grown by k on both axes: repeat(x) @ W' == repeat(x @ W).
    d, k, window = 6, 2, 2
    w = rng.normal(size=(d, d))
    x = rng.normal(size=(3, d))
    idx = _window_index(d, k, window)
    grown = orthogonally_resize(w, (d * k, d * k), window=window)
    np.testing.assert_allclose(grown, w[idx][:, idx] / k, rtol=1e-12)
    np.testing.assert_allclose(x[:, idx] @ grown, (x @ w)[:, idx], rtol=1e-10, atol=1e-12)


def test_orthogonally_resize_errors():
    with pytest.raises(ValueError, match=r"has 1 axes, the array has 2"):
        orthogonally_resize(np.ones((2, 2)), (4,))
    with pytest.raises(ValueError, match="axis 0 grows from 3 to 6 but 3 is not a multiple"):
        orthogonally_resize(np.ones(3), (6,))


def test_insert_and_delete_arguments():
    class Layer:
        @insert_arguments(scale=1.0, name="x")
        @delete_arguments("units")
        def __init__(self, size=1):
            self.size = size

    layer = Layer(3, scale=2.0)
    assert (layer.size, layer.scale, layer.name) == (3, 2.0, "x")
    with pytest.raises(TypeError, match="Layer got an unexpected keyword argument 'units'"):
        Layer(units=4)


def test_indexable_open(tmp_path):
    lines = [f"第{i}行 line {i}\n" for i in range(5)]
    path = tmp_path / "data.txt"
    path.write_text("".join(lines), encoding="utf-8")
    cache = str(tmp_path / "offsets.json")
    with snippets.open(str(path), encoding="utf-8", indexable=cache) as f:
        assert len(f) == 5 and f[3] == lines[3] and f[0] == lines[0]
        assert list(f) == lines
    assert os.path.exists(cache)
    with snippets.open(str(path), encoding="utf-8", indexable=cache) as f:  # from the cache
        assert f[4] == lines[4]
    with snippets.open(str(path), encoding="utf-8") as f:
        assert f.read() == "".join(lines)
        with pytest.raises(TypeError, match="needs indexable=True"):
            len(f)


def test_snippets_import_without_keras():
    # The tokenizers import truncate_sequences from here; keras loads only for DataGenerator.
    code = "import sys, kerasformers.snippets; print('keras' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
