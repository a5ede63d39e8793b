"""A workload's live state derived from its containers, the engine's answers parsed, and the
polled fragments that show it (no engine needed: the rows are written here)."""

from __future__ import annotations

import http.server
import socketserver
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from lib import runtime
from tests.workloads.test_views import DIGEST, htmx_get, logged_in
from workloads.models import Container, EventLog, Workload, live_summary

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def replica(n: int, state: str = "running", **fields) -> Container:
    return Container(replica=n, name=f"web-{n}", docker_id=f"{n:064d}", state=state, **fields)


def summary(*containers: Container, state: str = Workload.State.RUNNING):
    return live_summary(Workload(state=state), list(containers), now=NOW)


# --- derived from the containers ----------------------------------------------------------

def test_every_replica_up_is_running():
    found = summary(replica(1), replica(2, state=""))  # "": just deployed, not seen yet
    assert (found.state, found.up, found.replicas, found.detail) == ("running", 2, 2, "")


def test_some_replica_down_is_degraded_with_how_it_ended():
    found = summary(replica(1), replica(2, "exited", exit_code=137))
    assert (found.state, found.detail) == ("degraded", "1 of 2 up, exit code 137")


def test_every_replica_ended_is_exited_with_the_worst_ending_first():
    found = summary(replica(1, "exited", exit_code=0), replica(2, "exited", exit_code=3))
    assert (found.state, found.exit_code, found.detail) == ("exited", 3, "exit code 3")
    oom = summary(replica(1, "exited", exit_code=3), replica(2, "dead", exit_code=137,
                                                            oom_killed=True))
    assert (oom.state, oom.oom_killed, oom.detail) == ("exited", True, "out of memory")


def test_a_crash_loop_is_restarting_between_its_crashes_too():
    restarting = summary(replica(1, "restarting", exit_code=1, restart_count=4))
    assert (restarting.state, restarting.detail) == ("restarting", "exit code 1")
    just_restarted = replica(1, "running", exit_code=1, restart_count=4,
                             state_since=NOW - timedelta(seconds=5))
    assert summary(just_restarted).state == "restarting"
    settled = replica(1, "running", exit_code=1, restart_count=4,
                      state_since=NOW - timedelta(minutes=5))
    assert summary(settled).state == "running"


def test_running_but_unhealthy_is_unhealthy():
    assert summary(replica(1, health="unhealthy")).state == "unhealthy"
    assert summary(replica(1, health="healthy"), replica(2, health="unhealthy")).state == \
        "degraded"


def test_what_berth_decided_stays_as_it_is_whatever_the_containers_say():
    ended = replica(1, "exited", exit_code=137)
    for state in ("new", "deploying", "stopped", "failed"):
        assert summary(ended, state=state).state == state


def test_a_running_workload_without_containers_is_gone():
    assert summary().state == "gone"


# --- the engine's answers -----------------------------------------------------------------

def test_it_reads_an_inspect_of_a_container_that_ended():
    state = runtime.parse_state({
        "Id": "abc", "Name": "/web-1", "RestartCount": 2, "Created": "2026-12-06T10:00:00Z",
        "Config": {"Labels": {"berth.workload": "7"}},
        "State": {"Status": "exited", "ExitCode": 137, "OOMKilled": True,
                  "StartedAt": "2026-12-06T11:00:00.123456789Z",
                  "FinishedAt": "2026-12-06T11:05:00.5Z",
                  "Health": {"Status": "unhealthy"}},
    })
    assert (state.name, state.status, state.exit_code, state.oom_killed) == (
        "web-1", "exited", 137, True)
    assert (state.restart_count, state.health) == (2, "unhealthy")
    assert state.since == datetime(2026, 12, 6, 11, 5, 0, 500000, tzinfo=UTC)


