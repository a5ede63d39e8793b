"""POST /api/workloads/{id}/deploy through the task queue and dispatch(), on the real engine."""

from __future__ import annotations

import pytest

from engine import deploys
from lib import runtime
from tests.conftest import container_image_digest, registry_digest
from tests.fixtures import images
from workloads.models import Container, DeployRecord, Workload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]

CLOSED_SOCKET = "unix:///nonexistent/closed.sock"


@pytest.fixture
def dispatch_calls(monkeypatch) -> list[dict]:
    """Record every call to deploys.dispatch and let the real one run."""
    calls: list[dict] = []
    real = deploys.dispatch

    def spy(**kwargs) -> DeployRecord:
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(deploys, "dispatch", spy)
    return calls


def test_it_deploys_through_the_api(
    docker, current_tag, api_as, operator, make_workload, dispatch_calls
):
    workload = make_workload()
    client = api_as(operator)

    response = client.post(f"/api/workloads/{workload.pk}/deploy")

    assert response.status_code == 202
    record = DeployRecord.objects.get(workload=workload)
    assert response.json()["id"] == record.pk
    assert response.json()["url"] == f"/api/deploys/{record.pk}"
    assert response["Location"] == f"/api/deploys/{record.pk}"

    followed = client.get(response["Location"])

    assert followed.status_code == 200
    deploy = followed.json()
    assert deploy["outcome"] == "succeeded", deploy["failure_code"]
    pinned = f"{images.CURRENT_REPOSITORY}@{registry_digest(images.HTTPD_V1)}"
    assert deploy["pinned_reference"] == pinned
    assert deploy["pinned_reference"].startswith(f"{images.CURRENT_REPOSITORY}@sha256:")
    assert deploy["reason"] == "api"
    assert deploy["user"] == operator.username
    assert deploy["failure_code"] == "" and deploy["failure_message"] == ""

    [call] = dispatch_calls
    assert call["reason"] == DeployRecord.Reason.API
    assert call["workload"].pk == workload.pk
    assert call["record"].pk == record.pk
    assert call["user"] == operator

    [running] = runtime.list_containers(workload.pk)
    assert running.running
    assert container_image_digest(running.id) == pinned
    containers = client.get(f"/api/workloads/{workload.pk}/containers")
    assert containers.status_code == 200
    [listed] = containers.json()["results"]
    assert listed["docker_id"] == running.id
    assert listed["name"] == workload.container_name(1) == running.name
    assert listed["image_reference"] == pinned
    assert listed["removed"] is None

    workload.refresh_from_db()
    assert workload.state == Workload.State.RUNNING
    assert workload.running_reference == pinned
    record.refresh_from_db()
    assert record.outcome == DeployRecord.Outcome.SUCCEEDED


def test_it_reports_an_unreachable_engine_without_its_text(
    api_as, operator, make_workload, monkeypatch, dispatch_calls, caplog
):
    monkeypatch.setenv("DOCKER_HOST", CLOSED_SOCKET)
    workload = make_workload()
    client = api_as(operator)

    response = client.post(f"/api/workloads/{workload.pk}/deploy")

    assert response.status_code == 202
    followed = client.get(response["Location"])
    assert followed.status_code == 200
    deploy = followed.json()
    assert deploy["outcome"] == "failed"
    assert deploy["failure_code"] == "engine_unreachable"
    assert deploy["failure_message"] == "The Docker engine is unreachable."
    assert [call["reason"] for call in dispatch_calls] == ["api"]
    assert not Container.objects.filter(workload=workload).exists()
    # The raw Docker error goes to the server log only.
    [logged] = [r.getMessage() for r in caplog.records if r.name == "engine.locked.deploy"]
    raw = logged.split("(engine_unreachable): ", 1)[1]
    assert "Error while fetching server API version" in raw
    for body in (response.content, followed.content):
        assert raw.encode() not in body
        assert b"Error while fetching" not in body and b"Connection aborted" not in body
    workload.refresh_from_db()
    assert workload.state == Workload.State.FAILED
    assert workload.running_reference == ""
    record = DeployRecord.objects.get(workload=workload)
    assert record.failure_code == DeployRecord.Failure.ENGINE_UNREACHABLE


def test_it_refuses_a_viewer_and_runs_nothing(api_as, viewer, workload, dispatch_calls):
    response = api_as(viewer).post(f"/api/workloads/{workload.pk}/deploy")

    assert response.status_code == 403
    assert dispatch_calls == []
    assert not DeployRecord.objects.exists()
    workload.refresh_from_db()
    assert workload.state == Workload.State.NEW


def test_it_answers_404_for_an_unknown_workload(api_as, operator, dispatch_calls):
    response = api_as(operator).post("/api/workloads/999999/deploy")

    assert response.status_code == 404
    assert dispatch_calls == []
    assert not DeployRecord.objects.exists()


def test_it_lets_a_viewer_follow_a_deploy(api_as, operator, viewer, make_workload, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", CLOSED_SOCKET)
    workload = make_workload()
    location = api_as(operator).post(f"/api/workloads/{workload.pk}/deploy")["Location"]

    followed = api_as(viewer).get(location)

    assert followed.status_code == 200
    assert followed.json()["workload"] == workload.pk
    assert followed.json()["user"] == operator.username
