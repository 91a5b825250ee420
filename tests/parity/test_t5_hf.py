"""T5 (t5.1.0) and T5.1.1 / mT5 against HF T5ForConditionalGeneration (live).

Random tiny models with odd sizes (d_model 36, 3 heads of d_kv 10, d_ff 50,
vocab 301, 2 encoder / 3 decoder layers, 8 buckets up to distance 20) are
perturbed so every norm gain and every relative-bias bucket matters, saved with
save_pretrained, and loaded from that safetensors file. Logits must agree
within 1e-4 (float32) on every decoder position for a ragged, padded encoder
batch (HF masks the encoder padding with attention_mask; we mask pad_token_id);
the decoder batch holds a pad id 0 mid-sequence, which T5's decoder does not
mask. Our safetensors load back into transformers with the same logits, and
the mesh-tensorflow names our TF-checkpoint writer produces load back too.
"""

import os

import numpy as np
import pytest

from kerasformers.checkpoints import open_checkpoint
from kerasformers.layers import t5_relative_position_bucket
from kerasformers.models import build_transformer_model
from tests.parity.hf_helpers import max_masked_diff, perturb_, ragged_batch

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4
VOCAB = 301
LENGTHS = [7, 13, 3, 13]
SIZES = dict(
    vocab_size=VOCAB,
    d_model=36,
    d_kv=10,
    d_ff=50,
    num_layers=2,
    num_decoder_layers=3,
    num_heads=3,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=20,
    dropout_rate=0.0,
)


def _decoder_ids(rng):
    ids = rng.integers(1, VOCAB, (len(LENGTHS), 9)).astype("int32")
    ids[:, 0] = 0  # T5's decoder start token is the pad id
    ids[1, 4] = 0  # a pad id inside the target is still attended (no key mask)
    return ids


def _hf_run(hf, ids, mask, decoder_ids):
    with torch.no_grad():
        out = hf(
            input_ids=torch.as_tensor(ids, dtype=torch.long),
            attention_mask=torch.as_tensor(mask, dtype=torch.long),
            decoder_input_ids=torch.as_tensor(decoder_ids, dtype=torch.long),
        )
    return out.logits.numpy(), out.encoder_last_hidden_state.numpy()


def _make_case(tmp_path_factory, name, untie, **overrides):
    config = transformers.T5Config(**SIZES, **overrides)
    hf = transformers.T5ForConditionalGeneration(config)
    if untie:
        # transformers 5 ties lm_head to the shared table at init; a T5.1.1
        # checkpoint has its own head.
        hf.lm_head.weight = torch.nn.Parameter(torch.zeros(VOCAB, SIZES["d_model"]))
    perturb_(hf, seed=17)
    with torch.no_grad():
        for param_name, param in hf.named_parameters():
            if "relative_attention_bias" in param_name:
                param.mul_(5.0)  # buckets far apart, so a wrong bucket shows
    directory = str(tmp_path_factory.mktemp(name))
    hf.save_pretrained(directory)
    rng = np.random.default_rng(3)
    ids, _, mask = ragged_batch(rng, VOCAB, LENGTHS)
    decoder_ids = _decoder_ids(rng)
    logits, encoded = _hf_run(hf, ids, mask, decoder_ids)
    return dict(
        hf=hf,
        model=name,
        config=os.path.join(directory, "config.json"),
        weights=os.path.join(directory, "model.safetensors"),
        ids=ids,
        mask=mask,
        decoder_ids=decoder_ids,
        logits=logits,
        encoded=encoded,
    )


@pytest.fixture(scope="module", params=["t5.1.0", "t5.1.1"])
def case(request, tmp_path_factory):
    if request.param == "t5.1.0":  # relu, tied and scaled LM head
        return _make_case(tmp_path_factory, "t5.1.0", untie=False)
    return _make_case(
        tmp_path_factory,
        "t5.1.1",
        untie=True,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
    )


@pytest.fixture(scope="module")
def ours(case):
    """Our builder of the case, loaded from HF's safetensors, ending in logits."""
    return build_transformer_model(
        case["config"],
        case["weights"],
        model=case["model"],
        final_activation="linear",
        return_keras_model=False,
    )


def _predict(builder, case):
    return builder.model.predict([case["ids"], case["decoder_ids"]], verbose=0)


def _reload(builder, checkpoint):
    """Wipes every weight, then loads `checkpoint` into the same model."""
    for variable in builder.model.weights:
        variable.assign(np.zeros(variable.shape, "float32"))
    builder.load_weights_from_checkpoint(checkpoint)


def test_bucket_ids_match_transformers():
    from transformers.models.t5.modeling_t5 import T5Attention

    relative = np.arange(-300, 301)
    # HF's default, ours, and one whose float32 log lands exactly on a boundary
    for buckets, distance in [(32, 128), (8, 20), (6, 100)]:
        for bidirectional in (True, False):
            ref = T5Attention._relative_position_bucket(
                torch.as_tensor(relative), bidirectional, buckets, distance
            ).numpy()
            ours = t5_relative_position_bucket(relative, bidirectional, buckets, distance)
            np.testing.assert_array_equal(np.asarray(ours), ref)


