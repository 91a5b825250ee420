"""ConditionalRandomField and MaximumEntropyMarkovModel against brute force and numpy."""

import itertools

import keras
import numpy as np
import pytest

from kerasformers.layers import ConditionalRandomField, MaximumEntropyMarkovModel
from kerasformers.snippets import ViterbiDecoder

MASKS = {
    "post": [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
    "pre": [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]],
    "holes": [[1, 0, 1, 1, 0], [0, 1, 0, 1, 1], [1, 1, 0, 1, 1], [1, 1, 1, 1, 1]],
}


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def path_score(emissions, trans, path):
    """Sum of the path's emissions and transitions (the CRF's unnormalised log score)."""
    point = sum(emissions[t, y] for t, y in enumerate(path))
    return point + sum(trans[a, b] for a, b in zip(path[:-1], path[1:], strict=True))


def all_paths(length, num_labels):
    return list(itertools.product(range(num_labels), repeat=length))


def brute_force_nll(emissions, trans, labels):
    """-log p(labels | emissions) by enumerating every path, in float64."""
    if len(labels) == 0:
        return 0.0
    scores = [path_score(emissions, trans, p) for p in all_paths(len(labels), len(trans))]
    return np.logaddexp.reduce(scores) - path_score(emissions, trans, labels)


def brute_force_best(emissions, trans, starts=None, ends=None):
    best, best_path = -np.inf, None
    for path in all_paths(len(emissions), len(trans)):
        if (starts is not None and path[0] not in starts) or (
            ends is not None and path[-1] not in ends
        ):
            continue
        score = path_score(emissions, trans, path)
        if score > best:
            best, best_path = score, path
    return list(best_path)


@pytest.mark.parametrize("padding", sorted(MASKS))
def test_crf_loss_equals_brute_force(rng, padding):
    """Per-sequence NLL == enumeration over all 3^len paths of the real positions."""
    mask = np.array(MASKS[padding], "float32")
    emissions = rng.normal(size=(4, 5, 3)).astype("float32")
    labels = rng.integers(0, 3, (4, 5))
    crf = ConditionalRandomField(lr_multiplier=4)
    scores = to_numpy(crf(emissions, mask=mask))
    # Masked positions carry -infinity, real ones pass through unchanged.
    np.testing.assert_array_equal(scores[mask > 0], emissions[mask > 0])
    assert np.all(scores[mask == 0] <= -1e11)

    trans = to_numpy(crf.trans).astype("float64")
    # lr_multiplier: the variable stores trans / 4, the layer uses 4 * variable.
    np.testing.assert_allclose(to_numpy(crf._trans) * 4, trans, rtol=1e-6)
    assert np.abs(trans).max() <= np.sqrt(6 / 6) + 1e-6  # glorot_uniform limit, 3x3

    expected = [
        brute_force_nll(e[m > 0], trans, y[m > 0])
        for e, m, y in zip(emissions.astype("float64"), mask, labels, strict=True)
    ]
    sparse = to_numpy(crf.sparse_loss(labels, scores))
    np.testing.assert_allclose(sparse, expected, rtol=0, atol=1e-4)
    if padding == "post":
        dense = to_numpy(crf.dense_loss(np.eye(3, dtype="float32")[labels], scores))
        np.testing.assert_allclose(dense, expected, rtol=0, atol=1e-4)
        # seq_len 1: no transition at all
        single = [
            brute_force_nll(e[:1][m[:1] > 0], trans, y[:1][m[:1] > 0])
            for e, m, y in zip(emissions.astype("float64"), mask, labels, strict=True)
        ]
        got = to_numpy(crf.sparse_loss(labels[:, :1], scores[:, :1]))
        np.testing.assert_allclose(got, single, rtol=0, atol=1e-4)

    # Accuracy: argmax of the emissions against the labels, real positions only.
    hits = (emissions.argmax(-1) == labels)[mask > 0]
    np.testing.assert_allclose(to_numpy(crf.sparse_accuracy(labels, scores)), hits.mean(), 1e-6)


def test_viterbi_on_crf_trans_equals_brute_force(rng):
    crf = ConditionalRandomField()
    crf(np.zeros((1, 1, 4), "float32"))
    trans = to_numpy(crf.trans).astype("float64")
    decoder = ViterbiDecoder(to_numpy(crf.trans))
    for length in (1, 2, 4, 5):
        nodes = rng.normal(size=(length, 4))
        assert list(decoder.decode(nodes)) == brute_force_best(nodes, trans)


