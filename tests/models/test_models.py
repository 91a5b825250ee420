"""build_transformer_model options, outputs, layer names and loading errors (BERT)."""

import os

import keras
import numpy as np
import pytest

from kerasformers.checkpoints import save_checkpoint
from kerasformers.models import BERT, WeightLoadingError, build_transformer_model
from kerasformers.tokenizers import load_vocab

CONFIG = dict(
    vocab_size=40,
    hidden_size=12,
    num_hidden_layers=2,
    num_attention_heads=3,
    intermediate_size=20,
    hidden_act="gelu",
    max_position_embeddings=16,
    type_vocab_size=2,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
)


def _ids(rng, batch=2, length=6, vocab=40):
    ids = rng.integers(1, vocab, (batch, length)).astype("int32")
    return ids, np.zeros_like(ids)


def _weights(model):
    return {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}


@pytest.fixture
def google_ckpt(tmp_path):
    """A random BERT with all heads, saved in Google TF format by our writer."""
    builder = build_transformer_model(
        CONFIG, with_pool=True, with_nsp=True, with_mlm=True, return_keras_model=False
    )
    prefix = str(tmp_path / "bert_model.ckpt")
    builder.save_weights_as_checkpoint(prefix)
    return builder, prefix


def test_layer_names_and_outputs():
    model = build_transformer_model(CONFIG)
    names = [layer.name for layer in model.layers]
    for name in [
        "Input-Token",
        "Input-Segment",
        "Embedding-Token",
        "Embedding-Segment",
        "Embedding-Position",
        "Embedding-Norm",
        "Transformer-0-MultiHeadSelfAttention",
        "Transformer-0-MultiHeadSelfAttention-Norm",
        "Transformer-1-FeedForward",
        "Transformer-1-FeedForward-Norm",
    ]:
        assert name in names
    assert tuple(model.output.shape) == (None, None, 12)

    # bert4keras' output rule: the heads replace the sequence output.
    assert tuple(build_transformer_model(CONFIG, with_pool=True).output.shape) == (None, 12)
    assert tuple(build_transformer_model(CONFIG, with_nsp=True).output.shape) == (None, 2)
    assert tuple(build_transformer_model(CONFIG, with_mlm=True).output.shape) == (None, None, 40)
    both = build_transformer_model(CONFIG, with_pool=True, with_mlm=True)
    assert [tuple(o.shape) for o in both.outputs] == [(None, 12), (None, None, 40)]


