"""An operator rolls a workload back from its deploy history, in a real browser."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from engine import deploys
from tests.browser.test_deploy_flow import DEPLOY_TIMEOUT_MS, log_in
from tests.conftest import move_current_tag
from workloads.models import DeployRecord, EnvVar

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_rolls_back_from_the_history_panel(page: Page, docker, current_tag, operator, workload):
    first = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    move_current_tag("v2")
    second = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    log_in(page, operator.username, "correct horse battery")
    page.goto(f"/workloads/{workload.pk}/")

    history = page.locator("#deploy-history")
    rows = history.locator("tbody tr")
    expect(rows).to_have_count(2)
    # The running deploy has no Rollback button; the earlier one has.
    expect(history.locator(f"tr[data-deploy='{second.pk}'] button")).to_have_count(0)
    history.locator(f"tr[data-deploy='{first.pk}']").get_by_role("button", name="Roll back").click()

    dialog = page.locator(f"#rollback-dialog-{first.pk}")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(f"Roll back to deploy #{first.pk}?")
    expect(dialog).to_contain_text(first.pinned_reference)
    dialog.get_by_role("button", name="Roll back").click()

    expect(rows).to_have_count(3, timeout=DEPLOY_TIMEOUT_MS)
    newest = rows.first
    expect(newest).to_have_attribute("data-reason", "rollback")
    expect(newest).to_have_attribute("data-outcome", "succeeded", timeout=DEPLOY_TIMEOUT_MS)
    expect(newest).to_contain_text(f"to #{first.pk}")
    expect(page.locator("#state-panel code.digest")).to_have_text(first.pinned_reference)


def test_the_dialog_shows_what_changes_and_rolls_back_the_code_only(
        page: Page, docker, current_tag, operator, workload):
    EnvVar.objects.create(workload=workload, name="MODE", value="one")
    first = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    EnvVar.objects.filter(workload=workload, name="MODE").update(value="two")
    secret = EnvVar(workload=workload, name="TOKEN")
    secret.set_value("browser-secret-61d0", secret=True)
    secret.save()
    deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    log_in(page, operator.username, "correct horse battery")
    page.goto(f"/workloads/{workload.pk}/")

    history = page.locator("#deploy-history")
    history.locator(f"tr[data-deploy='{first.pk}']").get_by_role("button", name="Roll back").click()

    dialog = page.locator(f"#rollback-dialog-{first.pk}")
    diff = dialog.locator("table.rollback-diff")
    expect(diff.locator("tr[data-name='MODE'][data-change='changed']")).to_contain_text("one")
    expect(diff.locator("tr[data-name='TOKEN'][data-change='removed']")).to_be_visible()
    expect(dialog).not_to_contain_text("browser-secret-61d0")
    expect(dialog.get_by_label("Code and configuration")).to_be_checked()
    dialog.get_by_label("Code only", exact=False).check()
    dialog.get_by_role("button", name="Roll back").click()

    newest = history.locator("tbody tr").first
    expect(newest).to_have_attribute("data-reason", "rollback", timeout=DEPLOY_TIMEOUT_MS)
    expect(newest).to_have_attribute("data-outcome", "succeeded", timeout=DEPLOY_TIMEOUT_MS)
    expect(newest.locator("small.restored")).to_have_attribute("data-restored", "code")
    assert EnvVar.objects.get(workload=workload, name="MODE").value == "two"
