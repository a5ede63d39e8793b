"""The snapshots API: list, capture, delete, download, import; permissions and bad input."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from engine import captures
from snapshots import storage
from snapshots.models import Snapshot
from tests.snapshots import hostile
from tests.snapshots.conftest import archive_files, leftovers
from tests.snapshots.trees import archive_of
from workloads.models import EventLog

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]


def ready(workload, **fields) -> Snapshot:
    return captures.capture_snapshot(workload=workload, **fields)


def upload(client: APIClient, workload, data: bytes, name: str = "snap.tar.zst"):
    return client.post(
        f"/api/workloads/{workload.pk}/snapshots/import",
        {"archive": SimpleUploadedFile(name, data, content_type="application/zstd")},
        format="multipart",
    )


# --- list and detail ------------------------------------------------------------------

def test_it_lists_a_workloads_snapshots_newest_first(api_as, viewer, volume_workload,
                                                     make_workload):
    workload, paths = volume_workload
    (paths[0] / "link").symlink_to("/etc")
    first, second = ready(workload), ready(workload)
    ready(make_workload())  # another workload's

    body = api_as(viewer).get(f"/api/workloads/{workload.pk}/snapshots").json()

    assert [s["id"] for s in body["results"]] == [second.pk, first.pk]
    row = body["results"][0]
    assert row["state"] == "ready" and row["kind"] == "manual"
    assert row["size"] == second.size and row["sha256"] == second.sha256
    assert row["skipped_count"] == 1 and "skipped" not in row  # only in the detail
    detail = api_as(viewer).get(row["url"]).json()
    assert detail["skipped"][0]["path"] == "link"
    assert row["download_url"] == f"/api/workloads/{workload.pk}/snapshots/{second.pk}/download"
    assert row["url"] == f"/api/workloads/{workload.pk}/snapshots/{second.pk}"
    assert [v["target"] for v in row["volumes"]] == ["/data", "/config"]
    assert row["progress"] == {"bytes_done": 524, "bytes_total": 524}


def test_a_snapshot_of_another_workload_is_not_found(api_as, operator, volume_workload,
                                                     make_workload):
    workload, _paths = volume_workload
    other = make_workload()
    snapshot = ready(workload)
    client = api_as(operator)
    for url in (f"/api/workloads/{other.pk}/snapshots/{snapshot.pk}",
                f"/api/workloads/{other.pk}/snapshots/{snapshot.pk}/download"):
        assert client.get(url).status_code == 404
    # The lookup comes before the confirmation: 404 with or without the header.
    assert client.delete(f"/api/workloads/{other.pk}/snapshots/{snapshot.pk}").status_code == 404
    assert client.delete(f"/api/workloads/{other.pk}/snapshots/{snapshot.pk}",
                         HTTP_X_CONFIRM_DELETE=other.path).status_code == 404
    assert client.delete(f"/api/workloads/{workload.pk}/snapshots/999999",
                         HTTP_X_CONFIRM_DELETE=workload.path).status_code == 404
    assert client.get("/api/workloads/999999/snapshots").status_code == 404
    assert Snapshot.objects.filter(pk=snapshot.pk).exists()


def test_the_list_query_count_does_not_grow(api_as, viewer, volume_workload):
    workload, _paths = volume_workload

    def queries() -> int:
        # A fresh request user: the permission checks, the workload, the count, one
        # page of snapshots joined with their users.
        viewer.refresh_from_db()
        for cache in ("_perm_cache", "_user_perm_cache", "_group_perm_cache"):
            viewer.__dict__.pop(cache, None)
        with CaptureQueriesContext(connection) as captured:
            assert api_as(viewer).get(f"/api/workloads/{workload.pk}/snapshots").status_code == 200
        return len(captured.captured_queries)

    ready(workload)
    one = queries()
    for _ in range(4):
        ready(workload, user=viewer)
    assert queries() == one == 5


# --- capture and delete -----------------------------------------------------------------

def test_post_queues_a_capture_and_answers_202(api_as, operator, volume_workload):
    workload, _paths = volume_workload
    response = api_as(operator).post(f"/api/workloads/{workload.pk}/snapshots")

    assert response.status_code == 202
    body = response.json()
    assert response["Location"] == body["url"]
    # Tasks run synchronously in the tests: the capture has finished on commit.
    snapshot = Snapshot.objects.get(pk=body["id"])
    assert snapshot.state == Snapshot.State.READY and snapshot.user == operator
    followed = api_as(operator).get(body["url"]).json()
    assert followed["state"] == "ready" and followed["user"] == operator.username


def test_a_second_capture_while_one_is_queued_is_a_conflict(api_as, operator, volume_workload):
    workload, _paths = volume_workload
    Snapshot.objects.create(workload=workload, kind=Snapshot.Kind.MANUAL)  # queued
    response = api_as(operator).post(f"/api/workloads/{workload.pk}/snapshots")
    assert response.status_code == 409
    assert "already queued or being taken" in response.json()["detail"]


def test_a_dead_capture_does_not_block_the_next_one(api_as, operator, volume_workload):
    workload, _paths = volume_workload
    dead = Snapshot.objects.create(workload=workload, state=Snapshot.State.CAPTURING)
    response = api_as(operator).post(f"/api/workloads/{workload.pk}/snapshots")
    assert response.status_code == 202
    dead.refresh_from_db()
    assert dead.state == Snapshot.State.FAILED


def test_delete_removes_the_row_then_the_file(api_as, operator, volume_workload):
    workload, _paths = volume_workload
    snapshot = ready(workload)
    path = storage.archive_path(workload.pk, snapshot.archive)
    assert path.exists()

    response = api_as(operator).delete(f"/api/workloads/{workload.pk}/snapshots/{snapshot.pk}",
                                       HTTP_X_CONFIRM_DELETE=workload.path)

    assert response.status_code == 204
    assert not Snapshot.objects.filter(pk=snapshot.pk).exists()
    assert not path.exists()
    assert workload.events.filter(message="Deleted snapshot #%(id)d.").exists()


def test_a_snapshot_being_taken_cannot_be_deleted(api_as, operator, volume_workload):
    workload, _paths = volume_workload
    running = Snapshot.objects.create(workload=workload, state=Snapshot.State.CAPTURING)
    response = api_as(operator).delete(f"/api/workloads/{workload.pk}/snapshots/{running.pk}",
                                       HTTP_X_CONFIRM_DELETE=workload.path)
    assert response.status_code == 409
    assert Snapshot.objects.filter(pk=running.pk).exists()


# --- download ----------------------------------------------------------------------------

def test_download_streams_the_archive_byte_for_byte(api_as, operator, volume_workload):
    workload, _paths = volume_workload
    snapshot = ready(workload)
    response = api_as(operator).get(
        f"/api/workloads/{workload.pk}/snapshots/{snapshot.pk}/download",
        HTTP_ACCEPT="application/zstd",
    )
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert body == storage.archive_path(workload.pk, snapshot.archive).read_bytes()
    assert hashlib.sha256(body).hexdigest() == snapshot.sha256
    assert response["ETag"] == f'"{snapshot.sha256}"'
    assert response["Content-Type"] == "application/zstd"
    assert response["Content-Length"] == str(snapshot.size)
    assert "attachment" in response["Content-Disposition"]


def test_a_snapshot_without_an_archive_cannot_be_downloaded(api_as, operator, volume_workload):
    workload, _paths = volume_workload
    failed = Snapshot.objects.create(workload=workload, state=Snapshot.State.FAILED)
    url = f"/api/workloads/{workload.pk}/snapshots/{failed.pk}/download"
    assert api_as(operator).get(url).status_code == 409
    gone = ready(workload)
    storage.archive_path(workload.pk, gone.archive).unlink()
    response = api_as(operator).get(f"/api/workloads/{workload.pk}/snapshots/{gone.pk}/download")
    assert response.status_code == 409 and "missing" in response.json()["detail"]


def test_a_download_round_trips_through_import(api_as, operator, volume_workload):
    workload, _paths = volume_workload
    snapshot = ready(workload)
    client = api_as(operator)
    url = f"/api/workloads/{workload.pk}/snapshots/{snapshot.pk}/download"
    body = b"".join(client.get(url).streaming_content)

    response = upload(client, workload, body)

    assert response.status_code == 201, response.json()
    imported = Snapshot.objects.get(pk=response.json()["id"])
    assert imported.imported and imported.state == Snapshot.State.READY
    assert imported.sha256 == snapshot.sha256 and imported.size == snapshot.size
    assert imported.manifest == snapshot.manifest
    again = b"".join(client.get(
        f"/api/workloads/{workload.pk}/snapshots/{imported.pk}/download").streaming_content)
    assert again == body
    assert leftovers() == []


# --- import ------------------------------------------------------------------------------

def test_import_of_a_good_archive_from_elsewhere(api_as, operator, volume_workload, tmp_path):
    workload, _paths = volume_workload
    other = tmp_path / "elsewhere"
    (other / "a").mkdir(parents=True)
    (other / "a" / "file").write_bytes(b"made on another host")
    data = archive_of([other, tmp_path / "missing"])

    response = upload(api_as(operator), workload, data)

    assert response.status_code == 201, response.json()
    snapshot = Snapshot.objects.get(pk=response.json()["id"])
    assert snapshot.sha256 == hashlib.sha256(data).hexdigest()
    assert storage.archive_path(workload.pk, snapshot.archive).read_bytes() == data
    assert snapshot.file_count == 1 and snapshot.volume_count == 2
    assert EventLog.objects.filter(workload=workload, message="Imported snapshot #%(id)d.")
    assert leftovers() == []


@pytest.mark.parametrize("name", ["symlink", "dotdot-inside", "absolute-into-canary",
                                  "too-many-entries", "truncated", "trailing-garbage",
                                  "missing-manifest", "not-compressed", "duplicate-file"])
def test_a_hostile_upload_gets_400_and_leaves_nothing(name, api_as, operator, volume_workload,
                                                      tmp_path, settings):
    workload, _paths = volume_workload
    settings.BERTH_SNAPSHOT_MAX_ENTRIES = hostile.LIMITS.max_entries
    case = next(c for c in hostile.corpus(str(tmp_path / "canary")) if c.name == name)

    response = upload(api_as(operator), workload, case.data)

    assert response.status_code == 400
    [message] = response.json()["archive"]
    assert message and "Traceback" not in message
    assert not Snapshot.objects.exists()
    assert archive_files(workload) == [] and leftovers() == []


def test_an_archive_with_more_volumes_than_the_workload_is_refused(api_as, operator,
                                                                    make_workload, tmp_path):
    workload = make_workload()  # no volumes at all
    (tmp_path / "v").mkdir()
    response = upload(api_as(operator), workload, archive_of([tmp_path / "v"]))
    assert response.status_code == 400
    assert "only 0 volume" in response.json()["archive"][0]


def test_an_upload_over_the_cap_is_refused_with_413(api_as, operator, volume_workload,
                                                    settings):
    workload, _paths = volume_workload
    settings.BERTH_SNAPSHOT_MAX_UPLOAD_BYTES = 100_000
    response = upload(api_as(operator), workload, os.urandom(300_000))
    assert response.status_code == 413
    assert not Snapshot.objects.exists() and leftovers() == []


def test_the_cap_holds_while_receiving_too(api_as, operator, volume_workload, settings,
                                           monkeypatch):
    from web.api import uploads

    workload, _paths = volume_workload
    settings.BERTH_SNAPSHOT_MAX_UPLOAD_BYTES = 100_000
    monkeypatch.setattr(uploads, "FRAMING_BYTES", 10**9)  # a Content-Length that lies
    response = upload(api_as(operator), workload, os.urandom(300_000))
    assert response.status_code == 413
    assert leftovers() == []


def test_an_import_without_the_file_field_is_a_clear_400(api_as, operator, volume_workload):
    workload, _paths = volume_workload
    response = api_as(operator).post(
        f"/api/workloads/{workload.pk}/snapshots/import",
        {"other": SimpleUploadedFile("x.tar.zst", b"data")}, format="multipart",
    )
    assert response.status_code == 400
    assert "archive" in response.json()
    assert leftovers() == []


def test_an_import_as_json_is_refused(api_as, operator, volume_workload):
    workload, _paths = volume_workload
    response = api_as(operator).post(f"/api/workloads/{workload.pk}/snapshots/import",
                                     {"archive": "x"}, format="json")
    assert response.status_code == 415


def test_an_import_that_runs_out_of_space_answers_507(api_as, operator, volume_workload,
                                                      settings):
    workload, _paths = volume_workload
    settings.BERTH_SNAPSHOT_RESERVE_BYTES = 1 << 62
    data = hostile.archive(hostile.member("volumes/0/f", b"x"), volumes=[(1, 1, 1)])
    response = upload(api_as(operator), workload, data)
    assert response.status_code == 507
    assert leftovers() == [] and not Snapshot.objects.exists()


# --- permissions ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("who", "method", "path", "expected"),
    [
        ("anonymous", "get", "", 401),
        ("outsider", "get", "", 403),
        ("viewer", "get", "", 200),
        ("operator", "get", "", 200),
        ("anonymous", "post", "", 401),
        ("outsider", "post", "", 403),
        ("viewer", "post", "", 403),
        ("operator", "post", "", 202),
        ("viewer", "get", "/{sid}", 200),
        ("outsider", "get", "/{sid}", 403),
        ("anonymous", "get", "/{sid}/download", 401),
        ("outsider", "get", "/{sid}/download", 403),
        ("viewer", "get", "/{sid}/download", 403),
        ("operator", "get", "/{sid}/download", 200),
        ("anonymous", "delete", "/{sid}", 401),
        ("outsider", "delete", "/{sid}", 403),
        ("viewer", "delete", "/{sid}", 403),
        ("operator", "delete", "/{sid}", 204),
        ("anonymous", "import", "/import", 401),
        ("outsider", "import", "/import", 403),
        ("viewer", "import", "/import", 403),
        ("operator", "import", "/import", 201),
        ("viewer", "put", "/{sid}", 405),
        ("operator", "patch", "/{sid}", 405),
    ],
)
def test_permission_matrix(who, method, path, expected, request, volume_workload):
    workload, _paths = volume_workload
    snapshot = ready(workload)
    client = APIClient()
    if who != "anonymous":
        client.force_authenticate(request.getfixturevalue(who))
    url = f"/api/workloads/{workload.pk}/snapshots" + path.format(sid=snapshot.pk)
    if method == "import":
        data = storage.archive_path(workload.pk, snapshot.archive).read_bytes()
        response = client.post(url, {"archive": SimpleUploadedFile("s.tar.zst", data)},
                               format="multipart")
    else:
        response = getattr(client, method)(url, HTTP_X_CONFIRM_DELETE=workload.path)
    assert response.status_code == expected
    if expected in (401, 403):
        assert Snapshot.objects.count() == 1 and leftovers() == []


@pytest.mark.parametrize(("who", "expected"),
                         [("viewer", 403), ("outsider", 403), ("operator", 201)])
def test_session_uploads_are_received_only_after_the_permission_check(
    who, expected, request, volume_workload, monkeypatch, tmp_path
):
    """With session auth the CSRF check must not read (and so receive) the body."""
    workload, _paths = volume_workload
    opened: list[str] = []
    real = storage.open_temp

    def watch(directory, prefix=".tmp-"):
        fd, path = real(directory, prefix)
        opened.append(str(path))
        return fd, path

    monkeypatch.setattr(storage, "open_temp", watch)
    client = Client(enforce_csrf_checks=True)
    client.force_login(request.getfixturevalue(who))
    token = "a" * 32
    client.cookies["csrftoken"] = token
    archive = io.BytesIO(archive_of([tmp_path]))
    archive.name = "a.tar.zst"
    response = client.post(f"/api/workloads/{workload.pk}/snapshots/import",
                           {"archive": archive}, headers={"X-CSRFToken": token})
    assert response.status_code == expected, response.content
    received = any(".upload-" in path for path in opened)
    assert received == (expected == 201)  # nothing written for a caller who may not import
    assert leftovers() == []


def test_the_schema_documents_the_snapshot_endpoints(api_as, operator):
    schema = api_as(operator).get("/api/schema", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in ("/api/workloads/{workload_pk}/snapshots",
                 "/api/workloads/{workload_pk}/snapshots/import",
                 "/api/workloads/{workload_pk}/snapshots/{id}/download"):
        assert path in text