@pytest.mark.parametrize(("name", "labels", "berths"), [
    ("berth-shop-prod-web-2", {"berth.replica": "2"}, True),
    ("/berth-shop-prod-web-2", {"berth.replica": "2"}, True),  # the engine's list answer
    ("berth-shop-prod-web-2.deploy-9", {"berth.replica": "2", "berth.deploy": "9"}, True),
    ("berth-shop-prod-web-2.deploy-9", {"berth.replica": "2", "berth.deploy": "8"}, False),
    ("berth-shop-prod-web-2", {"berth.replica": "1"}, False),
    # What `docker run` of an image Berth built inherits: no replica, a name of its own.
    ("quirky_hopper", {"berth.deploy": "9", "berth.commit": "0" * 40}, False),
    ("quirky_hopper", {"berth.replica": "1"}, False),
    ("berth-shop-prod-web", {"berth.replica": "1"}, False),
])
def test_a_container_is_taken_on_only_with_a_name_berth_gives(name, labels, berths, settings):
    labels = {"berth.instance": settings.BERTH_INSTANCE_ID, "berth.workload": "7", **labels}

    assert runtime.made_by_berth(labels, name) is berths
    assert not runtime.made_by_berth({**labels, "berth.instance": "another"}, name)
    assert not runtime.made_by_berth({k: v for k, v in labels.items()
                                      if k != "berth.workload"}, name)


def test_a_built_image_carries_labels_of_its_own(settings):
    labels = runtime.image_labels_for(7, **{runtime.DEPLOY_LABEL: "9"})

    assert labels == {"berth.image.instance": settings.BERTH_INSTANCE_ID,
                      "berth.image.workload": "7", "berth.image.deploy": "9"}


def test_a_running_container_has_no_exit_code_and_runs_since_it_started():
    state = runtime.parse_state({
        "Id": "abc", "Name": "/web-1", "State": {
            "Status": "running", "ExitCode": 0, "OOMKilled": False,
            "StartedAt": "2026-12-06T11:00:00Z", "FinishedAt": "0001-01-01T00:00:00Z"}})
    assert (state.exit_code, state.oom_killed, state.health) == (None, False, "")
    assert state.since == datetime(2026, 12, 6, 11, 0, tzinfo=UTC)


def test_it_reads_the_engines_events_and_skips_others():
    die = runtime._event({"Type": "container", "Action": "die", "timeNano": 5,
                          "Actor": {"ID": "abc", "Attributes": {"exitCode": "3"}}})
    assert (die.action, die.container_id, die.exit_code, die.time_nano) == ("die", "abc", 3, 5)
    health = runtime._event({"Action": "health_status: unhealthy", "time": 2,
                             "Actor": {"ID": "abc"}})
    assert (health.action, health.detail, health.time_nano) == (
        "health_status", "unhealthy", 2_000_000_000)
    assert runtime._event({"Action": "exec_start: sh", "Actor": {"ID": "abc"}}) is None


# --- a window of events, applied once per container ---------------------------------------

def event(action: str, container_id: str, n: int, detail: str = "", **attributes: str):
    return runtime.EngineEvent(action=action, detail=detail, container_id=container_id,
                               time_nano=n, attributes=attributes)


def engine_state(container_id: str, status: str = "running", **fields) -> runtime.ContainerState:
    return runtime.ContainerState(**{
        "id": container_id, "name": "web-1", "labels": {}, "status": status,
        "exit_code": None, "oom_killed": False, "restart_count": 0, "health": "healthy",
        "since": NOW} | fields)


@pytest.fixture
def window(monkeypatch):
    """Run one follower window over `events`, the engine answering `states`; the inspects."""
    from engine import live

    inspected: list[str] = []

    def run(events, states: dict[str, runtime.ContainerState]) -> int:
        def inspect_state(container_id):
            inspected.append(container_id)
            return states.get(container_id)

        monkeypatch.setattr(runtime, "events", lambda **kw: iter(events))
        monkeypatch.setattr(runtime, "inspect_state", inspect_state)
        follower = live.Follower(window=0.01)
        follower.cursor = time.time_ns()
        return follower.follow_window()

    run.inspected = inspected
    return run


