"""check_inputs and DataGenerator(check_inputs=model): ids outside a model's tables are
caught on the host, naming the input, the id, where it is and the allowed range."""

import pickle

import keras
import numpy as np
import pytest

from kerasformers.models import build_transformer_model
from kerasformers.snippets import DataGenerator, check_inputs

TINY = dict(
    vocab_size=50,
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=32,
    hidden_act="gelu",
    max_position=32,
)


@pytest.fixture(scope="module")
def bert():
    return build_transformer_model(dict(TINY), model="bert")


@pytest.fixture(scope="module")
def gpt2():
    return build_transformer_model(dict(TINY), model="gpt2")


def _ids(rows=2, cols=5, high=50, seed=0):
    return np.random.default_rng(seed).integers(0, high, size=(rows, cols)).astype("int32")


# ------------------------------------------------------------------ BERT


def test_valid_bert_inputs_pass_in_every_form(bert):
    tokens, segments = _ids(), _ids(high=2)
    batch = [tokens, segments]
    assert check_inputs(bert, batch) is batch
    check_inputs(bert, (tokens.astype("int64"), segments.astype("uint8")))
    check_inputs(bert, {"Input-Token": tokens, "Input-Segment": segments})
    check_inputs(bert, [tokens.tolist(), segments.tolist()])
    check_inputs(bert, [keras.ops.convert_to_tensor(tokens), keras.ops.convert_to_tensor(segments)])
    check_inputs(bert, [tokens[:0], segments[:0]])  # an empty batch holds no bad id


def test_token_id_outside_the_table_names_input_row_column_and_range(bert):
    tokens = _ids()
    tokens[1, 3] = 50
    with pytest.raises(
        ValueError,
        match=r"Input-Token holds id 50 at row 1, column 3, outside Embedding-Token "
        r"\(input_dim=50: ids 0\.\.49\)",
    ):
        check_inputs(bert, [tokens, _ids(high=2)])
    tokens[1, 3] = -1
    with pytest.raises(ValueError, match="Input-Token holds id -1 at row 1, column 3"):
        check_inputs(bert, [tokens, _ids(high=2)])


def test_segment_id_outside_its_table(bert):
    segments = _ids(high=2)
    segments[0, 4] = 2
    with pytest.raises(
        ValueError,
        match=r"Input-Segment holds id 2 at row 0, column 4, outside Embedding-Segment "
        r"\(input_dim=2: ids 0\.\.1\)",
    ):
        check_inputs(bert, {"Input-Token": _ids(), "Input-Segment": segments})


def test_dtypes_counts_axes_and_raggedness(bert):
    tokens, segments = _ids(), _ids(high=2)
    with pytest.raises(TypeError, match="Input-Token must hold integer ids, got dtype float32"):
        check_inputs(bert, [tokens.astype("float32"), segments])
    with pytest.raises(TypeError, match="Input-Segment must hold integer ids, got dtype bool"):
        check_inputs(bert, [tokens, segments.astype(bool)])
    with pytest.raises(ValueError, match=r"takes 2 inputs \(Input-Token, Input-Segment\), got 1"):
        check_inputs(bert, tokens)
    with pytest.raises(ValueError, match="takes 2 inputs .*got 3"):
        check_inputs(bert, [tokens, segments, segments])
    with pytest.raises(
        ValueError, match=r"misses \['Input-Segment'\] and has unknown keys \['x'\]"
    ):
        check_inputs(bert, {"Input-Token": tokens, "x": segments})
    with pytest.raises(ValueError, match=r"Input-Token must have 2 axes .*got shape \(5,\)"):
        check_inputs(bert, [tokens[0], segments[0]])
    with pytest.raises(ValueError, match="Input-Token is ragged"):
        check_inputs(bert, [[[1, 2], [3]], [[0, 0], [0]]])


def test_position_ids_and_shared_segment_tables():
    model = build_transformer_model(dict(TINY), model="bert", custom_position_ids=True)
    tokens = _ids()
    positions = np.tile(np.arange(5, dtype="int32"), (2, 1))
    check_inputs(model, [tokens, _ids(high=2), positions])
    positions[1, 0] = 32
    with pytest.raises(
        ValueError,
        match=r"Input-Position holds id 32 at row 1, column 0, outside "
        r"Embedding-Position \(input_dim=32",
    ):
        check_inputs(model, [tokens, _ids(high=2), positions])

    # Segments that share the token table may use any token id.
    shared = build_transformer_model(dict(TINY), model="bert", shared_segment_embeddings=True)
    check_inputs(shared, [tokens, _ids(high=50)])
    with pytest.raises(ValueError, match="Input-Segment holds id 50 .*outside Embedding-Token"):
        check_inputs(shared, [tokens, np.full_like(tokens, 50)])


