"""The restore dialog and the restore status line, laid out in English and Russian.

BERTH_TEST_SCREENSHOTS=<dir> saves what the tests looked at, to check by eye.
"""

from __future__ import annotations

import os

import pytest
from django.conf import settings
from playwright.sync_api import Page, expect

from engine import captures, deploys, restores
from tests.browser.test_deploy_flow import log_in
from tests.snapshots.conftest import add_volume, fill
from workloads.models import DeployRecord

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = os.environ.get("BERTH_TEST_SCREENSHOTS", "")


def overflowing(page: Page, selector: str) -> list[str]:
    """The elements inside `selector` whose right edge passes its own (cut off or scrolled)."""
    return page.eval_on_selector(selector, """(box) => {
        const right = box.getBoundingClientRect().right + 0.5;
        const out = [];
        if (box.scrollWidth > box.clientWidth + 1) out.push('the box scrolls sideways');
        for (const el of box.querySelectorAll('*')) {
            if (el.getBoundingClientRect().right > right) out.push(el.outerHTML.slice(0, 120));
        }
        return out;
    }""")


@pytest.mark.parametrize("language", ["en", "ru"])
def test_the_restore_dialog_fits_its_text(page: Page, live_server, docker, current_tag, operator,
                                          make_workload, language):
    workload = make_workload(slug="a-rather-long-workload-slug-for-layout")
    fill(add_volume(workload, "data-with-a-long-source-name", "/var/lib/app/data/with/depth"),
         {"index.html": b"hello"})
    assert deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL).outcome == \
        DeployRecord.Outcome.SUCCEEDED
    snapshot = captures.capture_snapshot(workload=workload)

    log_in(page, operator.username, "correct horse battery")
    page.context.add_cookies([{"name": settings.LANGUAGE_COOKIE_NAME, "value": language,
                               "url": live_server.url}])
    page.goto(f"/workloads/{workload.pk}/")
    page.locator(f"#snapshot-{snapshot.pk}").locator("button.danger").first.click()
    dialog = page.locator(f"#snapshot-restore-{snapshot.pk}")
    expect(dialog).to_be_visible()
    if SHOTS:
        dialog.screenshot(path=f"{SHOTS}/restore-dialog-{language}.png")
    found = overflowing(page, f"#snapshot-restore-{snapshot.pk}")
    assert found == [], "\n".join(found)


@pytest.mark.parametrize("language", ["en", "ru"])
def test_the_restore_status_line_is_separate_sentences(page: Page, live_server, docker,
                                                       current_tag, operator, make_workload,
                                                       language):
    workload = make_workload()
    fill(add_volume(workload, "data", "/data"), {"index.html": b"hello"})
    assert deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL).outcome == \
        DeployRecord.Outcome.SUCCEEDED
    snapshot = captures.capture_snapshot(workload=workload)
    job = restores.restore(workload=workload, snapshot=snapshot)
    job.refresh_from_db()
    assert job.outcome == "succeeded", job.reason

    log_in(page, operator.username, "correct horse battery")
    page.context.add_cookies([{"name": settings.LANGUAGE_COOKIE_NAME, "value": language,
                               "url": live_server.url}])
    page.goto(f"/workloads/{workload.pk}/")
    status = page.locator("#restore-status")
    expect(status).to_be_visible()
    if SHOTS:
        status.screenshot(path=f"{SHOTS}/restore-status-{language}.png")
    source = status.locator("small.source").inner_text().strip()
    kept = status.locator("small.kept").inner_text().strip()
    # Each is a sentence of its own: a full stop, then a capital letter.
    assert source.endswith(f"{snapshot.pk}."), source
    assert kept[0].isupper() and kept.endswith(f"{job.pre_restore_snapshot_id}."), kept
    if language == "en":
        text = " ".join(status.inner_text().split())
        assert f"from snapshot #{snapshot.pk}. The previous data is kept as snapshot #" in text
