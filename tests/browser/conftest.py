"""A real browser: Playwright's sync API driving Debian's Chromium against live_server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox: the tests run as root. The rest keeps Chromium off the network
# at start-up (there is none to reach on these machines).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ACTION_TIMEOUT_MS = 5_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Chromium for this module's tests, or a loud skip (a failure under CI) without it."""
    if not CHROMIUM.exists():
        reason = f"no Chromium at {CHROMIUM} (run `make host` as root)"
        if os.environ.get("BERTH_REQUIRE_DOCKER") == "1":
            pytest.fail(f"BERTH_REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(f"SKIPPED FOR LACK OF A BROWSER: {reason}")
    with pytest.MonkeyPatch.context() as patch:
        # Playwright's sync API keeps an asyncio event loop running in this
        # thread, and Django's async-unsafe check then refuses every ORM call
        # the test and its fixtures make (SynchronousOnlyOperation). The test
        # code is plain synchronous code that never touches the connection
        # from a coroutine, so the check is a false alarm here; it is lifted
        # only while this module's browser is open.
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
            )
            yield chromium
            chromium.close()


@pytest.fixture
def page(browser: Browser, live_server) -> Iterator[Page]:
    """A fresh browser context (no cookies) whose relative URLs go to live_server."""
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()
