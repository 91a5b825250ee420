"""WebServing: bert4keras' function-over-HTTP helper, served for real by uvicorn on loopback."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

from kerasformers.snippets import WebServing, webserving


def echo(text, n=1):
    return [text, n]


def add(a, b):
    return a + b


def boom():
    raise ValueError("boom 爆")


@pytest.fixture(scope="module")
def client():
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    web = WebServing(port=0)  # the default host; the OS picks a free port
    web.route("/echo", echo, {"text": (None, True), "n": (int, False)})
    web.route("/add", add, {"a": (float, True), "b": (float, True)}, method="POST")
    web.route("/boom", boom, {})
    web.route("/array", lambda: np.arange(3, dtype="float32") / 2, {})
    web.route("/chars", lambda s: s, {"s": (list, True)})
    handle = web.start(block=False, timeout=20)
    try:
        # trust_env=False: a proxy from the environment must not see loopback requests.
        with httpx.Client(base_url=handle.url, timeout=10, trust_env=False) as http:
            http.handle = handle
            yield http
    finally:
        handle.stop()


def test_binds_loopback_by_default(client):
    assert WebServing().host == "127.0.0.1"
    assert client.handle.host == "127.0.0.1"
    assert client.handle.port > 0


def test_get_converts_the_declared_types(client):
    response = client.get("/echo", params={"text": "你好", "n": "2"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert "你好" in response.text  # non-ASCII unescaped, as bert4keras' ensure_ascii=False
    assert response.json() == {"code": 0, "desc": "succeeded", "data": ["你好", 2]}
    # An optional argument left out is not passed: the function's default applies.
    assert client.get("/echo", params={"text": "a"}).json()["data"] == ["a", 1]
    # The type is called on the string, as in bert4keras: list gives its characters.
    assert client.get("/chars", params={"s": "abc"}).json()["data"] == ["a", "b", "c"]


def test_missing_and_invalid_arguments_answer_code_1(client):
    response = client.get("/echo", params={"n": "2"})
    assert response.status_code == 200
    assert response.json() == {"code": 1, "desc": 'lack of "text" argument', "data": {}}
    bad = client.get("/echo", params={"text": "a", "n": "x"})
    assert bad.status_code == 200
    assert bad.json()["code"] == 1
    assert bad.json()["desc"].startswith('invalid "n" argument: ')
    assert bad.json()["data"] == {}


def test_post_reads_the_body(client):
    form = client.post("/add", data={"a": "1.5", "b": "2"})
    assert form.json() == {"code": 0, "desc": "succeeded", "data": 3.5}
    assert client.post("/add", json={"a": 1, "b": 2}).json()["data"] == 3.0
    # Like bottle's request.POST, a POST route never reads the query string.
    query = client.post("/add", params={"a": "1", "b": "2"})
    assert query.json() == {"code": 1, "desc": 'lack of "a" argument', "data": {}}
    json_type = {"content-type": "application/json"}
    not_an_object = client.post("/add", content=b"[1]", headers=json_type)
    assert not_an_object.json()["code"] == 1
    assert client.get("/add").status_code == 405


def test_a_raising_function_answers_code_2(client):
    response = client.get("/boom")
    assert response.status_code == 200
    assert response.json() == {"code": 2, "desc": "boom 爆", "data": {}}


def test_array_results_are_sent_as_lists(client):
    assert client.get("/array").json()["data"] == [0.0, 0.5, 1.0]


def test_other_bottle_servers_warn_once(monkeypatch):
    pytest.importorskip("fastapi")
    monkeypatch.setattr(webserving, "_WARNED_SERVERS", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        WebServing(server="paste")
        WebServing(server="uvicorn")
    with pytest.warns(UserWarning, match="uvicorn"):
        WebServing(server="wsgiref")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        WebServing(server="wsgiref")


def test_missing_serve_extra_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(ImportError, match=r"pip install \"kerasformers\[serve\]\""):
        WebServing()


def test_snippets_import_without_the_serve_extra():
    code = (
        "import sys\n"
        "sys.modules['fastapi'] = sys.modules['uvicorn'] = None\n"
        "import kerasformers.snippets\n"
        "print(kerasformers.snippets.WebServing.__name__)"
    )
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "WebServing"


def test_blocking_start_serves_until_interrupted():
    """bert4keras' usage, verbatim but for the import, in a process of its own."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("uvicorn")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = textwrap.dedent(f"""
        from kerasformers.snippets import WebServing, webserving
        web = WebServing(port={port})
        web.route("/hello", lambda name: "hello " + name, {{"name": (None, True)}})
        web.start()
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        url, answer = f"http://127.0.0.1:{port}/hello", None
        deadline = time.monotonic() + 20
        for _ in range(400):  # bounded twice: by count and by the 20 s deadline
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            try:
                answer = httpx.get(url, params={"name": "kf"}, timeout=2, trust_env=False)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert answer is not None, "the server never answered"
        assert answer.json() == {"code": 0, "desc": "succeeded", "data": "hello kf"}
        proc.send_signal(signal.SIGINT)  # Ctrl-C: uvicorn shuts down and start() returns
        output = proc.communicate(timeout=15)[0].decode()
        assert proc.returncode == 0, output
        assert f"Uvicorn running on http://127.0.0.1:{port}" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