def test_logits_from_hf_safetensors(case, ours):
    logits = _predict(ours, case)
    assert logits.shape == case["logits"].shape
    assert np.max(np.abs(logits - case["logits"])) <= TOL


def test_encoder_and_decoder_variants_are_the_full_models_parts(case):
    encoder = build_transformer_model(
        case["config"], case["weights"], model=case["model"] + "_encoder"
    )
    encoded = encoder.predict(case["ids"], verbose=0)
    assert max_masked_diff(encoded, case["encoded"], case["mask"]) <= TOL
    decoder = build_transformer_model(
        case["config"],
        case["weights"],
        model=case["model"] + "_decoder",
        final_activation="linear",
        with_context_mask=True,
    )
    assert [i.name for i in decoder.inputs][1:] == ["Decoder-Input-Token", "Input-Context-Mask"]
    logits = decoder.predict([case["encoded"], case["decoder_ids"], case["mask"]], verbose=0)
    assert np.max(np.abs(logits - case["logits"])) <= TOL


def test_our_safetensors_load_in_transformers(case, ours, tmp_path):
    path = ours.save_weights_as_checkpoint(str(tmp_path / "model.safetensors"))
    with open_checkpoint(path) as mine, open_checkpoint(case["weights"]) as theirs:
        assert set(mine.names()) == set(theirs.names())  # lm_head.weight only when untied
    case["hf"].config.save_pretrained(str(tmp_path))
    reloaded = transformers.T5ForConditionalGeneration.from_pretrained(str(tmp_path)).eval()
    logits, _ = _hf_run(reloaded, case["ids"], case["mask"], case["decoder_ids"])
    assert np.max(np.abs(logits - case["logits"])) <= TOL


def test_google_names_round_trip(case, ours, tmp_path):
    prefix = ours.save_weights_as_checkpoint(str(tmp_path / "model.ckpt"))
    with open_checkpoint(prefix) as reader:
        names = set(reader.names())
        table = reader.get("encoder/block_000/layer_000/SelfAttention/relative_attention_bias")
    assert table.shape == (3, 8)  # mesh-tensorflow's (heads, buckets)
    assert {
        "shared/embedding",
        "decoder/block_002/layer_001/EncDecAttention/o",
        "decoder/block_002/layer_002/layer_norm/scale",
        "encoder/final_layer_norm/scale",
    } <= names
    gated = case["model"] != "t5.1.0"
    assert ("encoder/block_001/layer_001/DenseReluDense/wi_1/kernel" in names) == gated
    assert ("decoder/logits/kernel" in names) == gated
    _reload(ours, prefix)
    assert np.max(np.abs(_predict(ours, case) - case["logits"])) <= TOL


def test_mt5_google_names_round_trip(case, tmp_path):
    if case["model"] == "t5.1.0":
        pytest.skip("mT5 is the T5.1.1 architecture")
    builder = build_transformer_model(
        case["config"],
        case["weights"],
        model="mt5.1.1",
        final_activation="linear",
        return_keras_model=False,
    )
    prefix = builder.save_weights_as_checkpoint(str(tmp_path / "model.ckpt"))
    with open_checkpoint(prefix) as reader:
        names = set(reader.names())
    assert {"encoder/rms_norm/scale", "decoder/block_001/layer_002/rms_norm/scale"} <= names
    assert not any("layer_norm" in name for name in names)
    _reload(builder, prefix)
    assert np.max(np.abs(_predict(builder, case) - case["logits"])) <= TOL


def test_transformers5_tied_t5_1_1_head_loads_from_shared(tmp_path_factory):
    """transformers 5 ties lm_head to `shared` even for tie_word_embeddings=False
    (it only stops scaling), and then writes no lm_head.weight at all."""
    case = _make_case(
        tmp_path_factory,
        "t5.1.1",
        untie=False,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
    )
    with open_checkpoint(case["weights"]) as reader:
        assert "lm_head.weight" not in reader.names()
    model = build_transformer_model(
        case["config"], case["weights"], model="t5.1.1", final_activation="linear"
    )
    logits = model.predict([case["ids"], case["decoder_ids"]], verbose=0)
    assert np.max(np.abs(logits - case["logits"])) <= TOL


def test_keep_tokens_prune_the_table_and_the_separate_head(case):
    if case["model"] == "t5.1.0":
        pytest.skip("the t5.1.0 head is the (pruned) token table itself")
    keep = np.array([0, 1, 2, *range(100, 160)])
    rng = np.random.default_rng(5)
    ids = rng.integers(3, len(keep), (2, 6))
    decoder_ids = rng.integers(0, len(keep), (2, 5))
    with torch.no_grad():
        ref = case["hf"](
            input_ids=torch.as_tensor(keep[ids]),
            decoder_input_ids=torch.as_tensor(keep[decoder_ids]),
        ).logits.numpy()[..., keep]
    model = build_transformer_model(
        case["config"],
        case["weights"],
        model=case["model"],
        keep_tokens=keep.tolist(),
        final_activation="linear",
    )
    assert np.max(np.abs(model.predict([ids, decoder_ids], verbose=0) - ref)) <= TOL
