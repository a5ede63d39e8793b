"""Live state from the engine: the follower (engine/live.py) in a thread, real containers
stopped, killed, OOM-killed and crash-looping behind Berth's back, and what the API says."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connections

from engine import deploys, live
from lib import locks, runtime
from tests.fixtures import forking, images
from workloads.models import Container, DeployRecord, EventLog, Workload

pytestmark = [pytest.mark.django_db(transaction=True)]  # the follower's thread reads the rows

# The test images built here from the local busybox, in this run's own repositories.
CRASH = f"{images.REGISTRY}/berth-test/{images.CURRENT_TAG}/crash:v1"
OOM = f"{images.REGISTRY}/berth-test/{images.CURRENT_TAG}/oom:v1"
SICK = f"{images.REGISTRY}/berth-test/{images.CURRENT_TAG}/sick:v1"
# Long enough for the deploy to finish (its start check needs a running container).
RUNS_FOR = 2
DOCKERFILES = {
    CRASH: f'FROM {images.BUSYBOX}\nCMD ["sh", "-c", "sleep {RUNS_FOR}; echo crashing; exit 3"]',
    # `tail` keeps every byte of an endless line: it outgrows any memory limit.
    OOM: f'FROM {images.BUSYBOX}\nCMD ["sh", "-c", "sleep {RUNS_FOR}; tail /dev/zero"]',
    # Serves, and passes its health check (so its deploy succeeds) until /sick exists.
    SICK: f"FROM {images.HTTPD_V1}\nHEALTHCHECK --interval=1s --timeout=1s --retries=1 "
          "CMD test ! -e /sick",
}
WITHIN = 2.0  # seconds from an event to the API showing it


@pytest.fixture(scope="module")
def test_images(docker_engine) -> Iterator[None]:
    for name, dockerfile in DOCKERFILES.items():
        subprocess.run(["docker", "build", "-q", "-t", name, "-"], input=dockerfile + "\n",
                       text=True,
                       check=True, capture_output=True, env={"DOCKER_BUILDKIT": "0",
                                                             "PATH": "/usr/bin:/bin"})
        subprocess.run(["docker", "push", name], check=True, capture_output=True)
    yield
    # The tags are this run's own: untag them, so a developer's engine does not keep one per run.
    for name in DOCKERFILES:
        subprocess.run(["docker", "rmi", name], check=False, capture_output=True)


@pytest.fixture
def follower(docker) -> Iterator[live.Follower]:
    """A follower running in a thread (short windows), until the test ends."""
    running = start_follower()
    yield running.follower
    running.stop()


class Running:
    def __init__(self) -> None:
        self.follower = live.Follower(window=0.5, retry=0.2)
        self.event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.follower.run(self.event)
        finally:
            connections.close_all()

    def stop(self) -> None:
        self.event.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


def start_follower() -> Running:
    running = Running()
    running.thread.start()
    wait_for(lambda: running.follower.cursor is not None, timeout=10)  # reconciled once
    return running


def wait_for(check: Callable[[], object], *, timeout: float = WITHIN) -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def deployed(make_workload, image: str = images.HTTPD_V1, **fields) -> Workload:
    workload = make_workload(image=image, **fields)
    record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    assert record.outcome == DeployRecord.Outcome.SUCCEEDED, record.failure_code
    workload.refresh_from_db()
    return workload


def docker_cli(*args: str) -> None:
    subprocess.run(["docker", *args], check=True, capture_output=True)


def live_in_api(api, workload: Workload) -> dict:
    response = api.get(f"/api/workloads/{workload.pk}")
    assert response.status_code == 200
    return response.json()["live"]


def containers_in_api(api, workload: Workload) -> list[dict]:
    response = api.get(f"/api/workloads/{workload.pk}/containers")
    assert response.status_code == 200
    return response.json()["results"]


def deaths(workload: Workload) -> list[str]:
    return [e.text for e in EventLog.objects.filter(workload=workload,
                                                    message__in=live.DEATH_MESSAGES)]


# --- behind Berth's back -------------------------------------------------------------

def test_it_shows_a_docker_stop_in_the_api_within_two_seconds(
    follower, make_workload, api_as, viewer
):
    workload = deployed(make_workload)
    api = api_as(viewer)
    assert live_in_api(api, workload)["state"] == "running"

    # The test httpd ignores SIGTERM: `docker stop -t 1` kills it after a second (137).
    docker_cli("stop", "-t", "1", workload.container_name(1))

    state = wait_for(lambda: live_in_api(api, workload)["state"] == "exited")
    found = live_in_api(api, workload)
    assert state, found
    assert found["exit_code"] == 137 and found["detail"] == "exit code 137"
    [container] = containers_in_api(api, workload)
    assert container["state"] == "exited" and container["exit_code"] == 137
    assert container["oom_killed"] is False and container["state_since"]
    # The death is an event in the log; Berth's record of the workload is unchanged.
    expected = [f"Container {workload.container_name(1)} exited with code 137."]
    assert wait_for(lambda: deaths(workload) == expected), deaths(workload)
    workload.refresh_from_db()
    assert workload.state == Workload.State.RUNNING

    docker_cli("start", workload.container_name(1))
    assert wait_for(lambda: live_in_api(api, workload)["state"] == "running")


def test_it_shows_a_killed_replica_as_degraded(follower, make_workload, api_as, viewer):
    workload = deployed(make_workload, replicas=2)
    api = api_as(viewer)

    docker_cli("kill", workload.container_name(2))

    assert wait_for(lambda: live_in_api(api, workload)["state"] == "degraded")
    found = live_in_api(api, workload)
    assert (found["up"], found["replicas"], found["exit_code"]) == (1, 2, 137)
    assert found["detail"] == "1 of 2 up, exit code 137"
    by_replica = {c["replica"]: c for c in containers_in_api(api, workload)}
    assert by_replica[1]["state"] == "running" and by_replica[2]["state"] == "exited"


def test_it_shows_a_container_killed_for_lack_of_memory(
    follower, test_images, make_workload, api_as, viewer
):
    workload = deployed(make_workload, image=OOM, memory_limit_mib=8)
    api = api_as(viewer)
    limit = subprocess.run(["docker", "inspect", "-f", "{{.HostConfig.Memory}}",
                            workload.container_name(1)], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert limit == str(8 * 1024 * 1024)

    # Killed RUNS_FOR seconds after it started; the engine then restarts it (its policy).
    oom = wait_for(lambda: live_in_api(api, workload)["oom_killed"], timeout=RUNS_FOR + WITHIN)
    found = live_in_api(api, workload)
    assert oom, found
    assert found["state"] == "restarting" and found["detail"] == "out of memory"
    [container] = containers_in_api(api, workload)
    assert container["oom_killed"] is True and container["exit_code"] == 137
    assert deaths(workload) == [
        f"Container {workload.container_name(1)} ran out of memory."]


def test_it_shows_a_crash_loop_as_restarting_with_its_exit_code(
    follower, test_images, make_workload, api_as, viewer
):
    workload = deployed(make_workload, image=CRASH)
    api = api_as(viewer)

    crashed = wait_for(lambda: live_in_api(api, workload)["state"] == "restarting",
                       timeout=RUNS_FOR + WITHIN)
    found = live_in_api(api, workload)
    assert crashed, found
    assert found["exit_code"] == 3 and found["detail"] == "exit code 3"
    # It keeps crashing: the engine restarts it, and the log has one line for it, not one
    # per crash.
    assert wait_for(lambda: containers_in_api(api, workload)[0]["restart_count"] >= 2,
                    timeout=2 * RUNS_FOR + WITHIN)
    assert live_in_api(api, workload)["state"] == "restarting"
    assert deaths(workload) == [f"Container {workload.container_name(1)} exited with code 3."]


def test_it_shows_a_failing_health_check_as_unhealthy(
    follower, test_images, make_workload, api_as, viewer
):
    workload = deployed(make_workload, image=SICK)
    api = api_as(viewer)
    [running] = runtime.list_containers(workload.pk)
    subprocess.run(["docker", "exec", running.id, "touch", "/sick"], check=True)

    # The next probe runs within a second, and fails.
    assert wait_for(lambda: live_in_api(api, workload)["state"] == "unhealthy",
                    timeout=1 + WITHIN + 1)
    [container] = containers_in_api(api, workload)
    assert (container["state"], container["health"]) == ("running", "unhealthy")
    assert deaths(workload) == []  # it runs: not a death


# --- what Berth does itself -----------------------------------------------------------

def test_an_operators_stop_shows_stopped_and_is_no_death(follower, make_workload, api_as,
                                                         operator):
    workload = deployed(make_workload)
    api = api_as(operator)

    assert api.post(f"/api/workloads/{workload.pk}/stop").status_code == 200

    assert wait_for(lambda: containers_in_api(api, workload)[0]["state"] == "exited")
    assert live_in_api(api, workload)["state"] == "stopped"
    time.sleep(1)  # a late death event would be written by now
    assert deaths(workload) == []
    assert api.post(f"/api/workloads/{workload.pk}/start").status_code == 200
    assert wait_for(lambda: containers_in_api(api, workload)[0]["state"] == "running")
    assert live_in_api(api, workload)["state"] == "running"


def test_a_redeploy_is_no_death(follower, make_workload):
    workload = deployed(make_workload)

    record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)

    assert record.outcome == DeployRecord.Outcome.SUCCEEDED
    time.sleep(1.5)  # the old container's death events have been applied by now
    assert deaths(workload) == []
    [row] = Container.objects.live().filter(workload=workload)
    assert row.state == "running"


def test_a_container_run_by_hand_from_a_berth_image_is_not_taken_on(docker, make_workload):
    workload = deployed(make_workload)
    [berths] = runtime.list_containers(workload.pk)
    # An image as an earlier Berth built it from git: the workload's labels on the image.
    tag = f"{images.REGISTRY}/berth-test/{images.CURRENT_TAG}/by-hand:v1"
    labels = runtime.labels_for(workload.pk, **{runtime.DEPLOY_LABEL: "1",
                                                runtime.COMMIT_LABEL: "0" * 40})
    subprocess.run(["docker", "build", "-q", "-t", tag,
                    *[arg for item in labels.items() for arg in ("--label", "=".join(item))],
                    "-"], input=f"FROM {images.BUSYBOX}\n", text=True, check=True,
                   capture_output=True, env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/bin:/bin"})
    # An operator debugs by hand: `docker run <image>`, which inherits the image's labels.
    by_hand = subprocess.run(["docker", "run", "-d", tag, "sh", "-c", "sleep 1; exit 3"],
                             capture_output=True, text=True, check=True).stdout.strip()
    try:
        follower = live.Follower(window=0.5)
        follower.reconcile()
        time.sleep(2)  # it has died
        follower.follow_window()
        follower.reconcile()

        assert not Container.objects.filter(docker_id=by_hand).exists()
        assert [c.id for c in runtime.list_containers(workload.pk)] == [berths.id]
        assert deaths(workload) == []
        assert Container.objects.live().get(workload=workload).state == "running"
    finally:
        subprocess.run(["docker", "rm", "-f", by_hand], capture_output=True, check=False)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, check=False)


# --- a follower that was down ------------------------------------------------------------

def test_the_reconcile_after_a_restart_catches_a_death_missed_while_down(
    docker, make_workload, api_as, viewer
):
    workload = deployed(make_workload)
    api = api_as(viewer)
    first = start_follower()
    first.stop()

    docker_cli("kill", workload.container_name(1))  # nobody is watching
    time.sleep(0.5)
    assert live_in_api(api, workload)["state"] == "running"  # the index does not know yet

    second = start_follower()  # its first step is the reconcile
    try:
        found = live_in_api(api, workload)
        assert (found["state"], found["exit_code"]) == ("exited", 137)
        assert deaths(workload) == [
            f"Container {workload.container_name(1)} exited with code 137."]
    finally:
        second.stop()


def test_a_lost_stream_is_reconciled_and_followed_again(docker, make_workload, monkeypatch):
    workload = deployed(make_workload)
    follower = live.Follower(window=0.5, retry=0.1)
    follower.follow_window()
    assert follower.cursor is not None

    def broken(**window):
        raise runtime.EngineUnreachable("the stream broke")
        yield  # a generator, as runtime.events is

    with monkeypatch.context() as patch:
        patch.setattr(runtime, "events", broken)  # a lost stream, which cannot be made here
        stop = threading.Event()
        thread = threading.Thread(target=lambda: (follower.run(stop), connections.close_all()))
        thread.start()
        assert wait_for(lambda: follower.engine_down)
        docker_cli("kill", workload.container_name(1))
        stop.set()
        thread.join(10)
    assert follower.cursor is None  # it reconciles before following again

    follower.follow_window()

    row = Container.objects.live().get(workload=workload)
    assert (row.state, row.exit_code) == ("exited", 137)


# --- the parts --------------------------------------------------------------------------

def test_held_by_anyone_sees_a_held_lock_without_taking_it(docker, workload):
    assert not locks.held_by_anyone(workload.pk)
    with locks.workload_lock(workload.pk):
        assert locks.held_by_anyone(workload.pk)
        # It only read /proc/locks: the holder still holds its lock.
        assert locks.is_held(workload.pk)
    assert not locks.held_by_anyone(workload.pk)


def test_the_command_follows_until_sigterm(docker):
    child = forking.run_command("follow_engine")
    assert "Following the Docker engine" in child.stdout.readline()  # its handler is set

    child.send_signal(signal.SIGTERM)

    assert child.wait(timeout=15) == 0
    out, err = child.communicate()
    assert "Event follower stopped." in out
    assert "Traceback" not in err


def test_make_run_starts_the_follower_beside_the_sampler():
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    run = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    script = (Path(__file__).resolve().parents[2] / "scripts" / "run.sh").read_text()
    assert "./scripts/run.sh" in run and '"${manage[@]}" follow_engine &' in script
