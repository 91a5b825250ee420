"""`snippets.AutoRegressiveDecoder`: bert4keras' decoder API around a user `predict`.

A bert4keras-style seq2seq decoder (UniLM: the source is segment 0, the output
segment 1) is written the way ported scripts write it and checked against
`generate` (itself checked against HF transformers) and against the formulas
of its temperature / top-k / top-p rules.
"""

import keras
import numpy as np
import pytest

from kerasformers.generation import generate
from kerasformers.models import build_transformer_model
from kerasformers.snippets import AutoRegressiveDecoder

VOCAB, WIDTH, MAXLEN = 61, 24, 6
SOURCE = [2, 17, 33, 8, 3]


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(4)
    config = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=40,
        hidden_act="gelu",
        max_position=32,
    )
    return build_transformer_model(config, model="bert", application="unilm")


class Seq2Seq(AutoRegressiveDecoder):
    """bert4keras' autotitle decoder, right-padded to one width (one compiled shape)."""

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        self.model = model

    @AutoRegressiveDecoder.wraps(default_rtype="probas")
    def predict(self, inputs, output_ids, states):
        token_ids, segment_ids = inputs
        token_ids = np.concatenate([token_ids, output_ids], 1)
        segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
        length = token_ids.shape[1]
        pad = WIDTH - length
        token_ids = np.pad(token_ids, ((0, 0), (0, pad)))
        segment_ids = np.pad(segment_ids, ((0, 0), (0, pad)), constant_values=1)
        probas = self.model.predict_on_batch([token_ids, segment_ids])
        return keras.ops.convert_to_numpy(probas)[:, length - 1]


def _inputs():
    return [np.array(SOURCE), np.zeros(len(SOURCE), "int32")]


def test_beam_search_matches_generate(model):
    decoder = Seq2Seq(model, start_id=None, end_id=VOCAB + 1, maxlen=MAXLEN)  # never ends
    for beams in (1, 3):
        ours = decoder.beam_search(_inputs(), topk=beams).tolist()
        # No end token: both keep the `beams` best sums of log-probabilities.
        reference = generate(
            model,
            [SOURCE],
            max_new_tokens=MAXLEN,
            method="beam",
            num_beams=beams,
            length_penalty=0.0,
        )[0]
        assert ours == reference


def test_end_id_and_start_id(model):
    greedy = generate(model, [SOURCE], max_new_tokens=MAXLEN)[0]
    end_id = greedy[2]
    decoder = Seq2Seq(model, start_id=None, end_id=end_id, maxlen=MAXLEN)
    assert decoder.beam_search(_inputs(), topk=1).tolist() == greedy[:3]  # end_id included
    assert decoder.random_sample(_inputs(), 2, topk=1)[0].tolist() == greedy[:3]
    with_start = Seq2Seq(model, start_id=7, end_id=end_id, maxlen=2)
    assert with_start.beam_search(_inputs(), topk=2)[0] == 7


def test_random_sample_is_seeded_and_filtered(model):
    decoder = Seq2Seq(model, start_id=None, end_id=VOCAB + 1, maxlen=MAXLEN)
    np.random.seed(3)
    first = [s.tolist() for s in decoder.random_sample(_inputs(), 4, topk=5, temperature=1.5)]
    np.random.seed(3)
    again = [s.tolist() for s in decoder.random_sample(_inputs(), 4, topk=5, temperature=1.5)]
    assert first == again and len(first) == 4
    greedy = generate(model, [SOURCE], max_new_tokens=MAXLEN)[0]
    np.random.seed(0)
    nucleus = decoder.random_sample(_inputs(), 3, topp=1e-9)
    assert all(s.tolist() == greedy for s in nucleus)


def test_wraps_temperature_and_rtype():
    logits = np.array([[2.0, 0.5, -1.0]])

    class FromLogits(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype="logits")
        def predict(self, inputs, output_ids, states):
            return logits

    class FromProbas(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype="probas")
        def predict(self, inputs, output_ids, states):
            e = np.exp(logits)
            return e / e.sum()

    def softmax(x):
        e = np.exp(x - x.max())
        return e / e.sum()

    for cls in (FromLogits, FromProbas):
        decoder = cls(start_id=None, end_id=0, maxlen=3)
        probas, _ = decoder.predict([], None, None, temperature=2.0, rtype="probas")
        np.testing.assert_allclose(probas, softmax(logits / 2.0), rtol=1e-6)
        log_probas, _ = decoder.predict([], None, None, temperature=2.0, rtype="logits")
        np.testing.assert_allclose(log_probas, np.log(softmax(logits / 2.0)), rtol=1e-5)
    with pytest.raises(ValueError, match="rtype must be"):
        FromLogits(start_id=None, end_id=0, maxlen=3).predict([], None, None, rtype="x")
    with pytest.raises(ValueError, match="default_rtype"):
        AutoRegressiveDecoder.wraps(default_rtype="scores")
    with pytest.raises(ValueError, match="maxlen"):
        FromLogits(start_id=None, end_id=0, maxlen=0)
    with pytest.raises(NotImplementedError):
        AutoRegressiveDecoder(None, 0, 3).predict([], None)
