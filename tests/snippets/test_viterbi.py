"""ViterbiDecoder against brute-force search over every label path (numpy only)."""

import itertools

import numpy as np
import pytest

from kerasformers.snippets import ViterbiDecoder


def brute_force_best(nodes, trans, starts=None, ends=None):
    """argmax over all paths of sum(nodes[t, y_t]) + sum(trans[y_t, y_t+1]), by enumeration."""
    best, best_path = -np.inf, None
    for path in itertools.product(range(len(trans)), repeat=len(nodes)):
        if starts is not None and path[0] not in starts:
            continue
        if ends is not None and path[-1] not in ends:
            continue
        score = sum(nodes[t, y] for t, y in enumerate(path))
        score += sum(trans[a, b] for a, b in zip(path[:-1], path[1:], strict=True))
        if score > best:
            best, best_path = score, list(path)
    return best_path


@pytest.mark.parametrize("length", [1, 2, 3, 6])
@pytest.mark.parametrize("constraints", [(None, None), ([0], [0]), ([1, 2], None), (None, [3])])
def test_decode_equals_brute_force(rng, length, constraints):
    starts, ends = constraints
    for _ in range(5):
        trans = rng.normal(size=(4, 4))
        nodes = rng.normal(size=(length, 4))
        decoder = ViterbiDecoder(trans, starts=starts, ends=ends)
        path = decoder.decode(nodes)
        assert path.dtype.kind == "i" and path.shape == (length,)
        assert list(path) == brute_force_best(nodes, trans, starts, ends)


def test_decode_leaves_input_alone_and_follows_new_trans(rng):
    trans = rng.normal(size=(3, 3))
    nodes = rng.normal(size=(5, 3)).astype("float32")
    before = nodes.copy()
    decoder = ViterbiDecoder(trans, starts=[0], ends=[0])
    decoder.decode(nodes)
    np.testing.assert_array_equal(nodes, before)  # bert4keras edited nodes in place
    # bert4keras' NER examples refresh `trans` from the CRF after each epoch.
    decoder.trans = np.where(np.eye(3) > 0, 0.0, -1e3)  # staying is free, moving costs
    assert len(set(decoder.decode(nodes))) == 1
    assert list(decoder.decode(nodes)) == brute_force_best(nodes, decoder.trans, [0], [0])
    assert decoder.num_labels == 3 and decoder.non_starts == [1, 2]
    assert len(decoder.decode(np.zeros((0, 3)))) == 0


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"square \(num_labels, num_labels\).*\(3, 4\)"):
        ViterbiDecoder(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"starts holds labels \[5\] outside \[0, 3\)"):
        ViterbiDecoder(np.zeros((3, 3)), starts=[0, 5])
    with pytest.raises(ValueError, match="ends must allow at least one label"):
        ViterbiDecoder(np.zeros((3, 3)), ends=[])
    with pytest.raises(ValueError, match=r"nodes must have shape \(seq_len, 3\), got \(4, 2\)"):
        ViterbiDecoder(np.zeros((3, 3))).decode(np.zeros((4, 2)))
