"""An operator recovers a workload's data from a backup target, in a browser."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from playwright.sync_api import Page, expect

# The backups tests' fixtures: the S3 server, a bucket, age keys and a verified copy.
from tests.backups.conftest import (  # noqa: F401
    bucket,
    copy_of,
    identity,
    recipient,
    s3_server,
)
from tests.browser.test_deploy_flow import log_in
from tests.snapshots.conftest import fill
from tests.snapshots.trees import describe

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def recoverer(db) -> User:
    user = User.objects.create_user("rita-recoverer", password="correct horse battery")
    user.user_permissions.add(*Permission.objects.filter(
        content_type__app_label__in=["backups", "workloads"],
        codename__in=["add_backuprecovery", "view_backuprecovery", "add_workload",
                      "restore_workload", "view_workload", "add_project", "add_stage",
                      "deploy_workload"]))
    return user


def test_it_lists_the_catalogue_and_recovers_onto_the_workload(page: Page, recoverer, request,
                                                             tmp_path):
    row, volume = request.getfixturevalue("copy_of")
    key = request.getfixturevalue("identity")
    before = describe(volume)
    fill(volume, {"index.html": b"damaged"})
    log_in(page, recoverer.username, "correct horse battery")

    page.get_by_role("link", name="Recover from backup").click()
    page.get_by_label("Backup target").select_option(str(row.target_id))
    page.get_by_label("Age identity").fill(str(key))
    page.get_by_role("button", name="List copies").click()

    entry = page.locator(f'#catalogue tr[data-key="{row.remote_key}"]')
    expect(entry).to_contain_text(f"{row.workload.stage.project.slug}/prod/web")
    expect(entry).to_contain_text("manual")
    assert str(key) not in page.content()
    page.screenshot(path=str(tmp_path / "catalogue.png"), full_page=True)

    entry.get_by_label("Recover into").select_option(str(row.workload_id))
    entry.get_by_label("the workload's path, to confirm").fill(row.workload.path)
    entry.get_by_role("button", name="Recover").click()

    status = page.locator("#recovery-status")
    expect(status).to_have_attribute("data-state", "succeeded", timeout=30_000)
    expect(status).to_contain_text("Restored")
    page.screenshot(path=str(tmp_path / "recovered.png"), full_page=True)
    assert describe(volume) == before
