"""An operator reads a workload's logs on its page, in a browser: the lines appear, a search
narrows them, and "Follow" appends the new ones as the container prints them."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_deploy_flow import log_in
from tests.fixtures import chatty

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
chatty_image, printing = chatty.chatty_image, chatty.printing

FOLLOW_TIMEOUT_MS = 15_000  # a few 2-second polls, generously


def test_the_logs_panel_shows_searches_and_follows(page: Page, operator, printing, tmp_path):
    workload = printing('echo "hello there"; echo "ERROR: disk full"; sleep 1; '
                        'i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.5; done')
    log_in(page, operator.username, "correct horse battery")
    page.goto(f"/workloads/{workload.pk}/")

    lines = page.locator("#log-lines .log-line")
    expect(lines.first).to_contain_text("hello there")
    expect(page.locator("#log-lines")).to_contain_text("ERROR: disk full")

    page.get_by_label("Search").fill("error")
    page.get_by_role("button", name="Show").click()
    expect(lines).to_have_count(1)
    expect(lines.first).to_contain_text("ERROR: disk full")

    page.get_by_label("Search").fill("tick")
    page.get_by_label("Follow").check()  # a change of the form: the lines again, and a poll
    expect(page.locator("#log-poller")).to_have_count(1)
    shown = lines.count()
    assert shown >= 1
    expect(lines.nth(shown + 1)).to_be_attached(timeout=FOLLOW_TIMEOUT_MS)  # appended
    texts = lines.locator("code").all_inner_texts()
    ticks = [int(text.split()[1]) for text in texts]
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))  # in order, none twice
    page.screenshot(path=str(tmp_path / "logs.png"), full_page=True)

    page.get_by_label("Follow").uncheck()
    expect(page.locator("#log-poller")).to_have_count(0)
