"""The snapshots panel on the workload page: list, Snapshot now, progress, download, delete."""

from __future__ import annotations

import pytest
from django.test import Client

from engine import captures
from snapshots import storage
from snapshots.models import Snapshot
from workloads.models import DeployRecord

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]
HTMX = {"HX-Request": "true"}


def as_user(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_page_lists_snapshots_with_their_warnings(operator, volume_workload, settings):
    workload, paths = volume_workload
    first = captures.capture_snapshot(workload=workload)
    (paths[0] / "sub" / "notes.txt").write_bytes(b"")
    (paths[0] / "link").symlink_to("/etc")
    (paths[0] / "other").symlink_to("/tmp")
    second = captures.capture_snapshot(workload=workload)

    html = as_user(operator).get(f"/workloads/{workload.pk}/").content.decode()

    assert f'id="snapshot-{first.pk}"' in html and f'id="snapshot-{second.pk}"' in html
    assert "2 entries skipped" in html and "much smaller than the last one" in html
    assert "<code>link</code>" in html  # the skipped entries are listed, not just counted
    assert f'href="/workloads/{workload.pk}/snapshots/{second.pk}/download"' in html
    assert f'id="snapshot-delete-{second.pk}"' in html
    assert "Snapshot now" in html


def test_a_viewer_sees_the_list_without_buttons(viewer, volume_workload):
    workload, _paths = volume_workload
    snapshot = captures.capture_snapshot(workload=workload)
    html = as_user(viewer).get(f"/workloads/{workload.pk}/").content.decode()
    assert f'id="snapshot-{snapshot.pk}"' in html
    assert "Snapshot now" not in html and "/download" not in html
    assert "snapshot-delete-" not in html


def test_snapshot_now_answers_with_the_panel(operator, volume_workload):
    workload, _paths = volume_workload
    response = as_user(operator).post(f"/workloads/{workload.pk}/snapshots/take", headers=HTMX)
    assert response.status_code == 200
    snapshot = Snapshot.objects.get()
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="snapshots"')
    assert f'data-snapshot="{snapshot.pk}" data-state="ready"' in html


def test_snapshot_now_twice_says_one_is_running(operator, volume_workload):
    workload, _paths = volume_workload
    Snapshot.objects.create(workload=workload)  # queued
    response = as_user(operator).post(f"/workloads/{workload.pk}/snapshots/take", headers=HTMX)
    assert "already queued or being taken" in response.content.decode()
    assert Snapshot.objects.count() == 1


def test_the_panel_polls_while_a_capture_runs_and_stops_after(viewer, volume_workload):
    workload, _paths = volume_workload
    running = Snapshot.objects.create(workload=workload, state=Snapshot.State.CAPTURING,
                                      bytes_done=1536, bytes_total=4096)
    client = as_user(viewer)
    response = client.get(f"/workloads/{workload.pk}/snapshots", headers=HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert 'hx-trigger="every 1s"' in html
    assert '<progress value="1536" max="4096">37%</progress>' in html
    assert "1.5\xa0KB of 4.0\xa0KB" in html

    Snapshot.objects.filter(pk=running.pk).update(state=Snapshot.State.FAILED)
    response = client.get(f"/workloads/{workload.pk}/snapshots", headers=HTMX)
    assert response.status_code == 286
    assert 'hx-trigger="every 1s"' not in response.content.decode()


def test_delete_removes_the_row_and_the_file(operator, volume_workload):
    workload, _paths = volume_workload
    snapshot = captures.capture_snapshot(workload=workload)
    path = storage.archive_path(workload.pk, snapshot.archive)
    response = as_user(operator).post(
        f"/workloads/{workload.pk}/snapshots/{snapshot.pk}/delete", {"confirm": workload.path},
        headers=HTMX,
    )
    assert response.status_code == 200
    assert "No snapshots yet." in response.content.decode()
    assert not Snapshot.objects.exists() and not path.exists()


def test_a_running_capture_cannot_be_deleted_from_the_page(operator, volume_workload):
    workload, _paths = volume_workload
    running = Snapshot.objects.create(workload=workload, state=Snapshot.State.CAPTURING)
    response = as_user(operator).post(
        f"/workloads/{workload.pk}/snapshots/{running.pk}/delete", {"confirm": workload.path},
        headers=HTMX,
    )
    assert "still being taken" in response.content.decode()
    assert Snapshot.objects.filter(pk=running.pk).exists()


def test_download_from_the_page(operator, volume_workload):
    workload, _paths = volume_workload
    snapshot = captures.capture_snapshot(workload=workload)
    response = as_user(operator).get(f"/workloads/{workload.pk}/snapshots/{snapshot.pk}/download")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert body == storage.archive_path(workload.pk, snapshot.archive).read_bytes()


@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/take"), ("post", "/{sid}/delete"), ("get", "/{sid}/download")],
)
def test_a_viewer_may_not_take_delete_or_download(viewer, volume_workload, method, path):
    workload, _paths = volume_workload
    snapshot = captures.capture_snapshot(workload=workload)
    url = f"/workloads/{workload.pk}/snapshots" + path.format(sid=snapshot.pk)
    assert getattr(as_user(viewer), method)(url, {"confirm": workload.path},
                                            headers=HTMX).status_code == 403
    assert Snapshot.objects.count() == 1


def test_outsiders_and_strangers(outsider, volume_workload, client):
    workload, _paths = volume_workload
    assert as_user(outsider).get(f"/workloads/{workload.pk}/snapshots").status_code == 403
    assert client.get(f"/workloads/{workload.pk}/snapshots").status_code == 302  # to login
    assert as_user(outsider).post(f"/workloads/{workload.pk}/snapshots/take").status_code == 403


def test_a_snapshot_of_another_workload_is_not_found(operator, volume_workload, make_workload):
    workload, _paths = volume_workload
    other = make_workload()
    snapshot = captures.capture_snapshot(workload=workload)
    client = as_user(operator)
    assert client.post(f"/workloads/{other.pk}/snapshots/{snapshot.pk}/delete",
                       {"confirm": other.path}).status_code == 404
    assert client.get(f"/workloads/{other.pk}/snapshots/{snapshot.pk}/download").status_code == 404


def test_the_history_shows_the_snapshot_before_a_deploy_and_a_missing_one(viewer, workload):
    with_snapshot = DeployRecord.open(workload=workload, reason="manual")
    DeployRecord.objects.filter(pk=with_snapshot.pk).update(outcome=DeployRecord.Outcome.SUCCEEDED)
    snapshot = Snapshot.objects.create(workload=workload, kind=Snapshot.Kind.PRE_DEPLOY,
                                       state=Snapshot.State.READY, deploy=with_snapshot)
    without = DeployRecord.open(workload=workload, reason="manual")
    without.note_backup_failure(DeployRecord.BackupFailure.CAPTURE_FAILED)

    html = as_user(viewer).get(f"/workloads/{workload.pk}/").content.decode()

    assert f'<a href="#snapshot-{snapshot.pk}">snapshot #{snapshot.pk} before it</a>' in html
    assert "The snapshot before this deploy failed; the deploy went on without it." in html
    assert f"before deploy #{with_snapshot.pk}" in html
