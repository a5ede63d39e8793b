"""An operator stops and starts a workload from its page, in a browser (confirming both)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from engine import deploys
from tests.browser.test_deploy_flow import log_in
from tests.workloads.test_operations import engine_states
from workloads.models import DeployRecord

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_stops_and_starts_a_workload(page: Page, docker, current_tag, operator, workload,
                                        tmp_path):
    deployed = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    assert deployed.outcome == DeployRecord.Outcome.SUCCEEDED, deployed.failure_code
    log_in(page, operator.username, "correct horse battery")
    page.goto(f"/workloads/{workload.pk}/")
    page.on("dialog", lambda dialog: dialog.accept())  # the confirmation

    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#state-panel")).to_contain_text("Stopped by an operator")
    page.screenshot(path=str(tmp_path / "stopped.png"), full_page=True)
    assert {state for _name, state in engine_states(workload)} == {"exited"}

    page.get_by_role("button", name="Start").click()
    expect(page.get_by_role("button", name="Stop")).to_be_visible()  # running again
    expect(page.locator("#state-panel")).not_to_contain_text("Stopped by an operator")
    assert {state for _name, state in engine_states(workload)} == {"running"}
