"""Every family's Google (bert4keras) checkpoint names, pinned to bert4keras 0.11.5.

tests/data/golden/google_names.json holds bert4keras' own `variable_mapping()` tables
({layer: [checkpoint names, in the order bert4keras zips them with the layer's
weights]}), written by make_google_names.py beside it from bert4keras' published
source. Each family is built tiny with our builder and checked against its table:

- on save: the names we write are exactly the golden names of the golden layers our
  model builds, and the i-th golden name of a layer holds that layer's i-th weight;
- on load: a checkpoint holding exactly those names loads, and saving it again gives
  back every tensor unchanged (so each golden name reaches a variable and returns).

A golden layer our model does not build, or a name we write that the table lacks, is
allowed only when listed in its case below, with the reason.
"""

import fnmatch
import json
import os
import re
from typing import NamedTuple

import keras
import numpy as np
import pytest

from kerasformers.checkpoints import open_checkpoint, save_checkpoint
from kerasformers.models import build_transformer_model

GOLDEN_FILE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "data",
    "golden",
    "google_names.json",
)
with open(GOLDEN_FILE, encoding="utf-8") as _f:
    GOLDEN = json.load(_f)

BERT_CONFIG = dict(
    vocab_size=50,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    hidden_act="gelu",
    max_position_embeddings=32,
    type_vocab_size=2,
)
T5_CONFIG = dict(
    vocab_size=50,
    d_model=16,
    d_kv=8,
    d_ff=32,
    num_layers=2,
    num_heads=2,
    relative_attention_num_buckets=8,
    dropout_rate=0.0,
)
# The HF config keys that go with each T5 version, as in the released config.json files.
T5_VERSION_CONFIG = {
    "t5.1.0": dict(feed_forward_proj="relu", tie_word_embeddings=True),
    "t5.1.1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    "mt5.1.1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}
HEADS = dict(with_pool=True, with_nsp=True, with_mlm=True)


class Case(NamedTuple):
    model: str  # our model= name
    golden: str  # its family in google_names.json
    config: dict
    kwargs: dict  # builder arguments
    # Golden layers this model does not build: {fnmatch pattern: why}.
    not_built: dict = {}
    # Names we write that none of the golden layers we build lists: {name: why}.
    ours_only: dict = {}
    # ALBERT_Unshared saves its per-layer copies of ALBERT's block under one set of
    # names, which it refuses to do unless the copies are equal.
    equal_blocks: bool = False


# Why a golden layer may be missing. Most bert4keras tables start from BERT's, which
# lists every layer a BERT can build, so they name layers their own class never builds.
MAPPING = "built only when embedding_size != hidden_size (in bert4keras too)"
NO_ABSOLUTE_POSITIONS = (
    "relative (NEZHA) or rotary (RoFormer) positions: no absolute position table, in "
    "bert4keras either; the entry is inherited from BERT's table"
)
NO_POOLER = (
    "no pooler / NSP head in this family (nor in bert4keras' class, which inherits the entry)"
)
TIED_LM_HEAD = (
    "the LM head is the tied token table alone, no dense / norm / bias (as in bert4keras, "
    "whose table inherits BERT's MLM entries)"
)
NO_EMBEDDING_NORM = "embeddings are summed without a LayerNorm (as in bert4keras' GPT / GPT2)"
ELECTRA_HEADS = (
    "bert4keras' ELECTRA deletes with_pool and with_mlm: its table keeps BERT's entries "
    "(electra/pooler/*, cls/*) for layers it never builds. Our with_mlm builds the "
    "generator head under the real checkpoints' generator_predictions/* names instead"
)
GPT_HEADS = "bert4keras' GPT deletes with_pool and with_mlm (the LM head is the tied table)"
ROFORMER_V2_NOT_BUILT = {
    "Embedding-Position": NO_ABSOLUTE_POSITIONS,
    "Pooler-Dense": NO_POOLER,
    "NSP-Proba": NO_POOLER,
    "MLM-*": TIED_LM_HEAD,
}
GPT_NOT_BUILT = {
    "Embedding-Mapping": MAPPING,
    "Embedding-Norm": NO_EMBEDDING_NORM,
    "Pooler-Dense": GPT_HEADS,
    "NSP-Proba": GPT_HEADS,
    "MLM-*": GPT_HEADS,
}