def test_mlm_activation_options(rng):
    ids, seg = _ids(rng)
    probs = build_transformer_model(CONFIG, with_mlm=True).predict([ids, seg], verbose=0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    logits_model = build_transformer_model(CONFIG, with_mlm="linear")
    assert logits_model.get_layer("MLM-Activation").get_config()["activation"] == "linear"
    # The MLM head is tied: its projection is the token embedding itself.
    dense_users = [layer for layer in logits_model.layers if layer.name == "Embedding-Token"]
    assert len(dense_users) == 1


def test_segment_vocab_size_zero_and_custom_positions(rng):
    model = build_transformer_model(CONFIG, segment_vocab_size=0)
    assert [i.name for i in model.inputs] == ["Input-Token"]
    ids, _ = _ids(rng)
    assert model.predict(ids, verbose=0).shape == (2, 6, 12)

    model = build_transformer_model(CONFIG, custom_position_ids=True, dropout_rate=0.0)
    assert [i.name for i in model.inputs] == ["Input-Token", "Input-Segment", "Input-Position"]
    ids, seg = _ids(rng)
    default = build_transformer_model(CONFIG, dropout_rate=0.0)
    default.set_weights(model.get_weights())
    positions = np.tile(np.arange(6, dtype="int32"), (2, 1))
    np.testing.assert_allclose(
        model.predict([ids, seg, positions], verbose=0),
        default.predict([ids, seg], verbose=0),
        atol=1e-5,
    )


def test_config_translation_and_overrides(tmp_path):
    builder = build_transformer_model(
        CONFIG, max_position=8, dropout_rate=0.0, return_keras_model=False
    )
    assert isinstance(builder, BERT)
    assert builder.max_position == 8 and builder.dropout_rate == 0.0
    assert builder.attention_dropout_rate == 0.1  # from attention_probs_dropout_prob
    assert builder.model.get_layer("Embedding-Position").input_dim == 8
    # Unknown keys of the config FILE are ignored (Chinese BERT's pooler_* extras)...
    build_transformer_model({**CONFIG, "pooler_fc_size": 768, "directionality": "bidi"})
    # ...but a misspelt keyword argument is an error naming it.
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['with_pooler'\]"):
        build_transformer_model(CONFIG, with_pooler=True)
    with pytest.raises(ValueError, match="unknown model 'bart'"):
        build_transformer_model(CONFIG, model="bart")
    with pytest.raises(ValueError, match="application 'seq2seq' is not available"):
        build_transformer_model(CONFIG, application="seq2seq")
    with pytest.raises(FileNotFoundError, match="config file not found"):
        build_transformer_model(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="Unknown activation 'gelu_fancy'"):
        build_transformer_model({**CONFIG, "hidden_act": "gelu_fancy"})
    with pytest.raises(ValueError, match="position_embedding_type='relative_key'"):
        build_transformer_model({**CONFIG, "position_embedding_type": "relative_key"})
    with pytest.raises(TypeError, match="cannot build BERT"):
        build_transformer_model({"vocab_size": 10})


def test_padding_is_masked(rng):
    model = build_transformer_model(CONFIG, dropout_rate=0.0)
    ids, seg = _ids(rng, batch=1, length=4)
    padded = np.concatenate([ids, np.zeros((1, 3), "int32")], axis=1)
    out_short = model.predict([ids, seg], verbose=0)
    out_padded = model.predict([padded, np.zeros_like(padded)], verbose=0)
    np.testing.assert_allclose(out_padded[:, :4], out_short, atol=1e-5)


def test_input_longer_than_max_position_is_a_clear_error(rng):
    model = build_transformer_model(CONFIG)
    ids, seg = _ids(rng, length=20)
    with pytest.raises(ValueError, match="input length 20 exceeds the 16 positions"):
        model.predict([ids, seg], verbose=0)


def test_out_of_vocabulary_id_is_a_clear_error(rng):
    if keras.backend.backend() == "jax":
        pytest.skip("under jax.jit ids are abstract; XLA clamps out-of-range gathers")
    model = build_transformer_model(CONFIG)
    ids, seg = _ids(rng)
    ids[1, 2] = 40
    if keras.backend.backend() == "tensorflow":
        # predict runs as a tf.function graph; TF's own gather names the bad index.
        with pytest.raises(Exception, match=r"40 is not in \[0, 40\)"):
            model.predict([ids, seg], verbose=0)
        return
    with pytest.raises(
        ValueError, match=r"Embedding-Token: id 40 is outside the vocabulary \[0, 40\)"
    ):
        model.predict([ids, seg], verbose=0)
    seg[0, 0] = 2
    ids[1, 2] = 3
    with pytest.raises(ValueError, match=r"Embedding-Segment: id 2 is outside"):
        model.predict([ids, seg], verbose=0)


def test_google_round_trip_and_full_model_save(google_ckpt, rng, tmp_path):
    builder, prefix = google_ckpt
    ids, seg = _ids(rng)
    model = build_transformer_model(CONFIG, prefix, with_pool=True, with_nsp=True, with_mlm=True)
    for a, b in zip(
        builder.model.predict([ids, seg], verbose=0),
        model.predict([ids, seg], verbose=0),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # The whole functional model survives a .keras round trip.
    path = str(tmp_path / "bert.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    for a, b in zip(
        model.predict([ids, seg], verbose=0),
        restored.predict([ids, seg], verbose=0),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # And Keras' own weights file is accepted as a checkpoint_path.
    weights_path = str(tmp_path / "bert.weights.h5")
    model.save_weights(weights_path)
    again = build_transformer_model(
        CONFIG, weights_path, with_pool=True, with_nsp=True, with_mlm=True
    )
    np.testing.assert_allclose(
        again.predict([ids, seg], verbose=0)[1], model.predict([ids, seg], verbose=0)[1]
    )


def test_keep_tokens_from_simplified_vocab(google_ckpt, rng, tmp_path):
    builder, prefix = google_ckpt
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"tok{i}" for i in range(35)]
    tokens[10] = "[unused1]"  # dropped by simplified=True
    vocab_path = tmp_path / "vocab.txt"
    vocab_path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    token_dict, keep_tokens = load_vocab(
        str(vocab_path), simplified=True, startswith=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    )
    # bert4keras' rule drops multi-char tokens with punctuation/CJK: [MASK], [unused1].
    assert 4 not in keep_tokens and 10 not in keep_tokens and len(keep_tokens) == 38

    small = build_transformer_model(CONFIG, prefix, with_mlm="linear", keep_tokens=keep_tokens)
    full = builder.model
    table = keras.ops.convert_to_numpy(small.get_layer("Embedding-Token").embeddings)
    full_table = keras.ops.convert_to_numpy(full.get_layer("Embedding-Token").embeddings)
    np.testing.assert_array_equal(table, full_table[keep_tokens])

    # Same text through both: logits of the small model are the kept columns.
    words = ["[CLS]", "tok3", "tok20", "tok7", "[SEP]"]
    old_vocab = {t: i for i, t in enumerate(tokens)}
    old_ids = np.array([[old_vocab[w] for w in words]], "int32")
    new_ids = np.array([[token_dict[w] for w in words]], "int32")
    seg = np.zeros_like(old_ids)
    full_logits_model = build_transformer_model(CONFIG, prefix, with_mlm="linear")
    full_logits = full_logits_model.predict([old_ids, seg], verbose=0)
    small_logits = small.predict([new_ids, seg], verbose=0)
    np.testing.assert_allclose(small_logits, full_logits[..., keep_tokens], atol=1e-5)


def test_compound_tokens(google_ckpt):
    builder, prefix = google_ckpt
    compound = [[5, 6], ([7, 8, 9], [1, 2, 1])]
    model = build_transformer_model(CONFIG, prefix, compound_tokens=compound)
    table = keras.ops.convert_to_numpy(model.get_layer("Embedding-Token").embeddings)
    base = keras.ops.convert_to_numpy(builder.model.get_layer("Embedding-Token").embeddings)
    assert table.shape == (42, 12)
    np.testing.assert_allclose(table[40], base[[5, 6]].mean(0), atol=1e-6)
    np.testing.assert_allclose(table[41], (base[7] + 2 * base[8] + base[9]) / 4, atol=1e-6)


def test_missing_unexpected_and_misshaped_tensors(google_ckpt, tmp_path):
    builder, prefix = google_ckpt
    from kerasformers.checkpoints import open_checkpoint

    with open_checkpoint(prefix) as reader:
        tensors = {n: reader.get(n) for n in reader.names()}

    missing = dict(tensors)
    del missing["bert/encoder/layer_1/attention/self/key/bias"]
    del missing["bert/encoder/layer_0/intermediate/dense/kernel"]
    path = save_checkpoint(missing, str(tmp_path / "missing" / "bert_model.ckpt"), format="tf")
    with pytest.raises(
        WeightLoadingError, match=r"missing tensor 'bert/encoder/layer_1/attention/self/key/bias'"
    ):
        build_transformer_model(CONFIG, path)
    # ignore_invalid_weights=True skips it and loads the rest.
    model = build_transformer_model(CONFIG, path, ignore_invalid_weights=True)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("Embedding-Segment").embeddings),
        tensors["bert/embeddings/token_type_embeddings"],
    )
    # The skipped kernel gets the real (truncated normal, std 0.02) initialisation,
    # not the zeros the model was built with while waiting for the checkpoint.
    kernel = model.get_layer("Transformer-0-FeedForward").input_denses[0].kernel
    kernel = keras.ops.convert_to_numpy(kernel)
    assert 0.01 < kernel.std() < 0.03 and np.abs(kernel).max() <= 0.04 + 1e-6

    misshaped = dict(tensors)
    misshaped["bert/embeddings/token_type_embeddings"] = np.zeros((3, 12), "float32")
    path = save_checkpoint(misshaped, str(tmp_path / "shape" / "bert_model.ckpt"), format="tf")
    with pytest.raises(
        WeightLoadingError,
        match=r"'bert/embeddings/token_type_embeddings' has shape \(3, 12\) but "
        r"Embedding-Segment/embeddings expects \(2, 12\)",
    ):
        build_transformer_model(CONFIG, path)

    extra = dict(tensors)
    extra["bert/encoder/layer_2/output/dense/bias"] = np.zeros(12, "float32")
    extra["global_step"] = np.array(7, "int64")
    path = save_checkpoint(extra, str(tmp_path / "extra" / "bert_model.ckpt"), format="tf")
    with pytest.raises(
        WeightLoadingError, match=r"unexpected tensor 'bert/encoder/layer_2/output/dense/bias'"
    ) as info:
        build_transformer_model(CONFIG, path)
    assert "global_step" not in str(info.value)
    # Heads present in the file but not requested are fine (bert4keras behaviour).
    build_transformer_model(CONFIG, prefix)


