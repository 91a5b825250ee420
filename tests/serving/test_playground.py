"""The playground page at `/`, in headless chromium against a real `kerasformers serve`.

The page talks to the server's own routes only; what it shows is checked against what a
direct (non-streamed) request returns for the same input. Screenshots go to
$KF_TEST_ARTIFACTS (else the test's tmp_path) to look at.
"""

import threading

import httpx
import pytest

from tests.browser import artifact_path, chromium_page, require_browser
from tests.serving.helpers import Server

PAGE_ERRORS = []  # uncaught exceptions in the page's script, since the last _open
WAIT_MS = 60_000  # the longest any one step of the page may take
# One shape for every greedy request: jax compiles generation per (prompt width, new tokens)
# bucket of 16, and a chat prompt here is 17 to 32 tokens wide.
GREEDY_TOKENS = 16

# Records each grown value of the assistant's text: the page appends every streamed piece to
# one Text node, so each mutation's oldValue is the text before that piece. Lengths survive
# even when several pieces land within one read and one observer callback.
RECORD_LENGTHS = """() => {
  window.kfLengths = [];
  new MutationObserver((records) => {
    for (const r of records) {
      if (r.type === "characterData") window.kfLengths.push(r.oldValue.length, r.target.length);
    }
  }).observe(document.getElementById("messages"),
             {subtree: true, characterData: true, characterDataOldValue: true});
}"""

# Clicks Stop as soon as the first piece of the reply shows.
STOP_AT_FIRST_PIECE = """() => {
  const observer = new MutationObserver(() => {
    observer.disconnect();
    document.getElementById("stop").click();
  });
  observer.observe(document.getElementById("messages"), {subtree: true, characterData: true});
}"""

# Clicks Clear as soon as the first piece of the reply shows.
CLEAR_AT_FIRST_PIECE = STOP_AT_FIRST_PIECE.replace('"stop"', '"clear"')

REPLY = "document.querySelector('#messages .message.assistant:last-child .content').textContent"


def _wait_state(page, state, replies=None):
    """Waits until the page settles (#status leaves loading / streaming / embedding, with
    `replies` replies on the page when given), then checks that it settled as `state`."""
    busy = "['loading', 'streaming', 'embedding']"
    condition = f"!{busy}.includes(document.getElementById('status').dataset.state)"
    if replies is not None:
        condition += f" && document.querySelectorAll('.message.assistant').length === {replies}"
    page.wait_for_function(condition, timeout=WAIT_MS)
    status = page.text_content("#status")
    shown = page.text_content("#error") if page.is_visible("#error") else ""
    assert page.get_attribute("#status", "data-state") == state, f"{status!r} {shown!r}"
    assert not PAGE_ERRORS, PAGE_ERRORS


def _model_id(server):
    return httpx.get(server.url + "/v1/models", timeout=10).json()["data"][0]["id"]


