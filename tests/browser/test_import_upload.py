"""The workload page's import button uploads an archive with a progress bar (XHR) to the
import endpoint, and the snapshots list shows it once kept; a bad archive says so."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from snapshots.models import Snapshot
from tests.browser.test_deploy_flow import log_in
from tests.snapshots.trees import archive_of
from workloads.models import VolumeMount

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_uploads_an_archive_with_progress(page: Page, operator, workload, tmp_path):
    VolumeMount.objects.create(workload=workload, scope="stage", source="data", target="/data")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "index.html").write_bytes(b"<h1>imported</h1>" * 4096)
    archive = tmp_path / "snap.tar.zst"
    archive.write_bytes(archive_of([tree]))
    garbage = tmp_path / "garbage.tar.zst"
    garbage.write_bytes(b"not an archive at all")
    log_in(page, operator.username, "correct horse battery")
    page.goto(f"/workloads/{workload.pk}/")
    form = page.locator("#snapshot-import form")

    page.set_input_files("#snapshot-archive", str(garbage))
    page.get_by_role("button", name="Upload").click()
    expect(form).to_have_attribute("data-state", "failed")
    expect(form.locator("[data-status]")).to_contain_text("The archive was not imported.")
    assert not Snapshot.objects.filter(workload=workload).exists()

    page.set_input_files("#snapshot-archive", str(archive))
    page.get_by_role("button", name="Upload").click()
    expect(form).to_have_attribute("data-state", "done")
    progress = form.locator("progress")
    assert progress.evaluate("p => p.value === p.max && p.max > 0")
    expect(page.locator("#snapshots")).to_contain_text("(imported)")
    page.screenshot(path="/tmp/berth-edit-flow-7-imported.png", full_page=True)
    assert Snapshot.objects.filter(workload=workload, imported=True).count() == 1