CASES = {
    "bert": Case("bert", "bert", BERT_CONFIG, HEADS, {"Embedding-Mapping": MAPPING}),
    "bert+embedding_size": Case("bert", "bert", BERT_CONFIG, {**HEADS, "embedding_size": 8}),
    "albert": Case(
        "albert",
        "albert",
        BERT_CONFIG,
        {**HEADS, "embedding_size": 8},
        {
            "Transformer-[0-9]*": "ALBERT's one shared block is 'Transformer-*' without "
            "an index; bert4keras' ALBERT table keeps BERT's per-layer entries"
        },
    ),
    "albert_unshared": Case(
        "albert_unshared",
        "albert_unshared",
        BERT_CONFIG,
        {**HEADS, "embedding_size": 8},
        equal_blocks=True,
    ),
    "nezha": Case(
        "nezha",
        "nezha",
        BERT_CONFIG,
        HEADS,
        {"Embedding-Mapping": MAPPING, "Embedding-Position": NO_ABSOLUTE_POSITIONS},
    ),
    "roformer": Case(
        "roformer",
        "roformer",
        BERT_CONFIG,
        HEADS,
        {"Embedding-Mapping": MAPPING, "Embedding-Position": NO_ABSOLUTE_POSITIONS},
    ),
    "roformer_v2": Case(
        "roformer_v2",
        "roformer_v2",
        BERT_CONFIG,
        {"with_mlm": True},
        {"Embedding-Mapping": MAPPING, **ROFORMER_V2_NOT_BUILT},
    ),
    "roformer_v2+embedding_size": Case(
        "roformer_v2",
        "roformer_v2",
        BERT_CONFIG,
        {"with_mlm": True, "embedding_size": 8},
        ROFORMER_V2_NOT_BUILT,
        {
            "cls/predictions/transform/dense/kernel": "our Output-Mapping (hidden -> "
            "embedding_size before the tied table). bert4keras' RoFormerV2 builds that "
            "layer too but maps no name to it, leaving it random after loading; we give "
            "it the name bert4keras' table gives BERT's MLM-Dense kernel, a layer "
            "RoFormer-v2 does not have"
        },
    ),
    "electra": Case(
        "electra",
        "electra",
        BERT_CONFIG,
        {"with_discriminator": True, "embedding_size": 8},
        {"Pooler-Dense": ELECTRA_HEADS, "NSP-Proba": ELECTRA_HEADS, "MLM-*": ELECTRA_HEADS},
    ),
    "gpt": Case("gpt", "gpt", BERT_CONFIG, {}, GPT_NOT_BUILT),
    "gpt2": Case(
        "gpt2",
        "gpt2",
        BERT_CONFIG,
        {},
        {**GPT_NOT_BUILT, "Embedding-Segment": "GPT-2 takes token ids only (as bert4keras')"},
    ),
    "gpt2_ml": Case("gpt2_ml", "gpt2_ml", BERT_CONFIG, {}),
}
# T5_Encoder and T5_Decoder inherit T5_Base's table in bert4keras: each part is checked
# against its version's table.
for _version, _extra in T5_VERSION_CONFIG.items():
    _config = {**T5_CONFIG, **_extra}
    CASES[_version] = Case(_version, _version, _config, {})
    CASES[f"{_version}_encoder"] = Case(
        f"{_version}_encoder", _version, _config, {}, {"Decoder-*": "the encoder alone"}
    )
    CASES[f"{_version}_decoder"] = Case(
        f"{_version}_decoder", _version, _config, {}, {"Encoder-*": "the decoder alone"}
    )


# ------------------------------------------------------------------- helpers
def _build(case, checkpoint=None):
    return build_transformer_model(
        case.config, checkpoint, model=case.model, return_keras_model=False, **case.kwargs
    )


def _label_weights(builder, equal_blocks):
    """Fills each variable with its own constant 1, 2, 3, ..., so a saved tensor tells
    which variable it came from whatever transpose or reshape a mapping hook applies.

    Returns ({(layer, weight index): label}, {label: variable path}).
    """
    labels, paths, by_key = {}, {}, {}
    for layer_name, layer in builder.layers.items():
        for index, variable in enumerate(layer.weights):
            if equal_blocks:
                key = (re.sub(r"^Transformer-\d+-", "Transformer-", layer_name), index)
            else:
                key = id(variable)  # a shared variable keeps one label
            if key not in by_key:
                by_key[key] = len(by_key) + 1
                paths[by_key[key]] = variable.path
            label = by_key[key]
            dtype = keras.backend.standardize_dtype(variable.dtype)
            variable.assign(np.full(tuple(variable.shape), label, dtype))
            labels[(layer_name, index)] = label
    return labels, paths


def _label_of(value):
    """The label a saved tensor carries, or None if it is not one constant."""
    value = np.asarray(value).ravel()
    if value.size and np.all(value == value[0]):
        return int(value[0])
    return None


def _save_and_read(builder, path):
    builder.save_weights_as_checkpoint(str(path))
    with open_checkpoint(str(path)) as reader:
        return {name: reader.get(name) for name in reader.names()}


def _golden_names(table, builder):
    """{golden name: [(layer, index), ...]} over the golden layers the model builds."""
    names = {}
    for layer, layer_names in table.items():
        if layer in builder.layers:
            for index, name in enumerate(layer_names):
                names.setdefault(name, []).append((layer, index))
    return names


