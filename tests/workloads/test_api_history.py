"""GET /api/workloads/{id}/deploys and POST /api/workloads/{id}/rollback."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from engine import deploys
from lib import runtime
from tests.conftest import container_image_digest, move_current_tag, registry_digest
from tests.fixtures import images
from workloads.models import DeployRecord, Workload

Reason, Outcome = DeployRecord.Reason, DeployRecord.Outcome
PINNED = f"{images.HTTPD}@sha256:{'b' * 64}"


def finished(workload: Workload, *, outcome=Outcome.SUCCEEDED, pinned=PINNED, **fields):
    """A ledger row as a finished deploy leaves it, without running one."""
    record = DeployRecord.open(workload=workload, reason=Reason.MANUAL)
    DeployRecord.objects.filter(pk=record.pk).update(
        outcome=outcome, pinned_reference=pinned, **fields
    )
    record.refresh_from_db()
    return record


# --- the ledger -------------------------------------------------------------

@pytest.mark.django_db
def test_it_lists_the_ledger_newest_first_and_paginated(api_as, viewer, workload):
    rows = [finished(workload) for _ in range(25)]
    client = api_as(viewer)

    response = client.get(f"/api/workloads/{workload.pk}/deploys")

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 25
    assert [d["id"] for d in body["results"]] == [r.pk for r in reversed(rows[5:])]
    assert body["next"].endswith(f"/api/workloads/{workload.pk}/deploys?page=2")
    rest = client.get(body["next"]).json()["results"]
    assert [d["id"] for d in rest] == [r.pk for r in reversed(rows[:5])]
    small = client.get(f"/api/workloads/{workload.pk}/deploys?page_size=2").json()
    assert [d["id"] for d in small["results"]] == [rows[24].pk, rows[23].pk]
    first = body["results"][0]
    assert first["pinned_reference"] == PINNED and first["outcome"] == "succeeded"


@pytest.mark.django_db
def test_a_workloads_ledger_never_shows_another_workloads_rows(api_as, viewer, make_workload):
    mine, theirs = make_workload(), make_workload()
    own = {finished(mine).pk for _ in range(2)} | {finished(mine, outcome=Outcome.FAILED).pk}
    foreign = {finished(theirs).pk for _ in range(3)}

    listed = api_as(viewer).get(f"/api/workloads/{mine.pk}/deploys").json()["results"]

    assert {d["id"] for d in listed} == own
    assert not {d["id"] for d in listed} & foreign
    assert {d["workload"] for d in listed} == {mine.pk}


@pytest.mark.django_db
def test_the_ledger_query_count_does_not_grow(api_as, viewer, workload):
    def queries() -> int:
        # A fresh request user each time, as in production: the permission
        # checks, the workload with its parents, the count, one page of deploys
        # joined with their users.
        viewer.refresh_from_db()
        for cache in ("_perm_cache", "_user_perm_cache", "_group_perm_cache"):
            viewer.__dict__.pop(cache, None)
        with CaptureQueriesContext(connection) as captured:
            assert api_as(viewer).get(f"/api/workloads/{workload.pk}/deploys").status_code == 200
        return len(captured.captured_queries)

    finished(workload)
    one = queries()
    for _ in range(10):
        finished(workload, user=viewer)
    assert queries() == one == 5


@pytest.mark.django_db
@pytest.mark.parametrize(("who", "status"), [(None, 401), ("outsider", 403), ("viewer", 200)])
def test_the_ledger_permission_matrix(request, api, api_as, workload, who, status):
    client = api_as(request.getfixturevalue(who)) if who else api
    assert client.get(f"/api/workloads/{workload.pk}/deploys").status_code == status


@pytest.mark.django_db
def test_an_unknown_workload_has_no_ledger(api_as, viewer):
    assert api_as(viewer).get("/api/workloads/999999/deploys").status_code == 404


# --- rollback guards (nothing changes) -------------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize(
    ("make_target", "status", "message"),
    [
        (lambda w, o: finished(o), 404, None),
        (lambda w, o: finished(w, outcome=Outcome.FAILED, failure_code="pull_failed"), 409,
         "did not succeed"),
        (lambda w, o: finished(w, pinned=""), 409, "no pinned reference"),
        (lambda w, o: finished(w, source_kind="git", pinned="c" * 40), 409,
         "another source kind"),
    ],
    ids=["another-workloads-deploy", "failed-deploy", "unpinned-deploy", "other-source-kind"],
)
def test_rollback_guards(api_as, operator, make_workload, make_target, status, message):
    workload, other = make_workload(), make_workload()
    target = make_target(workload, other)
    before = DeployRecord.objects.count()

    response = api_as(operator).post(
        f"/api/workloads/{workload.pk}/rollback", {"deploy_id": target.pk}, format="json"
    )

    assert response.status_code == status, response.content
    if message:
        assert message in response.json()["detail"]
    assert DeployRecord.objects.count() == before


@pytest.mark.django_db
@pytest.mark.parametrize("body", [{}, {"deploy_id": "one"}, {"deploy_id": 0}, None])
def test_rollback_needs_a_deploy_id(api_as, operator, workload, body):
    before = DeployRecord.objects.count()
    url = f"/api/workloads/{workload.pk}/rollback"
    client = api_as(operator)
    if body is None:
        response = client.post(url, "{not json", content_type="application/json")
    else:
        response = client.post(url, body, format="json")
    assert response.status_code == 400
    if body == {}:
        assert "deploy_id" in response.json()
    assert DeployRecord.objects.count() == before


@pytest.mark.django_db
@pytest.mark.parametrize(("who", "status"), [(None, 401), ("outsider", 403), ("viewer", 403)])
def test_rollback_permission_matrix(request, api, api_as, workload, who, status):
    target = finished(workload)
    client = api_as(request.getfixturevalue(who)) if who else api
    before = DeployRecord.objects.count()

    response = client.post(
        f"/api/workloads/{workload.pk}/rollback", {"deploy_id": target.pk}, format="json"
    )

    assert response.status_code == status
    assert DeployRecord.objects.count() == before


@pytest.mark.django_db
def test_rollback_on_an_unknown_workload_is_404(api_as, operator):
    response = api_as(operator).post("/api/workloads/999999/rollback", {"deploy_id": 1})
    assert response.status_code == 404


# --- a real rollback ---------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.usefixtures("commits_as_in_production")
def test_a_real_rollback_through_the_api(docker, current_tag, api_as, operator, workload):
    client = api_as(operator)
    first = client.post(f"/api/workloads/{workload.pk}/deploy").json()
    move_current_tag("v2")
    second = client.post(f"/api/workloads/{workload.pk}/deploy").json()
    v1 = f"{images.CURRENT_REPOSITORY}@{registry_digest(images.HTTPD_V1)}"
    v2 = f"{images.CURRENT_REPOSITORY}@{registry_digest(images.HTTPD_V2)}"
    assert client.get(first["url"]).json()["pinned_reference"] == v1
    assert client.get(second["url"]).json()["pinned_reference"] == v2

    response = client.post(
        f"/api/workloads/{workload.pk}/rollback", {"deploy_id": first["id"]}, format="json"
    )

    assert response.status_code == 202
    assert response["Location"] == f"/api/deploys/{response.json()['id']}"
    rolled = client.get(response["Location"]).json()
    assert rolled["outcome"] == "succeeded", rolled["failure_code"]
    assert rolled["reason"] == "rollback"
    assert rolled["rolled_back_from"] == first["id"]
    assert rolled["pinned_reference"] == v1
    [container] = runtime.list_containers(workload.pk)
    assert container.running and container_image_digest(container.id) == v1
    history = client.get(f"/api/workloads/{workload.pk}/deploys").json()["results"]
    assert [(d["reason"], d["rolled_back_from"]) for d in history] == [
        ("rollback", first["id"]), ("api", None), ("api", None)
    ]


@pytest.mark.django_db
@pytest.mark.usefixtures("commits_as_in_production")
def test_rollback_goes_through_dispatch(docker, current_tag, api_as, operator, workload,
                                        monkeypatch):
    calls = []
    real = deploys.dispatch
    monkeypatch.setattr(deploys, "dispatch", lambda **kw: calls.append(kw) or real(**kw))
    first = deploys.dispatch(workload=workload, reason=Reason.MANUAL)
    calls.clear()

    api_as(operator).post(
        f"/api/workloads/{workload.pk}/rollback", {"deploy_id": first.pk}, format="json"
    )

    [call] = calls
    assert call["reason"] == Reason.ROLLBACK and call["record"].rolled_back_from_id == first.pk


# --- secrets round-trip --------------------------------------------------------

@pytest.mark.django_db
def test_a_secret_read_back_as_null_is_kept_on_patch(api_as, operator, workload):
    client = api_as(operator)
    url = f"/api/workloads/{workload.pk}"
    env = [{"name": "TOKEN", "value": "keep-me-8a1", "is_secret": True},
           {"name": "MODE", "value": "prod", "is_secret": False}]
    assert client.patch(url, {"env": env}, format="json").status_code == 200
    read_back = client.get(url).json()["env"]
    assert {e["name"]: e["value"] for e in read_back} == {"TOKEN": None, "MODE": "prod"}

    response = client.patch(url, {"env": read_back}, format="json")

    assert response.status_code == 200, response.content
    stored = {e.name: e.get_value() for e in workload.env_vars.all()}
    assert stored == {"TOKEN": "keep-me-8a1", "MODE": "prod"}


@pytest.mark.django_db
@pytest.mark.parametrize("is_secret", [True, False])
def test_a_null_value_for_an_unknown_secret_is_refused(api_as, operator, workload, is_secret):
    response = api_as(operator).patch(
        f"/api/workloads/{workload.pk}",
        {"env": [{"name": "NEW", "value": None, "is_secret": is_secret}]}, format="json",
    )
    assert response.status_code == 400
    assert "NEW needs a value" in str(response.json()["env"])
    assert not workload.env_vars.exists()
