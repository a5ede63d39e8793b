"""A container stopped behind Berth's back: the workload page and the dashboard show it
without a reload (the follower in a thread, the pages polling the live state)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_deploy_flow import log_in
from tests.workloads.test_live import deployed, docker_cli, start_follower

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The pages poll every 3 s; the follower applies the event within a second.
SHOWN_WITHIN_MS = 8_000


def test_a_docker_stop_shows_on_the_workload_page_and_the_dashboard(
    page: Page, docker, viewer, make_workload, tmp_path
):
    workload = deployed(make_workload)
    follower = start_follower()
    try:
        log_in(page, viewer.username, "correct horse battery")
        page.goto(f"/workloads/{workload.pk}/")
        badge = page.locator(f"#state-badge-{workload.pk}")
        expect(badge).to_have_attribute("data-state", "running")

        docker_cli("stop", "-t", "1", workload.container_name(1))

        expect(badge).to_have_attribute("data-state", "exited", timeout=SHOWN_WITHIN_MS)
        expect(badge).to_contain_text("exit code 137")
        row = page.locator(f'#live-state [data-container="{workload.container_name(1)}"]')
        expect(row).to_have_attribute("data-engine-state", "exited")
        expect(page.locator("#events")).to_contain_text(
            f"Container {workload.container_name(1)} exited with code 137.")
        page.screenshot(path=str(tmp_path / "exited.png"), full_page=True)

        page.goto("/")
        dashboard_badge = page.locator(f"#state-badge-{workload.pk}")
        expect(dashboard_badge).to_have_attribute("data-state", "exited")
        docker_cli("start", workload.container_name(1))
        expect(dashboard_badge).to_have_attribute("data-state", "running",
                                                  timeout=SHOWN_WITHIN_MS)
    finally:
        follower.stop()
