"""examples/task_sft_chat.py: the --smoke run on the real corpus, and its data pieces.

The smoke test calls the script's main(argv) in-process (a one-layer Qwen2, one
epoch on 192 dialogues) and checks what could go wrong silently: the masked loss
starts at ln(vocab) (a distribution over the whole vocab, averaged over target
tokens only) and falls with training; the model is saved in HF layout and the
scripted chat runs from the saved folder, its streamed tokens equal to
`generate`'s. The other tests check the loss mask on a rendered conversation
(exactly the assistant tokens and their <|im_end|>), the shift of the batches,
the held-out split and the streaming text decoder on split multi-byte characters.
"""

import importlib.util
import json
import math

import numpy as np
import pytest

from tests.examples.helpers import load_example

needs_corpus = pytest.mark.skipif(
    importlib.util.find_spec("chatterbot_corpus") is None,
    reason="offline data package chatterbot-corpus not installed (make installs it)",
)

CONVERSATION = [
    {"role": "user", "content": "你好"},
    {"role": "assistant", "content": "你好，我是助手。"},
    {"role": "user", "content": "你喜欢什么颜色?"},
    {"role": "assistant", "content": "蓝色"},
]


@pytest.fixture(scope="module")
def data():
    return load_example("sft_chat_data")


@pytest.fixture(scope="module")
def tokenizer(data, tmp_path_factory):
    from kerasformers.tokenizers import HFTokenizer

    folder = str(tmp_path_factory.mktemp("tokenizer"))
    texts = [m["content"] for m in CONVERSATION] * 3 + ["你是一个乐于助人的助手。"] * 2
    data.train_tokenizer(texts, folder, vocab_size=300)
    return HFTokenizer(folder)


def runs(ids, mask):
    """The maximal runs of ids where mask is 1."""
    out, current = [], []
    for i, bit in zip(ids, mask, strict=True):
        if bit:
            current.append(i)
        elif current:
            out.append(current)
            current = []
    return out + ([current] if current else [])


def test_loss_mask_is_exactly_the_assistant_turns(data, tokenizer):
    ids, mask = data.render_with_mask(tokenizer, CONVERSATION)
    assert len(ids) == len(mask) and set(mask) == {0, 1}
    # The ids spell the template's rendering, default system turn included.
    text = tokenizer.apply_chat_template(CONVERSATION, add_generation_prompt=False)
    assert text.startswith(f"<|im_start|>system\n{data.SYSTEM}<|im_end|>\n<|im_start|>user\n你好")
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    # Targets: each assistant turn's content and the <|im_end|> closing it, nothing else.
    targets = [tokenizer.decode(r, skip_special_tokens=False) for r in runs(ids, mask)]
    assert targets == ["你好，我是助手。<|im_end|>", "蓝色<|im_end|>"]
    im_start, im_end = (tokenizer.token_to_id(t) for t in (data.IM_START, data.IM_END))
    assert [m for i, m in zip(ids, mask, strict=True) if i == im_end] == [0, 0, 1, 0, 1]
    assert all(m == 0 for i, m in zip(ids, mask, strict=True) if i == im_start)
    # An assistant turn is encoded as the model generates it after the prompt.
    prompt = tokenizer.apply_chat_template(CONVERSATION[:3], tokenize=True)
    assert ids[: len(prompt)] == prompt
    assert ids[len(prompt) : len(prompt) + len(runs(ids, mask)[1])] == runs(ids, mask)[1]


def test_batches_predict_the_next_token_where_it_is_a_target(data, tokenizer):
    items = [data.render_with_mask(tokenizer, CONVERSATION[:2])]
    items.append(data.render_with_mask(tokenizer, CONVERSATION))
    (token_ids,), next_ids, weights = data.ChatGenerator(items, 3, pad_id=0, bucket=8).collate(
        items
    )
    assert token_ids.shape == next_ids.shape == weights.shape == (3, 8 * -(-len(items[1][0]) // 8))
    for row, (ids, mask) in enumerate(items + items[:1]):  # topped up with a copy
        n = len(ids)
        assert token_ids[row, :n].tolist() == ids and not token_ids[row, n:].any()
        assert next_ids[row, : n - 1].tolist() == ids[1:]
        assert weights[row, : n - 1].tolist() == mask[1:]
        assert not weights[row, n - 1 :].any()  # the last token and padding predict nothing


def test_text_streamer_never_prints_half_a_character(data, tokenizer):
    text = "你好龘靐齉"  # characters unseen in training: spelled as their UTF-8 bytes
    ids = tokenizer.encode(text, add_special_tokens=False)[0]
    assert len(ids) > len(text)
    streamer = data.TextStreamer(tokenizer)
    pieces = [streamer.put([i]) for i in ids] + [streamer.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert "" in pieces  # some ids completed no character


@needs_corpus
def test_split_keeps_both_scripts_of_a_conversation_together(data):
    dialogues = data.load_dialogues()
    train, test = data.split_dialogues(dialogues)
    assert {d["script"] for d in dialogues} == set(data.SCRIPTS) and len(dialogues) > 900
    assert not {d["key"] for d in train} & {d["key"] for d in test}
    assert 50 < len(test) < 0.15 * len(dialogues)
    for d in dialogues:
        roles = [m["role"] for m in d["messages"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and roles


@needs_corpus
def test_sft_chat_smoke(tmp_path):
    example = load_example("task_sft_chat")
    folder = tmp_path / "model"
    output = tmp_path / "sft_chat.json"
    result = example.main(["--smoke", "--model-dir", str(folder), "--output", str(output)])
    with open(output, encoding="utf-8") as f:
        assert json.load(f)["env"]["backend"] == result["env"]["backend"]
    assert result["train_dialogues"] == 192 and result["test_dialogues"] == 16

    # Random init: about ln(vocab) per target token; one epoch lowers it.
    before, after = result["loss_before"], result["loss_after"]
    assert abs(before["train"] - math.log(result["vocab_size"])) < 0.5
    assert after["train"] < before["train"] - 0.3
    assert np.isfinite(after["test"])

    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (folder / name).is_file()
    with open(folder / "config.json", encoding="utf-8") as f:
        config = json.load(f)
    assert config["model_type"] == "qwen2" and config["tie_word_embeddings"]

    from kerasformers.tokenizers import HFTokenizer

    tokenizer = HFTokenizer(str(folder))
    turns = result["chat"]
    assert [t["user"] for t in turns] == list(example.SCRIPTED_CHAT)
    for turn in turns:
        assert turn["stream_equals_generate"]
        assert len(turn["new_ids"]) <= 3
        assert turn["assistant"] == tokenizer.decode(turn["new_ids"])
    assert result["samples"] == []  # --smoke answers the scripted chat only
