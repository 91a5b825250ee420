"""Bad requests get 4xx JSON errors naming the field, and the server keeps
answering; a client that disconnects mid-stream frees its row; SIGTERM
drains the requests in flight and exits 0."""

import json
import signal
import threading
import time

import httpx
import pytest

from tests.serving.helpers import Server, running, solo

MODEL = "tiny-qwen2"
COMPLETION = {"model": MODEL, "prompt": "Hello", "max_tokens": 4, "temperature": 0}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def server(generation_dir):
    with running(generation_dir, "--max-tokens", "200", "--max-body-bytes", "65536") as s:
        yield s


def _with(body, **changes):
    out = dict(body)
    for key, value in changes.items():
        if value is _DROP:
            out.pop(key)
        else:
            out[key] = value
    return out


_DROP = object()
LONG_PROMPT = " ".join(["hello world"] * 120)  # > the tiny model's 256 positions

# (route, body, expected status, expected param)
BAD = [
    ("/v1/completions", _with(COMPLETION, max_tokens="12"), 400, "max_tokens"),
    ("/v1/completions", _with(COMPLETION, max_tokens=0), 400, "max_tokens"),
    ("/v1/completions", _with(COMPLETION, max_tokens=10**6), 400, "max_tokens"),
    ("/v1/completions", _with(COMPLETION, max_tokens=199, prompt="x " * 100), 400, "max_tokens"),
    ("/v1/completions", _with(COMPLETION, prompt=LONG_PROMPT), 400, "prompt"),
    ("/v1/completions", _with(COMPLETION, temperature="hot"), 400, "temperature"),
    ("/v1/completions", _with(COMPLETION, temperature=5), 400, "temperature"),
    ("/v1/completions", _with(COMPLETION, top_p=0), 400, "top_p"),
    ("/v1/completions", _with(COMPLETION, top_k=-1), 400, "top_k"),
    ("/v1/completions", _with(COMPLETION, seed=-1), 400, "seed"),
    ("/v1/completions", _with(COMPLETION, stop=5), 400, "stop"),
    ("/v1/completions", _with(COMPLETION, stream="yes"), 400, "stream"),
    ("/v1/completions", _with(COMPLETION, n=2), 400, "n"),
    ("/v1/completions", _with(COMPLETION, echo=True), 400, "echo"),
    ("/v1/completions", _with(COMPLETION, logprobs=3), 400, "logprobs"),
    ("/v1/completions", _with(COMPLETION, presence_penalty=0.5), 400, "presence_penalty"),
    ("/v1/completions", _with(COMPLETION, prompt=_DROP), 400, "prompt"),
    ("/v1/completions", _with(COMPLETION, prompt=""), 400, "prompt"),
    ("/v1/completions", _with(COMPLETION, prompt=[]), 400, "prompt"),
    ("/v1/completions", _with(COMPLETION, prompt=[1, 2]), 400, "prompt"),
    ("/v1/completions", _with(COMPLETION, model="gpt-4"), 404, "model"),
    ("/v1/completions", _with(COMPLETION, model=_DROP), 400, "model"),
    ("/v1/chat/completions", _with(CHAT, messages=[]), 400, "messages"),
    ("/v1/chat/completions", _with(CHAT, messages=_DROP), 400, "messages"),
    ("/v1/chat/completions", _with(CHAT, messages="hi"), 400, "messages"),
    (
        "/v1/chat/completions",
        _with(CHAT, messages=[{"role": "wizard", "content": "x"}]),
        400,
        "messages.0.role",
    ),  # fmt: skip
    ("/v1/chat/completions", _with(CHAT, messages=[{"content": "x"}]), 400, "messages.0.role"),
    (
        "/v1/chat/completions",
        _with(CHAT, max_completion_tokens=10**6),
        400,
        "max_completion_tokens",
    ),  # fmt: skip
    ("/v1/chat/completions", _with(CHAT, tools=[{"type": "function"}]), 400, "tools"),
    ("/v1/embeddings", {"model": MODEL, "input": "hi"}, 400, "model"),
]


def _check_error(response, status, param):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["param"] == param, error
    assert isinstance(error["message"], str) and error["message"]
    return error


def _still_answers(server):
    response = httpx.post(server.url + "/v1/completions", json=COMPLETION, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] >= 1


def test_bad_requests_are_4xx_json_naming_the_field(server):
    for route, body, status, param in BAD:
        response = httpx.post(server.url + route, json=body, timeout=30)
        error = _check_error(response, status, param)
        assert param.split(".")[0] in error["message"] or status == 404, (route, body, error)
    _still_answers(server)


def test_malformed_bodies(server):
    post = lambda content, **kw: httpx.post(  # noqa: E731
        server.url + "/v1/completions",
        content=content,
        headers={"content-type": "application/json", **kw},
        timeout=30,
    )
    error = _check_error(post(b'{"model": "tiny-qwen2", "prompt": '), 400, None)
    assert "JSON" in error["message"]
    _check_error(post(b"[1, 2, 3]"), 400, None)
    _check_error(post(b"\xff\xfe not utf-8"), 400, None)
    # Over --max-body-bytes: declared, and streamed without a length.
    big = json.dumps(dict(COMPLETION, prompt="x" * 70000)).encode()
    _check_error(post(big), 413, None)
    chunks = (big[i : i + 8192] for i in range(0, len(big), 8192))
    response = httpx.post(
        server.url + "/v1/completions",
        content=chunks,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    _check_error(response, 413, None)
    # Unknown routes and methods.
    _check_error(httpx.get(server.url + "/v1/nothing", timeout=30), 404, None)
    _check_error(httpx.get(server.url + "/v1/completions", timeout=30), 405, None)
    _still_answers(server)


def test_disconnect_mid_stream_frees_the_row(server):
    before = httpx.get(server.url + "/health").json()
    body = dict(COMPLETION, max_tokens=190, stream=True)
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        got = [line for line, _ in zip(lines, range(6), strict=False) if line.startswith("data")]
        assert got  # it was streaming
    # The row leaves the batch: the worker counts it as cancelled and goes idle
    # long before 190 tokens would have been decoded.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = httpx.get(server.url + "/health").json()
        if status["running"] == 0 and status["cancelled"] > before["cancelled"]:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the disconnected row still runs: {status}")
    assert status["completed"] == before["completed"]
    _still_answers(server)


def test_sigterm_drains_in_flight_requests(generation_dir, served_generation):
    server = Server(generation_dir, "--max-tokens", "200")
    result = {}

    def client():
        body = dict(COMPLETION, max_tokens=150)
        result["response"] = httpx.post(server.url + "/v1/completions", json=body, timeout=120)

    thread = threading.Thread(target=client)
    thread.start()
    deadline = time.monotonic() + 30
    while httpx.get(server.url + "/health").json()["running"] == 0:
        assert time.monotonic() < deadline, "the request never started"
        time.sleep(0.01)
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(60)  # one signal: a second one forces the exit
    server.stop()
    thread.join(60)
    assert code == 0
    response = result["response"]
    assert response.status_code == 200, response.text
    text, n = solo(served_generation, COMPLETION["prompt"], 150)
    assert response.json()["choices"][0]["text"] == text
    assert response.json()["usage"]["completion_tokens"] == n > 20
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/health", timeout=5)
