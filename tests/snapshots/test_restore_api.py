"""The restore API: confirmation header, permissions, CSRF, single flight, following a job."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from engine import queue, tasks
from snapshots.models import RestoreJob, Snapshot
from tests.fixtures import forking
from tests.snapshots.restoring import journals, strays, trees

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]


def url(workload, snapshot) -> str:
    return f"/api/workloads/{workload.pk}/snapshots/{snapshot.pk}/restore"


def confirmed(workload) -> dict:
    return {"HTTP_X_CONFIRM_RESTORE": workload.path}


@pytest.fixture
def queued_only(monkeypatch):
    """Keep restores queued: the task is not run, so a job stays active."""
    enqueued: list[int] = []
    real = queue.enqueue

    def enqueue(task: str, row_id: int, *, name: str) -> None:
        if task == queue.RESTORE:
            enqueued.append(row_id)
        else:
            real(task, row_id, name=name)

    monkeypatch.setattr(queue, "enqueue", enqueue)
    return enqueued


# --- the happy path -----------------------------------------------------------------------

def test_it_answers_202_and_the_job_can_be_followed(api_as, operator, snapshotted, queued_only):
    workload, paths, snapshot, wanted = snapshotted
    client = api_as(operator)

    response = client.post(url(workload, snapshot), **confirmed(workload))

    assert response.status_code == 202, response.content
    body = response.json()
    assert response["Location"] == body["url"] == f"/api/restores/{body['id']}"
    assert body["state"] == "queued" and body["phase"] == "queued" and body["outcome"] == ""
    assert body["progress"] == {"bytes_done": 0, "bytes_total": snapshot.data_bytes}
    assert body["user"] == operator.username and body["snapshot"] == snapshot.pk
    assert queued_only == [body["id"]]

    tasks.run_restore(body["id"])

    followed = client.get(body["url"]).json()
    assert followed["state"] == "finished" and followed["outcome"] == "succeeded"
    assert followed["phase"] == "done" and followed["phase_display"] == "Done"
    assert followed["progress"] == {"bytes_done": snapshot.data_bytes,
                                    "bytes_total": snapshot.data_bytes}
    kept = Snapshot.objects.get(pk=followed["pre_restore_snapshot"])
    assert kept.kind == "pre_restore"
    assert trees(paths) == wanted


def test_with_tasks_run_at_once_the_restore_has_finished_by_the_answer(api_as, operator,
                                                                       snapshotted):
    workload, paths, snapshot, wanted = snapshotted
    response = api_as(operator).post(url(workload, snapshot), **confirmed(workload))
    assert response.status_code == 202
    assert response.json()["outcome"] == "succeeded"
    assert trees(paths) == wanted


def test_a_second_restore_gets_409_with_a_link_to_the_active_one(api_as, operator, snapshotted,
                                                                 queued_only):
    workload, paths, snapshot, _wanted = snapshotted
    client = api_as(operator)
    first = client.post(url(workload, snapshot), **confirmed(workload))

    second = client.post(url(workload, snapshot), **confirmed(workload))

    assert first.status_code == 202 and second.status_code == 409
    assert second.json()["active_restore"] == first.json()["url"] == second["Location"]
    assert "Another restore of this workload" in second.json()["detail"]
    assert RestoreJob.objects.count() == 1

    tasks.run_restore(first.json()["id"])
    third = client.post(url(workload, snapshot), **confirmed(workload))
    assert third.status_code == 202  # once the first is over, the next may run


def test_a_snapshot_that_is_not_ready_is_a_conflict(api_as, operator, snapshotted):
    workload, _paths, _snapshot, _wanted = snapshotted
    failed = Snapshot.objects.create(workload=workload, state=Snapshot.State.FAILED)
    response = api_as(operator).post(url(workload, failed), **confirmed(workload))
    assert response.status_code == 409 and "not ready" in response.json()["detail"]
    assert not RestoreJob.objects.exists()


# --- header, permission and CSRF matrix ------------------------------------------------------

@pytest.mark.parametrize(("who", "header", "expected"), [
    (None, "path", 401),
    ("outsider", "path", 403),
    ("viewer", "path", 403),
    ("viewer", None, 403),
    ("operator", None, 428),
    ("operator", "", 428),
    ("operator", "wrong", 428),
    ("operator", "upper", 428),
    ("operator", "slug", 428),  # unique only within its stage: not enough
    ("operator", "path", 202),
])
def test_the_header_and_permission_matrix(who, header, expected, request, api, snapshotted,
                                          queued_only):
    workload, paths, snapshot, _wanted = snapshotted
    before = trees(paths)
    if who:
        api.force_authenticate(request.getfixturevalue(who))
    headers = {}
    if header is not None:
        value = {"path": workload.path, "slug": workload.slug, "upper": workload.path.upper(),
                 "wrong": "other", "": ""}[header]
        headers["HTTP_X_CONFIRM_RESTORE"] = value

    response = api.post(url(workload, snapshot), **headers)

    assert response.status_code == expected, response.content
    if expected == 428:
        detail = response.json()["detail"]
        assert "X-Confirm-Restore" in detail and workload.path in detail
    if expected != 202:
        assert not RestoreJob.objects.exists() and queued_only == []
        assert trees(paths) == before


def test_another_workloads_snapshot_is_not_found(api_as, operator, snapshotted, make_workload):
    workload, paths, snapshot, _wanted = snapshotted
    other = make_workload(slug="other")
    client = api_as(operator)
    assert client.post(url(other, snapshot), **confirmed(other)).status_code == 404
    assert client.post(f"/api/workloads/999999/snapshots/{snapshot.pk}/restore",
                       HTTP_X_CONFIRM_RESTORE="web").status_code == 404
    assert client.post(f"/api/workloads/{workload.pk}/snapshots/999999/restore",
                       **confirmed(workload)).status_code == 404
    assert client.get(url(workload, snapshot)).status_code == 405
    assert not RestoreJob.objects.exists()


def test_session_auth_needs_the_csrf_token(operator, snapshotted, queued_only):
    workload, _paths, snapshot, _wanted = snapshotted
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(operator)

    refused = client.post(url(workload, snapshot), **confirmed(workload))

    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    assert not RestoreJob.objects.exists()
    client.get("/login/")
    token = client.cookies["csrftoken"].value
    accepted = client.post(url(workload, snapshot), HTTP_X_CSRFTOKEN=token,
                           **confirmed(workload))
    assert accepted.status_code == 202, accepted.content


def test_token_auth_needs_no_csrf_token(operator, snapshotted, queued_only):
    workload, _paths, snapshot, _wanted = snapshotted
    token = Token.objects.create(user=operator)
    client = Client(enforce_csrf_checks=True)
    response = client.post(url(workload, snapshot), HTTP_AUTHORIZATION=f"Token {token.key}",
                           **confirmed(workload))
    assert response.status_code == 202, response.content


@pytest.mark.parametrize(("who", "expected"), [(None, 401), ("outsider", 403),
                                               ("viewer", 200), ("operator", 200)])
def test_following_a_restore_needs_the_view_permission(who, expected, request, api,
                                                       snapshotted):
    workload, _paths, snapshot, _wanted = snapshotted
    job = RestoreJob.objects.create(workload=workload, snapshot=snapshot)
    if who:
        api.force_authenticate(request.getfixturevalue(who))
    assert api.get(f"/api/restores/{job.pk}").status_code == expected
    assert api.get("/api/restores").status_code == expected


def test_the_restore_list_query_count_does_not_grow(api_as, viewer, snapshotted):
    workload, _paths, snapshot, _wanted = snapshotted

    def queries() -> int:
        # A fresh request user: the permission checks, the count, one page of jobs
        # joined with their users.
        viewer.refresh_from_db()
        for cache in ("_perm_cache", "_user_perm_cache", "_group_perm_cache"):
            viewer.__dict__.pop(cache, None)
        with CaptureQueriesContext(connection) as captured:
            assert api_as(viewer).get("/api/restores").status_code == 200
        return len(captured.captured_queries)

    RestoreJob.objects.create(workload=workload, snapshot=snapshot, state="finished")
    one = queries()
    for _ in range(4):
        RestoreJob.objects.create(workload=workload, snapshot=snapshot, state="finished",
                                  user=viewer)
    assert queries() == one == 4


def test_the_schema_documents_the_restore_endpoints(api_as, operator):
    text = api_as(operator).get("/api/schema", HTTP_ACCEPT="application/json").content.decode()
    assert "/api/workloads/{workload_pk}/snapshots/{id}/restore" in text
    assert "/api/restores/{id}" in text and "X-Confirm-Restore" in text


# --- across processes ---------------------------------------------------------------------------

# Two processes ask for a restore of the same workload at the same instant.
CHILD_REQUEST = """
import os, sys, time
import django
django.setup()
from engine import queue, restores
from snapshots.models import Snapshot
from workloads.models import Workload
queue.enqueue = lambda task, row_id, name: None
workload = Workload.objects.with_parents().get(pk=int(sys.argv[1]))
snapshot = Snapshot.objects.get(pk=int(sys.argv[2]))
while not os.path.exists(sys.argv[3]):
    time.sleep(0.005)