def test_a_flood_of_events_is_one_inspect_and_one_write_per_container(
    window, workload, django_assert_num_queries
):
    row = Container.objects.create(workload=workload, replica=1, name="web-1",
                                   docker_id="f" * 64, state="running", health="starting")
    flood = [event("health_status", row.docker_id, n, "healthy") for n in range(2000)]
    flood += [event("start", "e" * 64, n) for n in range(5)]  # a container Berth does not index

    # The window's indexed containers, in one query; then the one row's UPDATE.
    with django_assert_num_queries(2):
        read = window(flood, {row.docker_id: engine_state(row.docker_id)})

    assert read == 2005 and window.inspected == [row.docker_id]
    row.refresh_from_db()
    assert (row.state, row.health) == ("running", "healthy")


def test_a_crash_loop_in_one_window_is_one_death_and_its_last_ending(window, workload):
    Workload.objects.filter(pk=workload.pk).update(state=Workload.State.RUNNING)
    row = Container.objects.create(workload=workload, replica=1, name="web-1",
                                   docker_id="c" * 64, state="running")
    loop = []
    for n in range(0, 40, 4):
        loop += [event("die", row.docker_id, n, exitCode="3"),
                 event("restart", row.docker_id, n + 1), event("start", row.docker_id, n + 2)]
    loop.append(event("die", row.docker_id, 99, exitCode="3"))

    window(loop, {row.docker_id: engine_state(row.docker_id, "restarting", exit_code=3,
                                               restart_count=10)})

    assert window.inspected == [row.docker_id]
    assert [e.text for e in EventLog.objects.filter(workload=workload)] == [
        "Container web-1 exited with code 3."]
    row.refresh_from_db()
    assert (row.state, row.exit_code, row.restart_count) == ("restarting", 3, 10)


def test_a_container_restarted_within_the_window_keeps_how_it_ended(window, workload):
    row = Container.objects.create(workload=workload, replica=1, name="web-1",
                                   docker_id="b" * 64, state="running")
    events = [event("die", row.docker_id, 1, exitCode="3"), event("start", row.docker_id, 2)]

    window(events, {row.docker_id: engine_state(row.docker_id, restart_count=1)})

    row.refresh_from_db()
    assert (row.state, row.exit_code, row.oom_killed, row.restart_count) == (
        "running", 3, False, 1)


def test_an_oom_before_its_die_in_one_window_is_one_oom_death(window, workload):
    Workload.objects.filter(pk=workload.pk).update(state=Workload.State.RUNNING)
    row = Container.objects.create(workload=workload, replica=1, name="web-1",
                                   docker_id="d" * 64, state="running")
    events = [event("oom", row.docker_id, 1), event("die", row.docker_id, 2, exitCode="137")]

    # Restarted by its policy before the window ended: the inspect no longer says OOM.
    window(events, {row.docker_id: engine_state(row.docker_id, restart_count=1)})

    assert [e.text for e in EventLog.objects.filter(workload=workload)] == [
        "Container web-1 ran out of memory."]
    row.refresh_from_db()
    assert (row.exit_code, row.oom_killed) == (137, True)


def test_a_container_removed_within_the_window_is_marked_removed(window, workload):
    row = Container.objects.create(workload=workload, replica=1, name="web-1",
                                   docker_id="a" * 64, state="running")

    window([event("die", row.docker_id, 1, exitCode="0"),
            event("destroy", row.docker_id, 2)], {})

    row.refresh_from_db()
    assert row.removed is not None


# --- the polled fragments -------------------------------------------------------------

@pytest.fixture
def exited(workload) -> Workload:
    Container.objects.create(
        workload=workload, docker_id="d" * 64, name=workload.container_name(1), replica=1,
        image_reference=DIGEST, state="exited", exit_code=3, state_since=timezone.now(),
    )
    workload.mark_deployed(DIGEST)
    EventLog.objects.create(workload=workload, message="Container %(container)s exited "
                            "with code %(code)s.", params={"container": "web-1", "code": 3})
    return workload


def test_the_workload_pages_live_panel_shows_the_state_the_badge_and_the_events(
    client, viewer, exited
):
    r = htmx_get(logged_in(client, viewer), f"/workloads/{exited.pk}/live")

    assert r.status_code == 200
    html = r.content.decode()
    assert html.lstrip().startswith('<section id="live-state"')
    assert 'hx-trigger="every 3s' in html  # it keeps polling
    assert f'id="state-badge-{exited.pk}"' in html and 'hx-swap-oob="true"' in html
    assert 'data-state="exited"' in html and "exit code 3" in html
    assert 'data-engine-state="exited"' in html
    assert "Container web-1 exited with code 3." in html