def tagging_data(rng, n=48, seq_len=6, vocab=12):
    """Token ids (post-padded with 0) whose labels follow from the tokens: a learnable task."""
    lengths = rng.integers(2, seq_len + 1, n)
    ids = rng.integers(1, vocab, (n, seq_len)) * (np.arange(seq_len) < lengths[:, None])
    labels = np.where(ids > 0, ids % 3, 0)
    return ids.astype("int32"), labels.astype("int32")


def tagger(layer, num_labels=3, vocab=12):
    ids = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(vocab, 8, mask_zero=True)(ids)
    h = keras.layers.Dense(num_labels, name="emissions")(h)
    return keras.Model(ids, layer(h))


def test_crf_trains_with_fit_and_keras_mask(rng):
    ids, labels = tagging_data(rng)
    crf = ConditionalRandomField(lr_multiplier=2)
    model = tagger(crf)
    model.compile(
        optimizer=keras.optimizers.Adam(0.05), loss=crf.sparse_loss, metrics=[crf.sparse_accuracy]
    )
    history = model.fit(ids, labels, batch_size=16, epochs=8, verbose=0).history
    assert history["loss"][-1] < 0.5 * history["loss"][0]

    # The Embedding's mask reached the CRF: padded positions hold -infinity.
    scores = to_numpy(model(ids))
    assert np.all(scores[ids == 0] <= -1e11) and np.all(scores[ids > 0] > -1e6)

    # evaluate() on one batch == brute-force mean NLL and numpy accuracy.
    emissions = keras.Model(model.input, model.get_layer("emissions").output)
    emissions = to_numpy(emissions(ids[:8])).astype("float64")
    trans = to_numpy(crf.trans).astype("float64")
    real = ids[:8] > 0
    nll = [
        brute_force_nll(e[m], trans, y[m]) for e, m, y in zip(emissions, real, labels, strict=False)
    ]
    accuracy = (emissions.argmax(-1) == labels[:8])[real].mean()
    result = model.evaluate(ids[:8], labels[:8], batch_size=8, verbose=0, return_dict=True)
    np.testing.assert_allclose(result["loss"], np.mean(nll), rtol=0, atol=1e-4)
    np.testing.assert_allclose(result["sparse_accuracy"], accuracy, rtol=1e-6)

    # Viterbi over the trained CRF finds the best path of each sequence.
    decoder = ViterbiDecoder(trans)
    for row in range(3):
        nodes = scores[row][real[row]].astype("float64")
        assert list(decoder.decode(nodes)) == brute_force_best(nodes, trans)


@pytest.mark.parametrize("layer_cls", [ConditionalRandomField, MaximumEntropyMarkovModel])
def test_chain_layers_keras_roundtrip(rng, tmp_path, layer_cls):
    layer = layer_cls(lr_multiplier=3, name="chain")
    model = tagger(layer)
    model.compile(optimizer="adam", loss=layer.sparse_loss, metrics=[layer.sparse_accuracy])
    ids, _ = tagging_data(rng, n=8)
    expected = to_numpy(model(ids))
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path, compile=False)
    np.testing.assert_allclose(to_numpy(restored(ids)), expected, rtol=0, atol=1e-6)
    chain = restored.get_layer("chain")
    assert chain.get_config() == layer.get_config()
    np.testing.assert_allclose(to_numpy(chain.trans), to_numpy(layer.trans), rtol=1e-6)
    np.testing.assert_allclose(to_numpy(chain._trans), to_numpy(layer._trans), rtol=1e-6)


def np_memm_logits(emissions, trans, labels, go_backwards):
    """Each token's local logits in one direction, written as bert4keras does it: the
    right-to-left model is the left-to-right one on the reversed sequence with trans
    transposed. Returns (logits, gold label) pairs."""
    if go_backwards:
        emissions, labels, trans = emissions[::-1], labels[::-1], trans.T
    out = []
    for t, (e, y) in enumerate(zip(emissions, labels, strict=True)):
        history = e if t == 0 else trans[labels[t - 1]]
        out.append(((e + history) / 2, y))
    return out


def memm_trans(memm):
    if memm.hidden_dim is None:
        return to_numpy(memm.trans).astype("float64")
    left = to_numpy(memm.l_trans).astype("float64")
    return left @ to_numpy(memm.r_trans).astype("float64").T


