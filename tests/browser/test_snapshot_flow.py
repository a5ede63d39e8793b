"""An operator snapshots a workload, watches the progress, downloads and deletes, in a browser."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from playwright.sync_api import Page, expect

from snapshots import storage
from snapshots.models import Snapshot
from tests.browser.test_deploy_flow import log_in
from tests.browser.test_restore_layout import overflowing
from tests.snapshots.conftest import add_volume, fill
from tests.snapshots.test_retention import fake

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def data_workload(make_workload):
    workload = make_workload()
    path = add_volume(workload, "data", "/data")
    fill(path, {"index.html": b"<h1>hello</h1>", "sub/notes.txt": b"notes"})
    (path / "link").symlink_to("/etc/passwd")
    return workload


def test_it_takes_downloads_and_deletes_a_snapshot(page: Page, operator, data_workload):
    log_in(page, operator.username, "correct horse battery")
    page.goto(f"/workloads/{data_workload.pk}/")
    panel = page.locator("#snapshots")
    expect(panel).to_contain_text("No snapshots yet.")

    panel.get_by_role("button", name="Snapshot now").click()

    row = panel.locator("tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-state", "ready")
    expect(row).to_contain_text("1 entry skipped")
    snapshot = Snapshot.objects.get()
    with page.expect_download() as download:
        row.get_by_role("link", name="Download").click()
    saved = download.value.path()
    archive = storage.archive_path(data_workload.pk, snapshot.archive)
    assert Path(saved).read_bytes() == archive.read_bytes()

    row.get_by_role("button", name="Delete").click()
    dialog = page.locator(f"#snapshot-delete-{snapshot.pk}")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(f"Delete snapshot #{snapshot.pk}?")
    expect(dialog).to_contain_text(data_workload.path)
    confirm = dialog.get_by_role("button", name="Delete")
    expect(confirm).to_be_disabled()
    dialog.get_by_role("textbox").fill(data_workload.slug)  # the slug alone is not enough
    expect(confirm).to_be_disabled()
    dialog.get_by_role("textbox").fill(data_workload.path)
    expect(confirm).to_be_enabled()
    confirm.click()

    expect(dialog).to_be_hidden()
    expect(panel).to_contain_text("No snapshots yet.")
    assert not archive.exists() and not Snapshot.objects.exists()


def test_the_panel_shows_live_progress_until_the_capture_ends(page: Page, viewer, data_workload):
    running = Snapshot.objects.create(workload=data_workload, state=Snapshot.State.CAPTURING,
                                      bytes_done=0, bytes_total=4 << 20)
    log_in(page, viewer.username, "correct horse battery")
    page.goto(f"/workloads/{data_workload.pk}/")
    progress = page.locator(f"#snapshot-{running.pk} progress")
    expect(progress).to_have_attribute("value", "0")

    Snapshot.objects.filter(pk=running.pk).update(bytes_done=3 << 20)
    expect(progress).to_have_attribute("value", str(3 << 20))
    expect(page.locator(f"#snapshot-{running.pk}")).to_contain_text("3.0\xa0MB of 4.0\xa0MB")

    Snapshot.objects.filter(pk=running.pk).update(state=Snapshot.State.FAILED,
                                                  failure="The capture was interrupted "
                                                          "before it finished.")
    row = page.locator(f"#snapshot-{running.pk}")
    expect(row).to_have_attribute("data-state", "failed")
    expect(row).to_contain_text("The capture was interrupted before it finished.")
    expect(page.locator("#snapshots")).to_have_attribute("aria-busy", "false")


@pytest.mark.parametrize("language", ["en", "ru"])
def test_the_delete_dialog_fits_its_text(page: Page, live_server, operator, make_workload,
                                         language):
    workload = make_workload(slug="a-rather-long-workload-slug-for-layout")
    snapshot = fake(workload)

    log_in(page, operator.username, "correct horse battery")
    page.context.add_cookies([{"name": settings.LANGUAGE_COOKIE_NAME, "value": language,
                               "url": live_server.url}])
    page.goto(f"/workloads/{workload.pk}/")
    page.locator(f'#snapshot-{snapshot.pk} button[data-opens="snapshot-delete-{snapshot.pk}"]'
                 ).click()
    dialog = page.locator(f"#snapshot-delete-{snapshot.pk}")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(workload.path)

    found = overflowing(page, f"#snapshot-delete-{snapshot.pk}")
    assert found == [], "\n".join(found)
    dialog.get_by_role("button").first.click()  # Cancel
    expect(dialog).to_be_hidden()
    assert Snapshot.objects.filter(pk=snapshot.pk).exists()