def _chat(server, messages, max_tokens):
    body = {
        "model": _model_id(server),
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    response = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def _similarity_text(value):
    """What the page prints: three decimals, no "-0.000"."""
    text = f"{value:.3f}"
    return "0.000" if text == "-0.000" else text


def _screenshot(page, tmp_path, name):
    path = artifact_path(tmp_path, name)
    page.screenshot(path=path, full_page=True)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", path


def _fits_narrow_window(page, tmp_path, name):
    """In a phone-wide window nothing sticks out sideways (the page scrolls down only)."""
    page.set_viewport_size({"width": 380, "height": 760})
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"the page is {overflow} px too wide for a narrow window"
    _screenshot(page, tmp_path, name)


def _open(page, server, kind):
    PAGE_ERRORS.clear()
    page.set_viewport_size({"width": 1280, "height": 720})
    page.goto(server.url + "/")
    _wait_state(page, "ready")
    assert page.text_content("#model-id") == _model_id(server)
    assert page.text_content("#model-kind") == kind


@pytest.fixture(scope="module")
def servers(request):
    """Both servers, started side by side (each spends most of its start compiling)."""
    require_browser()  # before the model folders are made and the servers start for nothing
    generation_dir = request.getfixturevalue("generation_dir")
    embedding_dir = request.getfixturevalue("embedding_dir")
    started, failed = {}, []

    def start(key, folder):
        try:
            started[key] = Server(folder)
        except Exception as err:  # re-raised below, once both are up or down
            failed.append(err)

    threads = [
        threading.Thread(target=start, args=("chat", generation_dir)),
        threading.Thread(target=start, args=("embedding", embedding_dir)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        if failed:
            raise failed[0]
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def browser_page(servers):
    """One headless chromium page for the module; each test navigates it afresh."""
    with chromium_page() as page:
        page.on("pageerror", lambda error: PAGE_ERRORS.append(str(error)))
        yield page


@pytest.fixture(scope="module")
def chat_server(servers):
    return servers["chat"]


@pytest.fixture(scope="module")
def embedding_server(servers):
    return servers["embedding"]


def test_chat_streams_the_reply_a_direct_request_gives(browser_page, chat_server, tmp_path):
    page, first = browser_page, "Hello <b>there</b> & welcome"  # markup in a message stays text
    _open(page, chat_server, "generation")
    assert page.text_content("#model-family") == "qwen2"
    assert page.is_hidden("#embeddings")
    page.fill("#max-tokens", str(GREEDY_TOKENS))
    page.fill("#temperature", "0")
    page.evaluate(RECORD_LENGTHS)
    page.fill("#prompt", first)
    page.click("#send")
    _wait_state(page, "done", replies=1)
    reply = page.evaluate(REPLY)
    lengths = {n for n in page.evaluate("window.kfLengths") if n}
    assert len(lengths) >= 3, f"the reply did not grow piece by piece: lengths {lengths}"
    assert max(lengths) == len(reply)
    assert reply == _chat(chat_server, [{"role": "user", "content": first}], GREEDY_TOKENS)
    assert page.text_content("#messages .message.user .content") == first
    assert page.locator("#messages b").count() == 0
    assert page.text_content("#status").startswith(f"done · {GREEDY_TOKENS} tokens")
    assert page.input_value("#prompt") == ""

    # Shift+Enter is a new line, Enter sends; the whole conversation goes with it.
    page.fill("#prompt", "and")
    page.press("#prompt", "Shift+Enter")
    page.type("#prompt", "then?")
    page.press("#prompt", "Enter")
    _wait_state(page, "done", replies=2)
    second = page.text_content("#messages .message.user:nth-last-child(2) .content")
    assert second == "and\nthen?"
    conversation = [
        {"role": "user", "content": first},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": second},
    ]
    assert page.evaluate(REPLY) == _chat(chat_server, conversation, GREEDY_TOKENS)
    assert page.is_hidden("#error")
    _screenshot(page, tmp_path, "playground-chat.png")
    _fits_narrow_window(page, tmp_path, "playground-chat-narrow.png")


def test_stop_clear_and_a_refused_request(browser_page, chat_server):
    page, message = browser_page, "Tell me a story"
    _open(page, chat_server, "generation")
    page.fill("#max-tokens", str(GREEDY_TOKENS))
    page.fill("#temperature", "0")
    page.evaluate(STOP_AT_FIRST_PIECE)
    page.fill("#prompt", message)
    page.click("#send")
    _wait_state(page, "stopped", replies=1)
    partial = page.evaluate(REPLY)
    assert page.text_content("#status").startswith("stopped after 1 token")
    assert page.is_enabled("#send") and page.is_disabled("#stop")
    full = _chat(chat_server, [{"role": "user", "content": message}], GREEDY_TOKENS)
    assert partial and full.startswith(partial) and len(partial) < len(full), (partial, full)

    # Clear in mid-stream empties the conversation for good.
    page.evaluate(CLEAR_AT_FIRST_PIECE)
    page.fill("#prompt", message)
    page.click("#send")
    page.wait_for_selector("#send:enabled", timeout=WAIT_MS)
    _wait_state(page, "ready", replies=0)
    assert page.locator("#messages .message").count() == 0

    # A request the server refuses: its message shows, and the turn is taken back, ready
    # to be sent again.
    page.fill("#max-tokens", "100000")
    page.fill("#prompt", "hi")
    page.click("#send")
    _wait_state(page, "error")
    error = page.text_content("#error")
    assert page.is_visible("#error")
    assert error.startswith("400: ") and "max_tokens" in error, error
    assert page.locator("#messages .message").count() == 0
    assert page.input_value("#prompt") == "hi"


def test_similarity_table_matches_direct_embeddings(browser_page, embedding_server, tmp_path):
    page = browser_page
    texts = ["the cat sat on the mat", "a cat sat on a mat", "stock prices fell", "café au lait"]
    _open(page, embedding_server, "embedding")
    assert page.is_hidden("#chat")
    assert page.locator("#texts .embed-text").count() == 3
    page.click("#add-text")
    for i, text in enumerate(texts):
        page.fill(f"#text-{i + 1}", text)
    page.click("#embed")
    _wait_state(page, "done")
    page.wait_for_selector("#similarity", state="visible", timeout=WAIT_MS)
    cells = page.evaluate(
        "Array.from(document.querySelectorAll('#similarity tbody tr'))"
        ".map((row) => Array.from(row.querySelectorAll('td')).map((td) => td.textContent))"
    )
    _screenshot(page, tmp_path, "playground-embeddings.png")
    _fits_narrow_window(page, tmp_path, "playground-embeddings-narrow.png")

    body = {"model": _model_id(embedding_server), "input": texts}
    response = httpx.post(embedding_server.url + "/v1/embeddings", json=body, timeout=60)
    assert response.status_code == 200, response.text
    vectors = [d["embedding"] for d in sorted(response.json()["data"], key=lambda d: d["index"])]
    expected = [
        [_similarity_text(sum(x * y for x, y in zip(a, b, strict=True))) for b in vectors]
        for a in vectors
    ]
    assert [row[i] for i, row in enumerate(cells)] == ["1.000"] * len(texts)
    assert cells == expected


# Byte-level SSE: a comment, a UTF-8 payload, a two-line event, CR and CRLF line ends, and a
# last event with no blank line after it.
SSE_BODY = (
    ': keep-alive\n\ndata: {"x": "é中"}\n\ndata: line1\ndata: line2\r\n\r\n'
    "data:nospace\r\rdata: [DONE]\n\ndata: tail"
).encode()
SSE_EVENTS = ['{"x": "é中"}', "line1\nline2", "nospace", "[DONE]", "tail"]
PARSE_READS = """async (reads) => {
  const body = new ReadableStream({
    start(controller) {
      for (const bytes of reads) controller.enqueue(new Uint8Array(bytes));
      controller.close();
    },
  });
  const events = [];
  for await (const data of sseData(body)) events.push(data);
  return events;
}"""


def test_the_event_parser_joins_events_split_across_reads(browser_page, chat_server):
    page = browser_page
    _open(page, chat_server, "generation")
    for size in (1, 2, 3, 5, 8, 13, len(SSE_BODY)):  # splits inside lines, CRLFs and characters
        reads = [list(SSE_BODY[i : i + size]) for i in range(0, len(SSE_BODY), size)]
        assert page.evaluate(PARSE_READS, reads) == SSE_EVENTS, f"reads of {size} bytes"


def test_the_page_loads_nothing_from_elsewhere(browser_page, chat_server, embedding_server):
    page, requests = browser_page, []
    # With chromium's cache off, every file the page uses is a request seen here.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})

    def record(request):
        requests.append(request.url)

    page.on("request", record)
    try:
        _open(page, chat_server, "generation")
        page.fill("#max-tokens", str(GREEDY_TOKENS))
        page.fill("#temperature", "0")
        page.fill("#prompt", "hi")
        page.click("#send")
        _wait_state(page, "done", replies=1)
        _open(page, embedding_server, "embedding")
        page.click("#embed")
        _wait_state(page, "done")
    finally:
        page.remove_listener("request", record)
        cdp.send("Network.setCacheDisabled", {"cacheDisabled": False})
        cdp.detach()
    page_files = {"/", "/static/playground.js", "/static/playground.css", "/v1/models"}
    for server, route in (
        (chat_server, "/v1/chat/completions"),
        (embedding_server, "/v1/embeddings"),
    ):
        paths = {url[len(server.url) :] for url in requests if url.startswith(server.url + "/")}
        assert page_files | {route} <= paths, paths
    servers = (chat_server.url + "/", embedding_server.url + "/")
    elsewhere = [url for url in requests if not url.startswith(servers)]
    assert not elsewhere, elsewhere