def _unbuilt_layer_problems(case, table, builder):
    absent = sorted(layer for layer in table if layer not in builder.layers)
    problems = [
        f"golden layer {layer!r} is not in our model (allow-list it with the reason, or "
        f"build it): {table[layer]}"
        for layer in absent
        if not any(fnmatch.fnmatchcase(layer, pattern) for pattern in case.not_built)
    ]
    problems += [
        f"allow-list entry {pattern!r} matches no missing golden layer: remove it"
        for pattern in case.not_built
        if not any(fnmatch.fnmatchcase(layer, pattern) for layer in absent)
    ]
    return problems


def _report(case_id, case, problems):
    return (
        f"{case_id} (model={case.model!r}) vs bert4keras "
        f"{GOLDEN['_header']['bert4keras_version']}'s table for {case.golden!r} in "
        f"{os.path.relpath(GOLDEN_FILE)}:\n  " + "\n  ".join(problems)
    )


# --------------------------------------------------------------------- tests
def test_golden_file_is_bert4keras_0_11_5_and_every_family_is_checked():
    header = GOLDEN["_header"]
    assert header["bert4keras_version"] == "0.11.5"
    assert header["generated_by"] == "tests/data/golden/make_google_names.py"
    families = {family for family in GOLDEN if family != "_header"}
    assert families == {case.golden for case in CASES.values()}


@pytest.mark.parametrize("case_id", list(CASES))
def test_google_names_on_save(case_id, tmp_path):
    case = CASES[case_id]
    table = GOLDEN[case.golden]
    builder = _build(case)
    labels, paths = _label_weights(builder, case.equal_blocks)
    saved = _save_and_read(builder, tmp_path / "model.ckpt")
    golden = _golden_names(table, builder)

    def source(name):
        label = _label_of(saved[name])
        return paths.get(label, "an unlabelled value")

    problems = _unbuilt_layer_problems(case, table, builder)
    extra = sorted(set(saved) - set(golden) - set(case.ours_only))
    missing = sorted(set(golden) - set(saved))
    if extra:
        problems.append("we write, bert4keras' table has not:")
        problems += [f"  {name}  (from {source(name)})" for name in extra]
    if missing:
        problems.append("bert4keras' table has, we do not write:")
        problems += [
            f"  {name}  (bert4keras loads it into weight {index} of {layer!r})"
            for name in missing
            for layer, index in golden[name]
        ]
    problems += [
        f"allow-listed ours-only name {name!r} is not written, or is a golden name now: remove it"
        for name in case.ours_only
        if name not in saved or name in golden
    ]
    # Same names could still sit on the wrong weights (two swapped within a layer):
    # bert4keras zips each layer's list with the layer's weights in order.
    for name in sorted(set(golden) & set(saved)):
        for layer, index in golden[name]:
            weights = builder.layers[layer].weights
            if index >= len(weights):
                problems.append(
                    f"{name}: bert4keras lists {len(table[layer])} names for {layer!r}, "
                    f"which has {len(weights)} weights"
                )
            elif labels[(layer, index)] != _label_of(saved[name]):
                problems.append(
                    f"{name} holds {source(name)}, but bert4keras loads it into weight "
                    f"{index} of {layer!r} ({weights[index].path})"
                )
    assert not problems, _report(case_id, case, problems)


@pytest.mark.parametrize("case_id", list(CASES))
def test_google_names_on_load(case_id, tmp_path, rng):
    case = CASES[case_id]
    table = GOLDEN[case.golden]
    builder = _build(case)
    labels, _ = _label_weights(builder, case.equal_blocks)
    ours = _save_and_read(builder, tmp_path / "ours.ckpt")
    # A golden name's shape in a checkpoint is that of the tensor we save from the
    # same weight (a mapping hook may have transposed it).
    shapes = {_label_of(value): value.shape for value in ours.values()}
    tensors = {}
    for name, [(layer, index), *_] in _golden_names(table, builder).items():
        # (1,) where we save nothing from that weight: the round trip then fails on it.
        shape = shapes.get(labels.get((layer, index)), (1,))
        tensors[name] = rng.normal(size=shape).astype("float32")
    # The allow-listed names of weights bert4keras' table has no name for.
    for name in case.ours_only:
        tensors[name] = rng.normal(size=ours[name].shape).astype("float32")
    save_checkpoint(tensors, tmp_path / "golden.ckpt", format="tf")

    loaded = _build(case, str(tmp_path / "golden.ckpt"))
    again = _save_and_read(loaded, tmp_path / "again.ckpt")
    lost = sorted(set(tensors) - set(again))
    new = sorted(set(again) - set(tensors))
    assert not lost and not new, _report(
        case_id, case, [f"lost on load + save: {lost}", f"written but not loaded: {new}"]
    )
    changed = [name for name in tensors if not np.array_equal(again[name], tensors[name])]
    assert not changed, _report(case_id, case, [f"changed by load + save: {changed}"])
