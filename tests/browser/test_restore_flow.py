"""An operator restores a snapshot from the workload's page, in a real browser.

The restore runs on a thread of the test process (as the task worker would
run it) and pauses once the snapshot is unpacked (a pause point,
lib/crashpoints.py), so the test can watch the busy state before it
lets the restore finish and looks at the result.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from django.db import connection
from playwright.sync_api import Page, expect

from engine import captures, deploys, queue, tasks
from snapshots.models import RestoreJob
from tests.browser.test_deploy_flow import DEPLOY_TIMEOUT_MS, log_in
from tests.snapshots.conftest import add_volume, fill
from tests.snapshots.restoring import (
    NEW,
    NEW_CONFIG,
    OLD,
    OLD_CONFIG,
    engine_containers,
    replace_content,
    served,
)
from workloads.models import DeployRecord

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def on_a_thread(monkeypatch, tmp_path):
    """Restores run on a thread and pause once unpacked; yields the file that releases them."""
    release = tmp_path / "release"
    threads: list[threading.Thread] = []

    def run(job_id: int) -> None:
        try:
            tasks.run_restore(job_id)
        finally:
            connection.close()

    real = queue.enqueue

    def enqueue(task: str, row_id: int, *, name: str) -> None:
        if task != queue.RESTORE:
            real(task, row_id, name=name)
            return
        thread = threading.Thread(target=run, args=(row_id,), daemon=True)
        threads.append(thread)
        thread.start()

    monkeypatch.setattr(queue, "enqueue", enqueue)
    monkeypatch.setenv("BERTH_PAUSE_POINT", "restore.extracted")
    monkeypatch.setenv("BERTH_PAUSE_FILE", str(release))
    yield release
    release.touch()
    for thread in threads:
        thread.join(timeout=120)


def wait_for(path: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_it_restores_from_the_dialog_with_progress_and_a_result(
    page: Page, docker, current_tag, operator, make_workload, on_a_thread
):
    workload = make_workload()
    data = add_volume(workload, "data", "/data")
    config = add_volume(workload, "config", "/config")
    fill(data, NEW)
    fill(config, NEW_CONFIG)
    assert deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL).outcome == \
        DeployRecord.Outcome.SUCCEEDED
    snapshot = captures.capture_snapshot(workload=workload)
    replace_content(data, OLD)
    replace_content(config, OLD_CONFIG)

    log_in(page, operator.username, "correct horse battery")
    page.goto(f"/workloads/{workload.pk}/")
    row = page.locator(f"#snapshot-{snapshot.pk}")
    row.get_by_role("button", name="Restore").click()

    dialog = page.locator(f"#snapshot-restore-{snapshot.pk}")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(f"Restore snapshot #{snapshot.pk}?")
    expect(dialog).to_contain_text(str(data))
    expect(dialog).to_contain_text(str(config))
    expect(dialog).to_contain_text("The workload stops for a moment")
    expect(dialog).to_contain_text("kept as a pre-restore snapshot")
    confirm = dialog.get_by_role("button", name="Restore")
    expect(confirm).to_be_disabled()
    dialog.get_by_role("textbox").fill("not-the-slug")
    expect(confirm).to_be_disabled()
    dialog.get_by_role("textbox").fill(workload.path)
    expect(confirm).to_be_enabled()
    confirm.click()

    status = page.locator("#restore-status")
    expect(status).to_have_attribute("data-state", "running", timeout=DEPLOY_TIMEOUT_MS)
    wait_for(Path(f"{on_a_thread}.reached"))
    expect(status).to_have_attribute("data-phase", "extracting")
    expect(status).to_contain_text("Unpacking the snapshot beside the volumes")
    total = str(snapshot.data_bytes)
    expect(status.locator("progress")).to_have_attribute("value", total)
    expect(status.locator("progress")).to_have_attribute("max", total)
    # Every dangerous button waits: Snapshot now, Restore, Delete, and Deploy in the state panel.
    expect(page.get_by_role("button", name="Snapshot now")).to_be_disabled()
    expect(row.get_by_role("button", name="Restore")).to_be_disabled()
    expect(row.get_by_role("button", name="Delete")).to_be_disabled()
    expect(page.locator("#state-panel").get_by_role("button", name="Restoring…")).to_be_disabled()

    on_a_thread.touch()

    expect(status).to_have_attribute("data-outcome", "succeeded", timeout=DEPLOY_TIMEOUT_MS)
    expect(status).to_contain_text("Restored")
    job = RestoreJob.objects.get()
    expect(status).to_contain_text(
        f"The previous data is kept as snapshot #{job.pre_restore_snapshot_id}.")
    expect(page.locator(f"#snapshot-{job.pre_restore_snapshot_id}")).to_have_attribute(
        "data-kind", "pre_restore")
    expect(page.locator("#state-panel").get_by_role("button", name="Deploy")).to_be_enabled(
        timeout=DEPLOY_TIMEOUT_MS)
    expect(page.locator("#snapshots")).to_have_attribute("aria-busy", "false")
    [running] = engine_containers(workload)
    assert served(running.id, "index.html") == NEW["index.html"]
