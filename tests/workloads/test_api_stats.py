"""GET /api/workloads/{id}/stats/history."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from tests.workloads.stats_data import MIB, container, deploy, sample, ticks
from workloads.models import DeployRecord

pytestmark = pytest.mark.django_db


def test_it_answers_points_and_markers_for_a_window(api_as, viewer, make_workload):
    web, other = make_workload(), make_workload()
    now = timezone.now()
    at = ticks(now, every=15, count=3)
    sample(container(web), at, cpu=12.5, memory=123 * MIB)
    sample(container(web, replica=2), at, cpu=7.5, memory=5 * MIB)
    sample(container(other), at, cpu=80.0, memory=999 * MIB)
    rollback = deploy(web, at=now - timedelta(minutes=3), reason=DeployRecord.Reason.ROLLBACK)

    response = api_as(viewer).get(f"/api/workloads/{web.pk}/stats/history?window=15m")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["window"] == "15m" and body["step_seconds"] == 15
    assert body["points"] == [
        {"t": t.isoformat().replace("+00:00", "Z"), "cpu_percent": 20.0,
         "memory_bytes": 128 * MIB, "containers": 2}
        for t in at
    ]
    assert body["markers"] == [{
        "t": rollback.finished.isoformat().replace("+00:00", "Z"), "kind": "rollback",
        "outcome": "succeeded", "deploy": rollback.pk,
    }]
    start, end = parse_datetime(body["start"]), parse_datetime(body["end"])
    assert start <= at[0] and end >= at[-1]


def test_it_defaults_to_one_hour_and_answers_an_empty_history(api_as, viewer, workload):
    body = api_as(viewer).get(f"/api/workloads/{workload.pk}/stats/history").json()
    assert (body["window"], body["step_seconds"], body["points"], body["markers"]) == (
        "1h", 15, [], []
    )


@pytest.mark.parametrize("window", ["2h", "", "1H", "7d ", "15"])
def test_it_refuses_an_unknown_window(api_as, viewer, workload, window):
    response = api_as(viewer).get(
        f"/api/workloads/{workload.pk}/stats/history", {"window": window}
    )
    assert response.status_code == 400
    assert "15m, 1h, 6h, 24h, 7d" in response.json()["window"][0]


@pytest.mark.parametrize(("who", "status"), [(None, 401), ("outsider", 403), ("viewer", 200)])
def test_the_history_permission_matrix(request, api, api_as, workload, who, status):
    client = api_as(request.getfixturevalue(who)) if who else api
    assert client.get(f"/api/workloads/{workload.pk}/stats/history").status_code == status


def test_an_unknown_workload_has_no_history(api_as, viewer):
    assert api_as(viewer).get("/api/workloads/999999/stats/history").status_code == 404


def test_the_history_refuses_writes(api_as, operator, workload):
    response = api_as(operator).post(f"/api/workloads/{workload.pk}/stats/history")
    assert response.status_code == 405


def test_the_history_query_count_does_not_grow(
    api_as, viewer, make_workload, django_assert_num_queries
):
    web = make_workload()
    client = api_as(viewer)

    def fetch() -> dict:
        # A fresh request user, as in production: 1 the user's own permissions,
        # 2 their groups' permissions, 3 the workload with its stage and
        # project, 4 where its rollups end (24 h is read from them), 5 the
        # samples per bucket, 6 the deploy markers.
        viewer.refresh_from_db()
        for cache in ("_perm_cache", "_user_perm_cache", "_group_perm_cache"):
            viewer.__dict__.pop(cache, None)
        with django_assert_num_queries(6):
            response = client.get(f"/api/workloads/{web.pk}/stats/history?window=24h")
        assert response.status_code == 200
        return response.json()

    assert fetch()["points"] == []
    now = timezone.now()
    for replica in range(1, 11):
        sample(container(web, replica=replica), ticks(now, every=15, count=400), cpu=1.0,
               memory=MIB)
        deploy(web, at=now - timedelta(minutes=replica))
    body = fetch()
    assert body["step_seconds"] == 120 and len(body["markers"]) == 10
    assert {p["containers"] for p in body["points"]} == {10}


def test_the_schema_documents_the_history(api_as, viewer):
    schema = api_as(viewer).get("/api/schema?format=json").json()
    operation = schema["paths"]["/api/workloads/{id}/stats/history"]["get"]
    (window,) = operation["parameters"][1:]
    assert window["name"] == "window"
    assert sorted(window["schema"]["enum"]) == sorted(["15m", "1h", "6h", "24h", "7d"])
