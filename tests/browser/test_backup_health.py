"""The dashboard marks, in a browser, a workload whose last offsite copy failed; the
workload's page says why. Rows are made directly: no capture, no S3."""

from __future__ import annotations

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from backups.models import BackupPolicy, BackupTarget, SnapshotCopy
from snapshots.models import Snapshot
from tests.browser.test_deploy_flow import log_in
from tests.workloads.test_views import CLOSED_SOCKET

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_dashboard_marks_a_workload_whose_last_copy_failed(page: Page, viewer,
                                                               make_workload, monkeypatch,
                                                               tmp_path):
    monkeypatch.setenv("DOCKER_HOST", CLOSED_SOCKET)  # the health needs no engine
    target = BackupTarget.objects.create(name="offsite", kind="s3", bucket="berth-browser",
                                         unencrypted=True)
    fine, broken = make_workload(name="Shop"), make_workload(name="Billing", slug="billing")
    for workload, state, code in ((fine, "verified", ""), (broken, "failed", "no_bucket")):
        BackupPolicy.objects.create(workload=workload, every="daily")
        snap = Snapshot.objects.create(workload=workload, kind="scheduled", state="ready")
        SnapshotCopy.objects.create(snapshot=snap, workload=workload, target=target,
                                    state=state, failure_code=code, finished=timezone.now())
    log_in(page, viewer.username, "correct horse battery")

    row = page.locator("tr", has=page.get_by_role("link", name="Billing"))
    mark = row.locator("td.backup").first
    expect(mark).to_have_attribute("data-health", "stale")
    expect(mark.locator(".badge.health-bad")).to_have_text("Stale")
    expect(row.locator("td.offsite .badge.copy-failed")).to_have_text("Failed")
    assert page.locator("tr", has=page.get_by_role("link", name="Shop")).locator(
        ".badge.health-bad").count() == 0
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    row.get_by_role("link", name="Billing").click()
    health = page.locator("#backup-health")
    expect(health).to_have_attribute("data-health", "stale")
    expect(health).to_contain_text("The last offsite copy failed")
    page.screenshot(path=str(tmp_path / "workload.png"), full_page=True)