@pytest.mark.parametrize("hidden_dim", [None, 2])
@pytest.mark.parametrize("padding", ["post", "holes"])
def test_memm_loss_matches_numpy_both_directions(rng, hidden_dim, padding):
    mask = np.array(MASKS[padding], "float32")
    emissions = rng.normal(size=(4, 5, 3)).astype("float32")
    labels = rng.integers(0, 3, (4, 5))
    memm = MaximumEntropyMarkovModel(lr_multiplier=2, hidden_dim=hidden_dim)
    scores = memm(emissions, mask=mask)
    trans = memm_trans(memm)
    if hidden_dim is None:
        np.testing.assert_allclose(to_numpy(memm._trans) * 2, trans, rtol=1e-6)
    real = [(e[m > 0], y[m > 0]) for e, m, y in zip(emissions, mask, labels, strict=True)]
    losses = {}
    for backwards in (False, True):
        tokens = [pair for e, y in real for pair in np_memm_logits(e, trans, y, backwards)]
        losses[backwards] = np.mean([np.logaddexp.reduce(z) - z[y] for z, y in tokens])
        got = to_numpy(memm.basic_loss(labels, scores, go_backwards=backwards))
        np.testing.assert_allclose(got, losses[backwards], rtol=0, atol=1e-5)
        accuracy = np.mean([z.argmax() == y for z, y in tokens])
        got = to_numpy(memm.basic_accuracy(labels, scores, go_backwards=backwards))
        np.testing.assert_allclose(got, accuracy, rtol=1e-6)
    both = (losses[False] + losses[True]) / 2
    np.testing.assert_allclose(to_numpy(memm.sparse_loss(labels, scores)), both, atol=1e-5)
    dense = memm.dense_loss(np.eye(3, dtype="float32")[labels], scores)
    np.testing.assert_allclose(to_numpy(dense), both, atol=1e-5)
    # The fit metric: emission argmax on real positions (needs no weights).
    hits = (emissions.argmax(-1) == labels)[mask > 0]
    np.testing.assert_allclose(to_numpy(memm.sparse_accuracy(labels, scores)), hits.mean(), 1e-6)


def test_memm_directions_are_normalised_over_all_paths(rng):
    """Locally normalised: exp(-sum of token losses) summed over every path is 1."""
    emissions = rng.normal(size=(1, 3, 2)).astype("float32")
    memm = MaximumEntropyMarkovModel(hidden_dim=2)
    scores = memm(emissions)
    for backwards in (False, True):
        total = 0.0
        for path in all_paths(3, 2):
            mean_nll = to_numpy(memm.basic_loss(np.array([path]), scores, backwards))
            total += np.exp(-3 * float(mean_nll))
        np.testing.assert_allclose(total, 1.0, atol=1e-5)


def test_memm_trains_with_fit(rng):
    ids, labels = tagging_data(rng)
    memm = MaximumEntropyMarkovModel(hidden_dim=4)
    model = tagger(memm)
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss=memm.sparse_loss,
        metrics=[memm.sparse_accuracy],
    )
    history = model.fit(ids, labels, batch_size=16, epochs=6, verbose=0).history
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["sparse_accuracy"][-1] > history["sparse_accuracy"][0]


def test_crf_mixed_bfloat16_fit_step(rng):
    ids, labels = tagging_data(rng, n=16)
    try:
        keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
        crf = ConditionalRandomField(lr_multiplier=10)
        model = tagger(crf)
        model.compile(optimizer="adam", loss=crf.sparse_loss)
        history = model.fit(ids, labels, batch_size=16, epochs=1, verbose=0).history
        scores = model(ids)
        loss = crf.sparse_loss(labels, scores)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert keras.backend.standardize_dtype(scores.dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(crf.trans.dtype) == "float32"
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    assert np.isfinite(history["loss"][0]) and np.all(np.isfinite(to_numpy(loss)))


def test_chain_layers_bad_input_is_a_clear_error():
    crf = ConditionalRandomField(name="crf")
    with pytest.raises(ValueError, match="call the layer on its"):
        crf.sparse_loss(np.zeros((1, 2)), np.zeros((1, 2, 3), "float32"))
    with pytest.raises(ValueError, match=r"crf: expects emission scores .*got \(2, 5\)"):
        crf(np.zeros((2, 5), "float32"))
    crf(np.zeros((2, 5, 3), "float32"))
    with pytest.raises(ValueError, match="built for 3 labels but the scores have 4"):
        crf.sparse_loss(np.zeros((2, 5)), np.zeros((2, 5, 4), "float32"))
    with pytest.raises(ValueError, match=r"labels of shape \(2, 6\) do not match"):
        crf.sparse_loss(np.zeros((2, 6)), np.zeros((2, 5, 3), "float32"))
    with pytest.raises(ValueError, match=r"one-hot labels must have shape \(batch, seq_len, 3\)"):
        crf.dense_loss(np.zeros((2, 5, 4)), np.zeros((2, 5, 3), "float32"))
    with pytest.raises(ValueError, match="lr_multiplier must be > 0"):
        ConditionalRandomField(lr_multiplier=0)
    with pytest.raises(ValueError, match="hidden_dim must be a positive int"):
        MaximumEntropyMarkovModel(hidden_dim=0)
