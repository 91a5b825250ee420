"""`kerasformers serve` for real: a subprocess on a free loopback port, driven
by httpx and by the official `openai` client. References are computed in the
test process with `generate` on the same directory (greedy, solo)."""

import json
import threading

import httpx
import pytest

from tests.serving.helpers import running, solo

PROMPTS = [
    "Hello, world",
    "你好，世界",
    "the cat sat on the mat and",
    "a",
    "numbers 3.14159 1,000,000",
    "emoji: 😀🎉",
    "code: def f(x):",
    "mixed 中文 English",
    "tabs\tand\nnewlines",
    "once upon a time there was",
    "Hello",
    "full-width: ＡＢＣ",
    "<|im_start|>user",
    "the quick brown fox jumps over the lazy dog",
    "z z z",
    "1 2 3 4 5 6 7 8 9 10 11 12",
]


@pytest.fixture(scope="module")
def server(generation_dir):
    with running(generation_dir, "--max-batch", "16", "--batch-window-ms", "50") as s:
        yield s


def complete(server, prompt, max_tokens, **extra):
    body = {"model": "tiny-qwen2", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    response = httpx.post(server.url + "/v1/completions", json=dict(body, **extra), timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def stream_events(server, path, body):
    events = []
    with httpx.stream("POST", server.url + path, json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[len("data: ") :])
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_greedy_completion_equals_generate(server, served_generation):
    for prompt in PROMPTS[:4]:
        expected, n = solo(served_generation, prompt, 20)
        got = complete(server, prompt, 20)
        assert got["object"] == "text_completion"
        assert got["choices"][0]["text"] == expected
        usage = got["usage"]
        assert usage["completion_tokens"] == n
        assert usage["prompt_tokens"] == len(served_generation.encode_prompt(prompt))
        assert usage["total_tokens"] == usage["prompt_tokens"] + n
        assert got["choices"][0]["finish_reason"] == ("length" if n == 20 else "stop")


def test_streamed_chunks_join_to_the_completion(server):
    for prompt in PROMPTS[4:7]:
        whole = complete(server, prompt, 24)["choices"][0]["text"]
        chunks = stream_events(
            server,
            "/v1/completions",
            {
                "model": "tiny-qwen2",
                "prompt": prompt,
                "max_tokens": 24,
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )
        texts = [c["choices"][0]["text"] for c in chunks if c["choices"]]
        assert len([t for t in texts if t]) > 2  # really streamed, not one blob
        assert "".join(texts) == whole
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
        finals = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
        assert finals[-1] in ("stop", "length") and set(finals[:-1]) == {None}


def test_stop_strings_cut_the_text(server, served_generation):
    full, _ = solo(served_generation, PROMPTS[9], 30)
    stop = full[6:9]
    cut = full[: full.index(stop)]
    got = complete(server, PROMPTS[9], 30, stop=[stop, "never-appears"])
    assert got["choices"][0]["text"] == cut
    assert got["choices"][0]["finish_reason"] == "stop"
    chunks = stream_events(
        server,
        "/v1/completions",
        {"model": "tiny-qwen2", "prompt": PROMPTS[9], "max_tokens": 30, "temperature": 0,
         "stop": stop, "stream": True},
    )  # fmt: skip
    assert "".join(c["choices"][0]["text"] for c in chunks) == cut


def test_chat_completion_uses_the_template(server, served_generation):
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "你好"},
    ]
    expected, n = solo(served_generation, messages, 16, chat=True)
    body = {"model": "tiny-qwen2", "messages": messages, "max_tokens": 16, "temperature": 0}
    got = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60).json()
    assert got["object"] == "chat.completion"
    assert got["choices"][0]["message"] == {"role": "assistant", "content": expected}
    assert got["usage"]["completion_tokens"] == n
    chunks = stream_events(server, "/v1/chat/completions", dict(body, stream=True))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == expected


def test_sixteen_concurrent_clients_get_their_solo_answers(server, served_generation):
    before = httpx.get(server.url + "/health").json()
    lengths = [8 + (3 * i) % 17 for i in range(len(PROMPTS))]
    expected = [solo(served_generation, p, n)[0] for p, n in zip(PROMPTS, lengths, strict=True)]
    results = [None] * len(PROMPTS)
    barrier = threading.Barrier(len(PROMPTS))

    def client(i):
        barrier.wait(30)
        results[i] = complete(server, PROMPTS[i], lengths[i])["choices"][0]["text"]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == expected
    after = httpx.get(server.url + "/health").json()
    # They were decoded together, not one by one.
    assert after["batches"] - before["batches"] < len(PROMPTS) // 2
    assert after["largest_batch"] >= 8


def test_seeded_sampling_repeats(server):
    body = {"temperature": 1.0, "top_p": 0.9, "seed": 11}
    first = complete(server, PROMPTS[0], 16, **body)["choices"][0]["text"]
    assert complete(server, PROMPTS[0], 16, **body)["choices"][0]["text"] == first
    others = {complete(server, PROMPTS[0], 16, **dict(body, seed=s))["choices"][0]["text"]
              for s in (1, 2, 3)}  # fmt: skip
    assert others - {first}, "different seeds gave the same sample every time"


def test_openai_client(server, served_generation):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["tiny-qwen2"]
    card = client.models.retrieve("tiny-qwen2")
    assert card.family == "qwen2" and card.context == 256 and card.chat_template is True
    expected, _ = solo(served_generation, PROMPTS[1], 12)
    got = client.completions.create(
        model="tiny-qwen2", prompt=PROMPTS[1], max_tokens=12, temperature=0
    )
    assert got.choices[0].text == expected
    messages = [{"role": "user", "content": "hi"}]
    expected_chat, _ = solo(served_generation, messages, 12, chat=True)
    chat = client.chat.completions.create(
        model="tiny-qwen2", messages=messages, max_tokens=12, temperature=0
    )
    assert chat.choices[0].message.content == expected_chat
    streamed = client.chat.completions.create(
        model="tiny-qwen2", messages=messages, max_tokens=12, temperature=0, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == (
        expected_chat
    )
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt="hi", max_tokens=2)