def test_not_a_model():
    with pytest.raises(TypeError, match="must be a keras.Model .*got dict"):
        check_inputs({}, [])
    builder = build_transformer_model(dict(TINY), model="gpt2", return_keras_model=False)
    with pytest.raises(TypeError, match=r"pass its \.model"):
        check_inputs(builder, _ids())
    check_inputs(builder.model, _ids())


# ----------------------------------------------------------------- GPT-2


def test_gpt2_single_input(gpt2):
    tokens = _ids()
    check_inputs(gpt2, tokens)
    check_inputs(gpt2, [tokens])
    check_inputs(gpt2, tokens.tolist())  # nested lists: the one input, not a list of inputs
    tokens[0, 0] = 77
    with pytest.raises(ValueError, match="Input-Token holds id 77 at row 0, column 0"):
        check_inputs(gpt2, tokens)
    with pytest.raises(ValueError, match=r"takes 1 input \(Input-Token\), got 2"):
        check_inputs(gpt2, [_ids(), _ids()])


def test_t5_inputs_share_one_token_table():
    model = build_transformer_model(dict(TINY), model="t5")
    tokens = _ids()
    check_inputs(model, [tokens, tokens])
    tokens[1, 1] = 50
    with pytest.raises(
        ValueError,
        match="Decoder-Input-Token holds id 50 at row 1, column 1, outside Embedding-Token",
    ):
        check_inputs(model, [_ids(), tokens])


# ---------------------------------------------------------- DataGenerator


class _PairGenerator(DataGenerator):
    """bert4keras style: items (token_ids, segment_ids, label) -> ([tokens, segments], labels)."""

    def __iter__(self, random=False):
        tokens, segments, labels = [], [], []
        for is_end, (t, s, y) in self.sample(random):
            tokens.append(t)
            segments.append(s)
            labels.append(y)
            if len(tokens) == self.batch_size or is_end:
                yield [np.array(tokens), np.array(segments)], np.array(labels)
                tokens, segments, labels = [], [], []


def _pair_items(bad_item=None):
    items = [([2, 5, 7, 3], [0, 0, 1, 1], float(i % 2)) for i in range(6)]
    if bad_item is not None:
        items[bad_item] = ([2, 5, 7, 3], [0, 0, 2, 1], 0.0)
    return items


BAD_SEGMENT = (
    r"_PairGenerator, batch 1: check_inputs: Input-Segment holds id 2 at row 0, column 2, "
    r"outside Embedding-Segment \(input_dim=2: ids 0\.\.1\)"
)


def test_generator_checks_every_batch_it_yields(bert):
    gen = _PairGenerator(_pair_items(bad_item=2), batch_size=2, check_inputs=bert)
    with pytest.raises(ValueError, match=BAD_SEGMENT):
        list(gen)
    with pytest.raises(ValueError, match=BAD_SEGMENT):
        for _ in zip(range(5), gen.forfit(random=False), strict=False):
            pass
    with pytest.raises(ValueError, match=BAD_SEGMENT):
        for _ in zip(range(5), gen.fortest(random=False), strict=False):
            pass
    dataset = gen.to_pydataset(random=False)
    dataset[0]
    with pytest.raises(ValueError, match=BAD_SEGMENT):
        dataset[1]
    # Without the keyword nothing changes: the bad batch goes through.
    assert len(list(_PairGenerator(_pair_items(bad_item=2), batch_size=2))) == 3


def test_checked_generator_still_feeds_fit_and_pickles(bert):
    head = keras.layers.Dense(1)(keras.layers.Lambda(lambda x: x[:, 0])(bert.output))
    model = keras.Model(bert.inputs, head)
    model.compile(optimizer="adam", loss="mse")
    gen = _PairGenerator(_pair_items(), batch_size=2, check_inputs=model)
    history = model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    clone = pickle.loads(pickle.dumps(gen))  # PyDataset workers receive it pickled
    assert [len(b[1]) for b in clone] == [2, 2, 2]
    with pytest.raises(TypeError, match="check_inputs: model must be a keras.Model"):
        _PairGenerator(_pair_items(), check_inputs="model")