try:
    job = restores.request_restore(workload=workload, snapshot=snapshot)
    print("queued", job.pk, flush=True)
except restores.RestoreBusy as exc:
    print("busy", exc.active.pk if exc.active else "-", flush=True)
"""


@pytest.mark.django_db(transaction=True)  # child processes read what it wrote
def test_two_processes_at_once_get_one_job(snapshotted, tmp_path):
    workload, paths, snapshot, _wanted = snapshotted
    go = tmp_path / "go"
    children = [
        forking.run_code(CHILD_REQUEST, str(workload.pk), str(snapshot.pk), str(go))
        for _ in range(2)
    ]
    go.touch()
    answers = []
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        answers.append(out.split())
    [job] = RestoreJob.objects.all()
    assert sorted(answers) == [["busy", str(job.pk)], ["queued", str(job.pk)]]
    assert job.state == RestoreJob.State.QUEUED


def test_a_killed_restore_does_not_block_the_next_one(api_as, operator, snapshotted):
    """A running job whose process died (no journal, lock free) is closed on the next request."""
    workload, paths, snapshot, wanted = snapshotted
    dead = RestoreJob.objects.create(workload=workload, snapshot=snapshot, state="running")
    response = api_as(operator).post(url(workload, snapshot), **confirmed(workload))
    assert response.status_code == 202, response.content
    dead.refresh_from_db()
    assert dead.outcome == RestoreJob.Outcome.FAILED and "interrupted" in dead.reason_text
    assert trees(paths) == wanted and strays(paths) == [] and journals() == []

