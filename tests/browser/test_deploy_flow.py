"""An operator logs in, finds a workload and deploys it from its page, in a real browser."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# A deploy pulls the image and swaps containers on the real engine: seconds, not milliseconds.
DEPLOY_TIMEOUT_MS = 60_000


def log_in(page: Page, username: str, password: str) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_it_deploys_a_workload_from_its_page(page: Page, docker, current_tag, operator, workload):
    log_in(page, operator.username, "correct horse battery")

    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_role("heading", name="Workloads")).to_be_visible()
    page.get_by_role("link", name=workload.name).click()

    expect(page).to_have_url(re.compile(rf"/workloads/{workload.pk}/$"))
    assert page.evaluate("() => typeof window.htmx") == "object", "htmx did not load"
    badge = page.locator("#state-panel [data-state]")
    expect(badge).to_have_attribute("data-state", "new")
    expect(page.locator("#state-panel tbody tr")).to_have_count(0)
    expect(page.locator("#events")).to_contain_text("No events yet.")

    page.get_by_role("button", name="Deploy").click()

    expect(badge).to_have_attribute("data-state", "running", timeout=DEPLOY_TIMEOUT_MS)
    expect(badge).to_have_text("Running")
    rows = page.locator("#state-panel tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(workload.container_name(1))
    expect(page.get_by_role("button", name="Deploy")).to_be_enabled()
    workload.refresh_from_db()
    expect(page.locator("#state-panel code.digest")).to_have_text(workload.running_reference)
    # The events list came along out of band: the deploy's own event shows without a reload.
    expect(page.locator("#events li")).to_have_count(1)
    expect(page.locator("#events li").first).to_contain_text(
        f"Deployed {workload.running_reference}"
    )
