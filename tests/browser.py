"""Headless Debian chromium driven by playwright, for tests of web pages.

The browser is Debian's `/usr/bin/chromium` (`make` installs it when run as root);
playwright only drives it and never downloads a browser of its own (`playwright
install` needs a network these machines do not have). A test calls `require_browser()`
first, which skips it with the precise reason when the browser cannot run here, then
opens pages with `chromium_page()`:

    def test_page(tmp_path):
        require_browser()
        with chromium_page() as page:
            page.goto(url)
            page.screenshot(path=artifact_path(tmp_path, "page.png"))
"""

import contextlib
import os
import tempfile

import pytest

CHROMIUM = "/usr/bin/chromium"
# Headless, no sandbox (tests run as root in containers), and nothing that reaches out to
# Google's servers on its own: no network but the page under test.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAUNCH_TIMEOUT_MS = 30_000
# Every page action and navigation waits at most this long.
PAGE_TIMEOUT_MS = 30_000

_probe = None  # None: not tried yet; "" chromium started; otherwise why it did not


@contextlib.contextmanager
def chromium_page(timeout_ms=PAGE_TIMEOUT_MS):
    """Yields a playwright (sync API) page in a fresh headless chromium.

    Each call starts its own browser with a new temporary profile, removed afterwards.

    Args:
        timeout_ms: the default timeout of the page's actions and navigations.
    """
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="kf-chromium-", ignore_cleanup_errors=True) as profile:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
                timeout=LAUNCH_TIMEOUT_MS,
            )
            try:
                context.set_default_timeout(timeout_ms)
                context.set_default_navigation_timeout(timeout_ms)
                page = context.pages[0] if context.pages else context.new_page()
                yield page
            finally:
                context.close()


def require_browser():
    """Skips the calling test unless headless chromium starts here (tried once a process)."""
    global _probe
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(
            f"no Debian chromium at {CHROMIUM} (make installs it as root: "
            "apt-get install --no-install-recommends chromium)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:
        pytest.skip(f"the playwright package is missing (the test extra): {e}")
    if _probe is None:
        try:
            with chromium_page() as page:
                page.set_content("<p>ok</p>")
            _probe = ""
        except Exception as e:
            _probe = f"chromium failed to start: {_first_lines(e)}"
    if _probe:
        pytest.skip(_probe)


def _first_lines(error):
    """The error's first line, and the browser's first line on stderr when playwright logged
    one (its own first line is often just "Target ... has been closed")."""
    lines = str(error).strip().splitlines() or [""]
    reason = f"{type(error).__name__}: {lines[0]}"
    stderr = [line.split("][err] ", 1)[1] for line in lines if "][err] " in line]
    return f"{reason} (chromium said: {stderr[0].strip()})" if stderr else reason


def artifact_path(tmp_path, name):
    """Where a test keeps a file to look at afterwards (a screenshot): `$KF_TEST_ARTIFACTS`
    when set, else the test's `tmp_path`."""
    folder = os.environ.get("KF_TEST_ARTIFACTS") or str(tmp_path)
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, name)
