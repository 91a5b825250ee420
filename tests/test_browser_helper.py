"""tests/browser.py: headless chromium opens a local page, runs its JS, takes a screenshot."""

import contextlib
import functools
import http.server
import threading

import pytest

from tests import browser
from tests.browser import artifact_path, chromium_page, require_browser

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>kf browser check</title></head>
<body>
  <p id="status">waiting</p>
  <button id="go" onclick="document.getElementById('status').textContent = 'clicked ' + (6 * 7)">
    go
  </button>
</body></html>
"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def static_server(directory):
    """Serves `directory` on 127.0.0.1 (a free port) from a thread; yields its URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_clicking_a_button_runs_the_page_script(tmp_path):
    require_browser()
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(PAGE, encoding="utf-8")
    with static_server(site) as url, chromium_page() as page:
        page.goto(f"{url}/index.html")
        assert page.title() == "kf browser check"
        assert page.text_content("#status") == "waiting"
        page.click("#go")
        page.wait_for_function(
            "document.getElementById('status').textContent !== 'waiting'", timeout=10_000
        )
        assert page.text_content("#status") == "clicked 42"
        shot = artifact_path(tmp_path, "browser_helper.png")
        page.screenshot(path=shot)
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_require_browser_skips_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(browser, "CHROMIUM", str(tmp_path / "no-chromium"))
    with pytest.raises(pytest.skip.Exception, match="no Debian chromium at .*no-chromium"):
        require_browser()
    pytest.importorskip("playwright.sync_api")
    broken = tmp_path / "broken-chromium"
    broken.write_text("#!/bin/sh\necho 'cannot start' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setattr(browser, "CHROMIUM", str(broken))
    monkeypatch.setattr(browser, "_probe", None)
    with pytest.raises(pytest.skip.Exception, match="chromium failed to start: ") as skipped:
        require_browser()
    assert "(chromium said: cannot start)" in str(skipped.value)
    assert "\n" not in str(skipped.value)