def test_checkpoint_path_errors(tmp_path):
    from kerasformers.checkpoints import CheckpointError

    with pytest.raises(CheckpointError, match="no_such_dir"):
        build_transformer_model(CONFIG, str(tmp_path / "no_such_dir" / "bert_model.ckpt"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="empty"):
        build_transformer_model(CONFIG, str(empty))
    bad = tmp_path / "weights.npz"
    np.savez(bad, a=np.zeros(3))
    with pytest.raises(CheckpointError, match="weights.npz"):
        build_transformer_model(CONFIG, str(bad))


def test_save_dtype_and_format_errors(google_ckpt, tmp_path):
    builder, _ = google_ckpt
    path = builder.save_weights_as_checkpoint(str(tmp_path / "half.safetensors"), dtype="float16")
    from kerasformers.checkpoints import open_checkpoint

    with open_checkpoint(path) as reader:
        assert reader.dtype("bert.embeddings.word_embeddings.weight") == np.float16
    model = build_transformer_model(CONFIG, path, with_pool=True, with_nsp=True, with_mlm=True)
    table = keras.ops.convert_to_numpy(model.get_layer("Embedding-Token").embeddings)
    base = keras.ops.convert_to_numpy(builder.model.get_layer("Embedding-Token").embeddings)
    np.testing.assert_allclose(table, base, atol=1e-2)
    with pytest.raises(ValueError, match="format must be 'tf' or 'safetensors'"):
        builder.save_weights_as_checkpoint(str(tmp_path / "x.bin"), format="torch")
    assert os.path.exists(str(tmp_path / "half.safetensors"))


def test_custom_mapping_load_and_save(google_ckpt, rng, tmp_path):
    builder, prefix = google_ckpt
    mapping = {
        layer: {
            path: "custom/" + (e if isinstance(e, str) else e[0]) for path, e in entries.items()
        }
        for layer, entries in builder.variable_mapping().items()
    }
    path = builder.save_weights_as_checkpoint(str(tmp_path / "c" / "model.ckpt"), mapping=mapping)
    from kerasformers.checkpoints import open_checkpoint

    with open_checkpoint(path) as reader:
        assert all(n.startswith("custom/") for n in reader.names())
    other = build_transformer_model(
        CONFIG, with_pool=True, with_nsp=True, with_mlm=True, return_keras_model=False
    )
    # The NSP kernel is stored transposed by Google; with plain names (no hook) the
    # custom mapping keeps our layout, so the round trip is exact.
    other.load_weights_from_checkpoint(path, mapping=mapping)
    ids, seg = _ids(rng)
    for a, b in zip(
        builder.model.predict([ids, seg], verbose=0),
        other.model.predict([ids, seg], verbose=0),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, atol=1e-6)
    broken = dict(mapping)
    broken["Embedding-Norm"] = {"beta": "custom/nope/beta", "gamma": "custom/nope/gamma"}
    with pytest.raises(WeightLoadingError, match="missing tensor 'custom/nope/beta'"):
        other.load_weights_from_checkpoint(path, mapping=broken)
