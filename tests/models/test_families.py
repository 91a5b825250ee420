"""NEZHA and RoFormer-v2 (no reference in transformers 5.x) against small numpy
re-implementations of their papers' formulas, and against pinned values.

The numpy code below is written from the papers, loop by loop where that is
clearer, and shares nothing with the library but the weights it reads.
"""

import importlib.util
import json
import math
import os

import keras
import numpy as np
import pytest

from kerasformers.layers import RelativePositionEmbedding, SinusoidalPositionEmbedding
from kerasformers.models import build_transformer_model

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PINNED = os.path.join(HERE, "data", "pinned")
TOL = 1e-4


def _load_pinned_script():
    spec = importlib.util.spec_from_file_location(
        "make_pinned_families", os.path.join(PINNED, "make_pinned_families.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pinned = _load_pinned_script()


# ---------------------------------------------------------------- numpy reference
_erf = np.vectorize(math.erf)


def np_gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def np_norm(x, gamma=None, beta=None, zero_mean=True, eps=1e-12):
    if zero_mean:
        x = x - x.mean(-1, keepdims=True)
    x = x / np.sqrt((x**2).mean(-1, keepdims=True) + eps)
    if gamma is not None:
        x = x * gamma
    if beta is not None:
        x = x + beta
    return x


def nezha_relative_table(q_len, k_len, depth, max_distance):
    """NEZHA's functional relative encoding, entry by entry (paper, eq. 3-4)."""
    table = np.zeros((q_len, k_len, depth))
    for i in range(q_len):
        for j in range(k_len):
            row = min(max(j - i, -max_distance), max_distance) + max_distance
            for k in range(depth // 2):
                angle = row / 10000 ** (2 * k / depth)
                table[i, j, 2 * k] = math.sin(angle)
                table[i, j, 2 * k + 1] = math.cos(angle)
    return table


def rope(x, positions):
    """RoFormer eq. 34: rotate feature pair (2k, 2k+1) of row m by m * theta_k."""
    out = np.empty_like(x)
    depth = x.shape[-1]
    for m, pos in enumerate(positions):
        for k in range(depth // 2):
            theta = pos * 10000 ** (-2 * k / depth)
            a, b = x[m, ..., 2 * k], x[m, ..., 2 * k + 1]
            out[m, ..., 2 * k] = a * math.cos(theta) - b * math.sin(theta)
            out[m, ..., 2 * k + 1] = a * math.sin(theta) + b * math.cos(theta)
    return out


def np_encoder(model, ids, segments, family, heads, max_distance=None, realformer=False):
    """One sequence at a time; padding (id 0) keys are dropped from the softmax.

    family: "bert" (absolute positions), "nezha" or "roformer_v2". realformer:
    each layer adds the previous layer's pre-softmax scores to its own.
    """
    w = {layer.name: layer.get_weights() for layer in model.layers}
    bias_free = family == "roformer_v2"
    outputs = []
    for row_ids, row_segments in zip(ids, segments, strict=True):
        x = w["Embedding-Token"][0][row_ids] + w["Embedding-Segment"][0][row_segments]
        if family == "bert":
            x = x + w["Embedding-Position"][0][: len(row_ids)]
        if bias_free:
            x = np_norm(x, zero_mean=False)
        else:
            beta, gamma = w["Embedding-Norm"]
            x = np_norm(x, gamma, beta)
        keep = row_ids != 0
        n = len(row_ids)
        previous = [0.0] * heads
        for index in range(pinned.CONFIG["num_hidden_layers"]):
            att = w[f"Transformer-{index}-MultiHeadSelfAttention"]
            if bias_free:
                (wq, wk, wv, wo), (bq, bk, bv, bo) = att, (0.0, 0.0, 0.0, 0.0)
            else:
                wq, bq, wk, bk, wv, bv, wo, bo = att
            size = wq.shape[1] // heads
            q = (x @ wq + bq).reshape(n, heads, size)
            k = (x @ wk + bk).reshape(n, heads, size)
            v = (x @ wv + bv).reshape(n, heads, size)
            if family == "roformer_v2":
                q, k = rope(q, range(n)), rope(k, range(n))
            out = np.zeros((n, heads, size))
            for h in range(heads):
                if family == "nezha":
                    rel = nezha_relative_table(n, n, size, max_distance)
                    logits = np.einsum("id,ijd->ij", q[:, h], k[None, :, h] + rel) / math.sqrt(size)
                else:
                    logits = q[:, h] @ k[:, h].T / math.sqrt(size)
                if realformer:
                    logits = logits + previous[h]
                    previous[h] = logits
                logits = np.where(keep[None, :], logits, -np.inf)
                probs = np.exp(logits - logits.max(-1, keepdims=True))
                probs /= probs.sum(-1, keepdims=True)
                values = v[None, :, h] + (rel if family == "nezha" else 0.0)
                out[:, h] = np.einsum("ij,ijd->id", probs, np.broadcast_to(values, (n, n, size)))
            x = x + out.reshape(n, heads * size) @ wo + bo
            norm = w[f"Transformer-{index}-MultiHeadSelfAttention-Norm"]
            x = np_norm(x, zero_mean=False) if bias_free else np_norm(x, norm[1], norm[0])
            ffn = w[f"Transformer-{index}-FeedForward"]
            if bias_free:
                (wi, wo2), (bi, bo2) = ffn, (0.0, 0.0)
            else:
                wi, bi, wo2, bo2 = ffn
            x = x + np_gelu(x @ wi + bi) @ wo2 + bo2
            norm = w[f"Transformer-{index}-FeedForward-Norm"]
            x = np_norm(x, zero_mean=False) if bias_free else np_norm(x, norm[1], norm[0])
        outputs.append(x)
    return np.stack(outputs)


# ---------------------------------------------------------------- position mechanisms
def test_relative_position_table_is_nezhas_formula():
    x = np.zeros((1, 9, 4), "float32")
    table = keras.ops.convert_to_numpy(RelativePositionEmbedding(2 * 3 + 1, 6)([x, x]))
    np.testing.assert_allclose(table, nezha_relative_table(9, 9, 6, 3), atol=1e-6)


def test_rotary_matches_the_paper_and_is_relative(rng):
    from kerasformers.backend import apply_rotary_position_embeddings

    x = rng.normal(size=(1, 7, 3, 8)).astype("float32")  # (batch, len, heads, size)
    table = SinusoidalPositionEmbedding(8, merge_mode="zero")(x[..., 0, :])
    rotated = keras.ops.convert_to_numpy(apply_rotary_position_embeddings(table[:, :, None], x))
    np.testing.assert_allclose(rotated[0], rope(x[0].astype("float64"), range(7)), atol=1e-5)
    # q_m . k_n depends on m - n only: shifting both positions changes nothing.
    q, k = rng.normal(size=8), rng.normal(size=8)
    qs = rope(np.tile(q, (7, 1)), range(7))
    ks = rope(np.tile(k, (7, 1)), range(7))
    assert abs(qs[5] @ ks[2] - qs[4] @ ks[1]) < 1e-9


# ---------------------------------------------------------------- whole models
@pytest.mark.parametrize("family", ["nezha", "roformer_v2"])
def test_model_matches_numpy_reference(family):
    model, ids, segments = pinned.fixed_model(family)
    ours = np.asarray(model.predict([ids, segments], verbose=0))
    ref = np_encoder(model, ids, segments, family, heads=2, max_distance=3)
    keep = ids != 0
    assert np.max(np.abs(ours - ref)[keep]) <= TOL


@pytest.mark.parametrize("family", ["nezha", "roformer_v2"])
def test_pinned_outputs(family):
    with open(os.path.join(PINNED, "families.json")) as f:
        expected = json.load(f)[family]
    assert pinned.pinned_values(family).keys() == expected.keys()
    for key, values in pinned.pinned_values(family).items():
        np.testing.assert_allclose(values, expected[key], atol=TOL)


def test_roformer_v2_has_no_bias_and_no_norm_weights():
    model, _, _ = pinned.fixed_model("roformer_v2")
    paths = [w.path for w in model.weights]
    assert not [p for p in paths if p.endswith(("bias", "beta", "gamma"))]
    # token, segment, and per layer q/k/v/o + two feed-forward kernels
    assert len(paths) == 2 + 2 * 6


def test_nezha_mlm_head_and_relative_clipping_matter():
    model = build_transformer_model(pinned.CONFIG, model="nezha", with_mlm="linear")
    assert model.output.shape[-1] == pinned.CONFIG["vocab_size"]
    near, _, _ = pinned.fixed_model("nezha")
    far = build_transformer_model(pinned.CONFIG, model="nezha", max_relative_position=64)
    far.set_weights(near.get_weights())
    _, ids, segments = pinned.fixed_model("nezha")
    a = np.asarray(near.predict([ids, segments], verbose=0))
    b = np.asarray(far.predict([ids, segments], verbose=0))
    assert np.max(np.abs(a - b)) > 1e-3  # distances > 3 are clipped in one, not the other


@pytest.mark.parametrize("realformer", [False, True])
def test_bert_and_realformer_residual_scores_match_numpy(realformer, rng):
    """RealFormer (bert4keras' residual_attention_scores), https://arxiv.org/abs/2012.11747."""
    model = build_transformer_model(
        pinned.CONFIG, residual_attention_scores=realformer, name=f"rf{realformer}"
    )
    for variable in model.weights:
        value = rng.normal(0.0, 0.5, variable.shape)
        variable.assign(
            (1.0 + 0.2 * value if variable.path.endswith("gamma") else value).astype("float32")
        )
    _, ids, segments = pinned.fixed_model("nezha")
    ours = np.asarray(model.predict([ids, segments], verbose=0))
    ref = np_encoder(model, ids, segments, "bert", heads=2, realformer=realformer)
    assert np.max(np.abs(ours - ref)[ids != 0]) <= TOL
