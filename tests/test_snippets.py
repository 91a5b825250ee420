"""sequence_padding and truncate_sequences (bert4keras semantics)."""

import numpy as np
import pytest

from kerasformers.snippets import sequence_padding, truncate_sequences


def test_sequence_padding_post_pre_and_length():
    np.testing.assert_array_equal(
        sequence_padding([[1, 2, 3], [4]]), np.array([[1, 2, 3], [4, 0, 0]])
    )
    np.testing.assert_array_equal(
        sequence_padding([[1, 2, 3], [4]], mode="pre", value=-1),
        np.array([[1, 2, 3], [-1, -1, 4]]),
    )
    # Cutting: "post" keeps the head, "pre" keeps the tail.
    np.testing.assert_array_equal(sequence_padding([[1, 2, 3]], length=2), [[1, 2]])
    np.testing.assert_array_equal(sequence_padding([[1, 2, 3]], length=2, mode="pre"), [[2, 3]])


def test_sequence_padding_seq_dims_and_item_shape():
    a = np.ones((2, 3))
    b = np.ones((1, 2)) * 2
    out = sequence_padding([a, b], seq_dims=2)
    assert out.shape == (2, 2, 3)
    assert out[1, 0, 1] == 2 and out[1, 1].sum() == 0 and out[1, 0, 2] == 0
    vecs = [np.ones((2, 4)), np.ones((3, 4))]
    assert sequence_padding(vecs).shape == (2, 3, 4)


def test_sequence_padding_errors():
    with pytest.raises(ValueError, match="mode must be 'post' or 'pre'"):
        sequence_padding([[1]], mode="middle")
    with pytest.raises(ValueError, match="empty batch"):
        sequence_padding([])
    with pytest.raises(ValueError, match=r"item 1 has trailing shape \(5,\)"):
        sequence_padding([np.ones((2, 4)), np.ones((2, 5))])


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
