"""Generation options: repetition penalty, lists of end ids, their checks.

The reference is brute force: each prompt alone, unpadded, the whole
keras.Model run on the whole sequence for every new token, HF's repetition
penalty applied in numpy to its pre-softmax logits (HF parity of the same
options is in tests/parity/test_generation_options_hf.py).
"""

import keras
import numpy as np
import pytest

from kerasformers.generation import generate
from kerasformers.generation.checks import check_end_ids
from kerasformers.generation.loop import _COMPILED
from tests.conftest import tiny_model

PROMPTS = [[5, 17, 33, 2, 60, 17], [44], [9, 81, 23]]  # no 0: the pad id
NEW = 8


@pytest.fixture(scope="module")
def model():
    return tiny_model("gpt2")


def _brute_force(model, penalty, end_ids=(), min_new_tokens=0):
    """Greedy search with HF's repetition penalty, by full recomputation.

    Rows are right-padded to one width (one compiled shape): under the causal
    mask nothing right of a position reaches it.
    """
    head = model.outputs[-1]._keras_history.operation  # the LM head's softmax
    logits_model = keras.Model(model.inputs, head.input)
    ids = np.zeros((len(PROMPTS), max(map(len, PROMPTS)) + NEW), "int32")
    for row, prompt in enumerate(PROMPTS):
        ids[row, : len(prompt)] = prompt
    lengths = [len(p) for p in PROMPTS]
    rows, done = [[] for _ in PROMPTS], [False] * len(PROMPTS)
    for step in range(NEW):
        logits = keras.ops.convert_to_numpy(logits_model.predict_on_batch(ids)).astype("float64")
        for row in range(len(PROMPTS)):
            if done[row]:
                continue
            last = logits[row, lengths[row] - 1]
            seen = sorted(set(ids[row, : lengths[row]].tolist()))
            last[seen] = np.where(last[seen] < 0, last[seen] * penalty, last[seen] / penalty)
            if step < min_new_tokens:
                last[list(end_ids)] = -np.inf
            token = int(np.argmax(last))
            if token in end_ids:
                done[row] = True
                continue
            rows[row].append(token)
            ids[row, lengths[row]] = token
            lengths[row] += 1
    return rows


def test_repetition_penalty_is_hfs_rule(model):
    plain = generate(model, PROMPTS, max_new_tokens=NEW, end_id=[95, 96])
    outputs = {}
    for penalty in (0.2, 1.8):  # one compile: the penalty is an input
        reference = _brute_force(model, penalty)
        ours = generate(
            model, PROMPTS, max_new_tokens=NEW, end_id=[95, 96], repetition_penalty=penalty
        )
        assert ours == reference, penalty
        assert ours != plain, penalty  # the penalty matters here
        outputs[penalty] = ours
    assert outputs[0.2] != outputs[1.8]
    # 1.0 is off: the same as no penalty at all.
    assert (
        generate(model, PROMPTS, max_new_tokens=NEW, end_id=[95, 96], repetition_penalty=1.0)
        == plain
    )


def test_end_id_lists(model):
    plain = generate(model, PROMPTS, max_new_tokens=NEW, repetition_penalty=1.8, end_id=[95, 96])
    end_ids = [plain[0][1], plain[2][0]]
    assert end_ids[0] != end_ids[1]
    reference = _brute_force(model, 1.8, end_ids)
    assert (
        generate(model, PROMPTS, max_new_tokens=NEW, repetition_penalty=1.8, end_id=end_ids)
        == reference
    )
    assert len(reference[0]) <= 1 and reference[2] == []
    # An int, a one-id list and a list with the id twice are the same end.
    assert check_end_ids(7, 97) == check_end_ids([7], 97) == check_end_ids((7, 7), 97) == (7,)
    assert check_end_ids(np.array([7, 3]), 97) == (7, 3)
    # min_new_tokens forbids every end id.
    forced = generate(
        model, PROMPTS, max_new_tokens=NEW, repetition_penalty=1.8, end_id=end_ids, min_new_tokens=4
    )
    assert forced == _brute_force(model, 1.8, end_ids, min_new_tokens=4)
    assert all(len(row) >= 4 and not set(row[:4]) & set(end_ids) for row in forced)


def test_options_are_inputs_not_compiles(model):
    kwargs = dict(max_new_tokens=NEW, repetition_penalty=1.3)
    generate(model, PROMPTS, end_id=[1, 2], **kwargs)
    count = len(_COMPILED[model])
    generate(model, PROMPTS, end_id=[3, 4], **dict(kwargs, repetition_penalty=0.6))
    assert len(_COMPILED[model]) == count


@pytest.mark.parametrize(
    "settings,error,match",
    [
        ({"end_id": []}, ValueError, "end_id is an empty list"),
        ({"end_id": ()}, ValueError, "end_id is an empty list"),
        ({"end_id": [1, "a"]}, ValueError, r"end_id\[1\] must be an integer id .*got 'a'"),
        ({"end_id": [1, 2.0]}, ValueError, r"end_id\[1\] must be an integer id"),
        ({"end_id": [True]}, ValueError, r"end_id\[0\] must be an integer id"),
        ({"end_id": [3, 500]}, ValueError, r"end_id\[1\] 500 is outside the vocabulary \[0, 97\)"),
        ({"end_id": [-1]}, ValueError, r"end_id\[0\] -1 is outside the vocabulary"),
        ({"end_id": "3"}, ValueError, "end_id must be an integer id"),
        ({"repetition_penalty": 0}, ValueError, "repetition_penalty must be a finite number > 0"),
        (
            {"repetition_penalty": -1.2},
            ValueError,
            "repetition_penalty must be a finite number > 0",
        ),
        ({"repetition_penalty": "1.2"}, ValueError, "repetition_penalty must be a finite number"),
        ({"repetition_penalty": None}, ValueError, "repetition_penalty must be a finite number"),
        ({"repetition_penalty": True}, ValueError, "repetition_penalty must be a finite number"),
        ({"repetition_penalty": float("inf")}, ValueError, "repetition_penalty must be a finite"),
        ({"repetition_penalty": float("nan")}, ValueError, "repetition_penalty must be a finite"),
    ],
)
def test_bad_options(model, settings, error, match):
    with pytest.raises(error, match=match):
        generate(model, PROMPTS, max_new_tokens=2, **settings)
