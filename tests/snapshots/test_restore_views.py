"""Restore on the workload page: the danger dialog, the typed slug, the busy state, the result."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from snapshots.models import RestoreJob, Snapshot
from tests.snapshots.restoring import trees

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]
HTMX = {"HX-Request": "true"}


def as_user(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def post_restore(client: Client, workload, snapshot, confirm: str | None):
    data = {} if confirm is None else {"confirm": confirm}
    return client.post(f"/workloads/{workload.pk}/snapshots/{snapshot.pk}/restore", data,
                       headers=HTMX)


def test_the_dialog_says_what_is_replaced_and_asks_for_the_slug(operator, snapshotted):
    workload, paths, snapshot, _wanted = snapshotted

    html = as_user(operator).get(f"/workloads/{workload.pk}/").content.decode()

    dialog = re.search(rf'<dialog id="snapshot-restore-{snapshot.pk}".*?</dialog>', html,
                       re.S).group(0)
    assert f"Restore snapshot #{snapshot.pk}?" in dialog
    for path in paths:
        assert f"<code>{path}</code>" in dialog
    assert "<code>/data</code>" in dialog and "<code>/config</code>" in dialog
    held = {v["target"]: v for v in snapshot.volumes}
    assert f"{held['/data']['bytes']}\xa0bytes" in dialog
    # Never deployed: nothing stops or starts, and the dialog says so.
    assert "has never run here" in dialog and "stops for a moment" not in dialog
    assert "kept as a pre-restore snapshot" in dialog
    assert f"<code>{workload.path}</code>" in dialog
    assert f'data-expected="{workload.path}"' in dialog
    # The Restore button stays disabled until the path is typed (static/js/confirm.js).
    assert re.search(r'class="danger confirm-restore" disabled', dialog)


def test_a_viewer_gets_no_restore_button_and_cannot_post(viewer, snapshotted):
    workload, paths, snapshot, _wanted = snapshotted
    html = as_user(viewer).get(f"/workloads/{workload.pk}/").content.decode()
    assert "snapshot-restore-" not in html
    before = trees(paths)
    response = post_restore(as_user(viewer), workload, snapshot, workload.path)
    assert response.status_code == 403
    assert not RestoreJob.objects.exists() and trees(paths) == before


def test_anonymous_is_sent_to_log_in_and_get_is_refused(client, operator, snapshotted):
    workload, _paths, snapshot, _wanted = snapshotted
    response = post_restore(client, workload, snapshot, workload.path)
    assert response.status_code == 302 and "/login/" in response["Location"]
    url = f"/workloads/{workload.pk}/snapshots/{snapshot.pk}/restore"
    assert as_user(operator).get(url).status_code == 405
    assert not RestoreJob.objects.exists()


@pytest.mark.parametrize("typed", [None, "", "WEB", "wrong", "web"])
def test_without_the_typed_path_nothing_happens(typed, operator, snapshotted):
    workload, paths, snapshot, _wanted = snapshotted
    before = trees(paths)

    response = post_restore(as_user(operator), workload, snapshot, typed)

    html = response.content.decode()
    assert response.status_code == 200
    assert f"Type the workload&#x27;s path, {workload.path}, to confirm the restore." in html
    assert not RestoreJob.objects.exists() and trees(paths) == before


def test_a_confirmed_restore_answers_with_the_panel_and_its_result(operator, snapshotted):
    workload, paths, snapshot, wanted = snapshotted

    response = post_restore(as_user(operator), workload, snapshot, workload.path)

    html = response.content.decode()
    assert html.lstrip().startswith('<section id="snapshots"')
    job = RestoreJob.objects.get()
    assert job.outcome == RestoreJob.Outcome.SUCCEEDED and trees(paths) == wanted
    assert f'data-restore="{job.pk}"' in html and 'data-outcome="succeeded"' in html
    assert f"The previous data is kept as snapshot #{job.pre_restore_snapshot_id}." in html
    # It asks once for the state panel, which shows the restore as well.
    assert f'hx-get="/workloads/{workload.pk}/state" hx-trigger="load"' in html
    kept = Snapshot.objects.get(pk=job.pre_restore_snapshot_id)
    assert f'id="snapshot-{kept.pk}"' in html and 'data-kind="pre_restore"' in html


def test_while_a_restore_runs_the_dangerous_buttons_are_disabled(operator, snapshotted):
    workload, _paths, snapshot, _wanted = snapshotted
    RestoreJob.objects.create(workload=workload, snapshot=snapshot, state="running",
                              phase="extracting", bytes_done=1536, bytes_total=4096)
    client = as_user(operator)

    panel = client.get(f"/workloads/{workload.pk}/snapshots", headers=HTMX)
    html = panel.content.decode()
    assert panel.status_code == 200 and 'hx-trigger="every 1s"' in html
    assert "Unpacking the snapshot beside the volumes" in html
    assert '<progress value="1536" max="4096">37%</progress>' in html
    assert "1.5\xa0KB of 4.0\xa0KB" in html
    assert re.search(r'<button type="button" class="primary"[^>]*disabled', html)  # Snapshot now
    assert re.search(r'<button type="button" class="danger" disabled\s+'
                     rf'data-opens="snapshot-restore-{snapshot.pk}"', html)
    assert re.search(r'<button type="button" class="danger" disabled\s+'
                     rf'data-opens="snapshot-delete-{snapshot.pk}"', html)

    state = client.get(f"/workloads/{workload.pk}/state", headers=HTMX)
    html = state.content.decode()
    assert state.status_code == 200 and 'hx-trigger="every 1s"' in html
    assert re.search(r"disabled>Restoring…</button>", html)
    assert "a restore is running…" in html


def test_a_second_restore_from_the_page_says_one_is_running(operator, snapshotted):
    workload, _paths, snapshot, _wanted = snapshotted
    RestoreJob.objects.create(workload=workload, snapshot=snapshot)  # queued
    response = post_restore(as_user(operator), workload, snapshot, workload.path)
    assert "Another restore of this workload is queued or running" in response.content.decode()
    assert RestoreJob.objects.count() == 1


def test_the_result_of_a_failed_restore_is_shown_with_its_reason(viewer, snapshotted):
    workload, _paths, snapshot, _wanted = snapshotted
    RestoreJob.objects.create(
        workload=workload, snapshot=snapshot, state="finished", phase="done", outcome="failed",
        reason="Snapshot #%(id)d is not ready to restore.", reason_params={"id": snapshot.pk},
    )
    response = as_user(viewer).get(f"/workloads/{workload.pk}/snapshots", headers=HTMX)
    html = response.content.decode()
    assert response.status_code == 286
    assert 'data-outcome="failed"' in html
    assert "Failed; the volumes were left as they were" in html
    assert f"Snapshot #{snapshot.pk} is not ready to restore." in html


def test_a_snapshot_being_restored_cannot_be_deleted(operator, snapshotted):
    workload, _paths, snapshot, _wanted = snapshotted
    RestoreJob.objects.create(workload=workload, snapshot=snapshot, state="running")
    response = as_user(operator).post(
        f"/workloads/{workload.pk}/snapshots/{snapshot.pk}/delete", {"confirm": workload.path},
        headers=HTMX)
    assert "This snapshot is being restored" in response.content.decode()
    assert Snapshot.objects.filter(pk=snapshot.pk).exists()


def test_the_admin_lists_restores_read_only(snapshotted):
    from django.contrib.auth.models import User

    workload, _paths, snapshot, _wanted = snapshotted
    job = RestoreJob.objects.create(workload=workload, snapshot=snapshot, state="running")
    admin = User.objects.create_superuser("root-admin", password="x")
    client = as_user(admin)
    listing = client.get("/admin/snapshots/restorejob/")
    assert listing.status_code == 200 and str(workload) in listing.content.decode()
    detail = client.get(f"/admin/snapshots/restorejob/{job.pk}/change/")
    assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()
    assert client.get("/admin/snapshots/restorejob/add/").status_code == 403
    assert client.post(f"/admin/snapshots/restorejob/{job.pk}/delete/",
                       {"post": "yes"}).status_code == 403
    assert RestoreJob.objects.filter(pk=job.pk).exists()


def test_the_dialog_of_a_running_workload_says_it_starts_again(operator, snapshotted):
    workload, _paths, snapshot, _wanted = snapshotted
    type(workload).objects.filter(pk=workload.pk).update(
        running_reference="127.0.0.1:5000/berth-test/httpd@sha256:" + "0" * 64)
    html = as_user(operator).get(f"/workloads/{workload.pk}/").content.decode()
    dialog = re.search(rf'<dialog id="snapshot-restore-{snapshot.pk}".*?</dialog>', html,
                       re.S).group(0)
    assert "The workload stops for a moment" in dialog and "never run here" not in dialog