def test_the_dashboard_polls_every_workloads_badge(client, viewer, exited, make_workload):
    never = make_workload(slug="other")
    page = logged_in(client, viewer).get("/").content.decode()
    assert 'hx-get="/live"' in page and 'data-state="exited"' in page

    r = htmx_get(client, "/live")

    assert r.status_code == 200
    html = r.content.decode()
    assert html.count('hx-swap-oob="true"') == 2
    assert f'id="state-badge-{exited.pk}"' in html and f'id="state-badge-{never.pk}"' in html


@pytest.mark.parametrize("url", ["/live", "/workloads/{pk}/live"])
def test_the_live_fragments_need_the_view_permission(client, outsider, workload, url):
    url = url.format(pk=workload.pk)
    assert client.get(url).status_code == 302  # to the login page
    assert logged_in(client, outsider).get(url).status_code == 403
    assert client.post(url).status_code == 405


def test_the_live_panel_of_a_workload_that_does_not_exist_is_404(client, viewer):
    assert logged_in(client, viewer).get("/workloads/999999/live").status_code == 404


def test_the_api_shows_the_live_state_of_a_workload_and_its_containers(api_as, viewer, exited):
    api = api_as(viewer)
    live = api.get(f"/api/workloads/{exited.pk}").json()["live"]
    assert live == {"state": "exited", "label": "Exited", "detail": "exit code 3", "replicas": 1,
                    "up": 0, "exit_code": 3, "oom_killed": False, "restart_count": 0,
                    "since": live["since"]}
    [container] = api.get(f"/api/workloads/{exited.pk}/containers").json()["results"]
    assert (container["state"], container["exit_code"], container["health"]) == (
        "exited", 3, "")


# --- the memory limit ---------------------------------------------------------------------

def test_the_api_sets_a_memory_limit_and_refuses_one_too_small(api_as, operator, workload):
    api = api_as(operator)
    url = f"/api/workloads/{workload.pk}"

    refused = api.patch(url, {"memory_limit_mib": 2}, format="json")

    assert refused.status_code == 400
    assert "memory_limit_mib" in refused.json()
    workload.refresh_from_db()
    assert workload.memory_limit_mib is None  # nothing changed

    assert api.patch(url, {"memory_limit_mib": 64}, format="json").status_code == 200
    workload.refresh_from_db()
    assert workload.memory_limit_mib == 64
    assert api.patch(url, {"memory_limit_mib": None}, format="json").json()[
        "memory_limit_mib"] is None


# --- a hung engine ---------------------------------------------------------------------------

class _HungEngine(http.server.BaseHTTPRequestHandler):
    """Answers the client's version question, then opens every event stream and says nothing."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        if self.path.endswith("/version"):
            body = b'{"ApiVersion": "1.41", "Version": "20.10.24"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        self.server.hang.wait(30)

    def log_message(self, *args) -> None:
        pass


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def test_an_event_stream_that_stays_silent_past_its_window_counts_as_lost(
    tmp_path, monkeypatch
):
    server = _UnixServer(str(tmp_path / "docker.sock"), _HungEngine)
    server.hang = threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'docker.sock'}")
    monkeypatch.setattr(runtime, "EVENTS_GRACE_SECONDS", 0.5)
    raised: list[BaseException] = []

    def read() -> None:
        now = time.time_ns()
        try:
            list(runtime.events(since_nano=now, until_nano=now + 500_000_000))
        except runtime.EngineError as exc:
            raised.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    try:
        reader.start()
        reader.join(30)  # generous: the read times out a second after it starts
        assert not reader.is_alive(), "the reader still waits on a silent engine"
        assert [type(exc) for exc in raised] == [runtime.EngineUnreachable]
        assert "timed out" in raised[0].raw.lower(), raised[0].raw  # not refused: it waited
    finally:
        server.hang.set()
        server.shutdown()
        server.server_close()
