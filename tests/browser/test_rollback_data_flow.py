"""An operator rolls a workload back with its data from the deploy history, in a real browser.

v1 was deployed with a pre-deploy snapshot, v2 "migrated" the data
(tests/snapshots/rolling_back.py); the restore the dialog queues runs on a
thread of the test process, as the task worker would run it.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from playwright.sync_api import Page, expect

from engine import queue, tasks
from tests.browser.test_deploy_flow import DEPLOY_TIMEOUT_MS, log_in
from tests.conftest import container_image_digest
from tests.snapshots.restoring import engine_containers, trees
from tests.snapshots.rolling_back import release_v1_then_v2

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def on_a_thread(monkeypatch):
    """Restores run on a thread of the test process, as the task worker would run them."""
    threads: list[threading.Thread] = []
    real = queue.enqueue

    def run(job_id: int) -> None:
        try:
            tasks.run_restore(job_id)
        finally:
            connection.close()

    def enqueue(task: str, row_id: int, *, name: str) -> None:
        if task != queue.RESTORE:
            real(task, row_id, name=name)
            return
        thread = threading.Thread(target=run, args=(row_id,), daemon=True)
        threads.append(thread)
        thread.start()

    monkeypatch.setattr(queue, "enqueue", enqueue)
    yield
    for thread in threads:
        thread.join(timeout=120)


def test_it_rolls_back_with_the_data_from_the_history_panel(
    page: Page, current_tag, make_workload, operator, on_a_thread
):
    released = release_v1_then_v2(make_workload)
    workload, v1 = released.workload, released.v1
    log_in(page, operator.username, "correct horse battery")
    page.goto(f"/workloads/{workload.pk}/")

    row = page.locator(f"#deploy-history tr[data-deploy='{v1.pk}']")
    row.get_by_role("button", name="Roll back with data", exact=True).click()
    dialog = page.locator(f"#rollback-data-dialog-{v1.pk}")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(f"snapshot #{released.snapshot.pk}, taken just before")
    confirm = dialog.get_by_role("button", name="Roll back with data")
    expect(confirm).to_be_disabled()
    dialog.get_by_role("textbox").fill("not/the/path")
    expect(confirm).to_be_disabled()
    dialog.get_by_role("textbox").fill(workload.path)
    expect(confirm).to_be_enabled()
    confirm.click()

    newest = page.locator("#deploy-history tbody tr").first
    expect(newest).to_have_attribute("data-reason", "rollback", timeout=DEPLOY_TIMEOUT_MS)
    expect(newest).to_have_attribute("data-outcome", "succeeded", timeout=DEPLOY_TIMEOUT_MS)
    expect(newest).to_contain_text(f"to #{v1.pk}")
    expect(newest).to_contain_text("code, configuration and data")
    [running] = engine_containers(workload)
    assert container_image_digest(running.id) == v1.pinned_reference
    assert trees(released.paths) == released.target_trees
