"""An operator adds a backup target, checks it, and copies a snapshot to it, in a browser.

Real parts: moto's S3 server receives the probe and the copy; the copy is
verified by reading it back before the page says so. The S3 and age key
fixtures are tests/backups' own, imported by name.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from playwright.sync_api import Page, expect

from backups.models import BackupTarget, SnapshotCopy
from tests.backups.conftest import (  # noqa: F401
    S3_ENDPOINT,
    S3_KEY_ID,
    S3_SECRET,
    bucket,
    identity,
    objects,
    recipient,
    s3_server,
)
from tests.backups.test_copy_panel import small_snapshot
from tests.browser.test_deploy_flow import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SCREENSHOTS = os.environ.get("BERTH_SCREENSHOTS")  # a directory to keep the pages' pictures in


def shot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        page.screenshot(path=Path(SCREENSHOTS) / f"{name}.png", full_page=True)


@pytest.fixture
def backup_operator(operator):
    operator.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="backups",
        codename__in=["view_backuptarget", "add_backuptarget", "change_backuptarget",
                      "view_snapshotcopy", "add_snapshotcopy"]))
    return operator


def test_it_adds_checks_and_copies_to_a_target(page: Page, backup_operator, make_workload,
                                               bucket, recipient):  # noqa: F811 - fixtures
    snapshot = small_snapshot(make_workload())
    log_in(page, backup_operator.username, "correct horse battery")

    page.get_by_role("link", name="Backup targets").click()
    expect(page.locator("main")).to_contain_text("No backup targets yet.")
    page.get_by_role("link", name="Add a backup target").click()
    page.get_by_label("Name", exact=True).fill("offsite")
    page.get_by_label("Endpoint URL").fill(S3_ENDPOINT)
    page.get_by_label("Region").fill("us-east-1")
    page.get_by_label("Bucket", exact=True).fill(bucket)
    page.get_by_label("Prefix").fill("berth")
    page.get_by_label("Access key id").fill(S3_KEY_ID)
    page.get_by_label("Secret access key").fill(S3_SECRET)
    page.get_by_label("Age recipients").fill(recipient)
    shot(page, "target-form")
    page.get_by_role("button", name="Save").click()

    target = BackupTarget.objects.get()
    row = page.locator(f"#target-{target.pk}")
    expect(row).to_contain_text("Not checked yet")
    expect(row).to_contain_text("Encrypted")
    row.get_by_role("button", name="Check").click()
    expect(row).to_have_attribute("data-check", "ok")
    expect(row).to_contain_text("read back and deleted")
    shot(page, "targets")

    page.goto(f"/workloads/{snapshot.workload_id}/")
    copies = page.locator(f"#snapshot-{snapshot.pk}-copies")
    copies.get_by_label("Copy to…").select_option(label="offsite")
    copies.get_by_role("button", name="Copy").click()

    copy = page.locator(f"#snapshot-{snapshot.pk}-copies li[data-copy]")
    expect(copy).to_have_attribute("data-state", "verified")
    expect(copy).to_contain_text("Copy to offsite:")
    expect(copy).to_contain_text("Verified")
    shot(page, "copies")
    row = SnapshotCopy.objects.get()
    assert row.state == SnapshotCopy.State.VERIFIED
    assert f"berth/{row.remote_key}" in objects(bucket)
    assert S3_SECRET not in page.content()
