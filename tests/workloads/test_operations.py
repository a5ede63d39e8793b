"""Start, stop and restart: an operator's verbs on real containers, through the API and the
command, with the permission and the workload's lock."""

from __future__ import annotations

import io
import json
import subprocess
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from engine import deploys, operations
from lib import locks
from tests.fixtures import forking
from workloads.models import DeployRecord, EventLog, Workload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]


@pytest.fixture
def running(docker, current_tag, make_workload) -> Workload:
    workload = make_workload(replicas=2)
    deployed = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    assert deployed.outcome == DeployRecord.Outcome.SUCCEEDED, deployed.failure_code
    workload.refresh_from_db()
    return workload


def engine_states(workload: Workload) -> list[tuple[str, str]]:
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"name={workload.container_prefix}-",
                          "--format", "{{json .}}"], capture_output=True, text=True,
                         check=True).stdout
    return sorted((row["Names"], row["State"]) for row in map(json.loads, out.splitlines()))


def started_at(name: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", "{{.State.StartedAt}}", name],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_the_api_stops_starts_and_restarts_every_replica(api_as, operator, running):
    api = api_as(operator)
    url = f"/api/workloads/{running.pk}"

    stopped = api.post(f"{url}/stop")
    assert stopped.status_code == 200, stopped.content
    assert stopped.json()["state"] == "stopped"
    assert {state for _name, state in engine_states(running)} == {"exited"}
    assert DeployRecord.objects.filter(workload=running).count() == 1  # not a deploy

    started = api.post(f"{url}/start")
    assert started.status_code == 200 and started.json()["state"] == "running"
    assert {state for _name, state in engine_states(running)} == {"running"}

    before = started_at(running.container_name(1))
    assert api.post(f"{url}/restart").status_code == 200
    assert started_at(running.container_name(1)) != before
    assert list(EventLog.objects.filter(workload=running).values_list(
        "message", flat=True)[:3]) == ["Restarted the workload's containers.",
                                       "Started the workload's containers.",
                                       "Stopped the workload's containers."]


def test_a_stopped_workload_stays_stopped_when_the_engine_restarts_its_containers(running):
    operations.operate(workload=running, action="stop")
    # `unless-stopped`: what Docker does for its containers when it starts again.
    out = subprocess.run(["docker", "inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}",
                          running.container_name(1)], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "unless-stopped"
    from engine import sweep

    sweep.recover_all()  # Berth's own start-up work starts nothing either
    assert {state for _name, state in engine_states(running)} == {"exited"}


@pytest.mark.django_db(transaction=True)  # the forked holder of the lock reads the rows
def test_permission_lock_and_bad_input(api_as, viewer, operator, running, make_workload,
                                       tmp_path):
    url = f"/api/workloads/{running.pk}"
    assert api_as(viewer).post(f"{url}/stop").status_code == 403
    api = api_as(operator)
    ready = tmp_path / "held"

    def hold() -> None:  # a deploy, restore or capture under way, in another process
        with locks.workload_lock(running.pk):
            ready.write_text("yes")
            time.sleep(30)

    holder = forking.fork(hold)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert time.monotonic() < deadline and holder.poll() is None
            time.sleep(0.05)
        busy = api.post(f"{url}/stop")
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert busy.status_code == 409 and "under way" in busy.json()["detail"]
    never = make_workload()
    assert api.post(f"/api/workloads/{never.pk}/start").status_code == 409
    assert api.post("/api/workloads/999999/start").status_code == 404
    assert api.get(f"{url}/start").status_code == 405
    assert {state for _name, state in engine_states(running)} == {"running"}


def test_the_command(running):
    out = io.StringIO()
    call_command("operate", str(running.pk), "stop", stdout=out)
    assert "Stopped by an operator" in out.getvalue()
    call_command("operate", str(running.pk), "start", stdout=out)
    with pytest.raises(CommandError):
        call_command("operate", "999999", "start")


def test_the_page_stops_and_starts_it_with_the_permission_only(client, viewer, operator,
                                                               running):
    client.force_login(viewer)
    assert client.post(f"/workloads/{running.pk}/stop").status_code == 403
    assert 'hx-confirm="Stop every container' not in client.get(
        f"/workloads/{running.pk}/").content.decode()
    client.force_login(operator)
    page = client.get(f"/workloads/{running.pk}/").content.decode()
    assert 'hx-confirm="Stop every container' in page
    panel = client.post(f"/workloads/{running.pk}/stop", HTTP_HX_REQUEST="true")
    assert panel.status_code == 200 and "Stopped by an operator" in panel.content.decode()
    assert {state for _name, state in engine_states(running)} == {"exited"}
    client.post(f"/workloads/{running.pk}/start", HTTP_HX_REQUEST="true")
    assert {state for _name, state in engine_states(running)} == {"running"}
    # The metrics panel's own URL is not taken for an action.
    assert client.get(f"/workloads/{running.pk}/metrics").status_code == 200
