"""The stats sampler, step by step: tick, prune, reconcile, and the loop that runs them."""

from __future__ import annotations

import json
import logging
import re
import signal
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from engine.sampler import Sampler, cpu_percent
from lib import runtime
from tests.conftest import REPO_ROOT, child_env
from tests.fixtures import images
from tests.workloads.stats_data import MIB, container, deploy, sample, ticks
from workloads.models import Container, ContainerStatsSample, DeployRecord, Workload

CLOSED_SOCKET = "unix:///nonexistent/closed.sock"
BUSY_LOOP = "while :; do :; done"
HOLD_64_MIB = "head -c 67108864 /dev/zero > /dev/shm/x && touch /dev/shm/ready; sleep 3600"


# --- helpers ---------------------------------------------------------------------

def run_labelled(
    workload: Workload | None, command: str, *, instance: str | None = None,
    berth_name: bool = True, **labels: str
) -> str:
    """`docker run -d` of the busybox image with Berth's labels and, unless `berth_name` is
    false, a name of the form Berth gives (runtime.made_by_berth); returns the container id.

    The docker fixture removes it afterwards (it carries this run's instance
    label) unless `instance` names another installation.
    """
    labels = {
        runtime.INSTANCE_LABEL: instance or settings.BERTH_INSTANCE_ID,
        **({runtime.WORKLOAD_LABEL: str(workload.pk)} if workload else {}),
        runtime.REPLICA_LABEL: "1",
        **labels,
    }
    args = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
    if berth_name:
        replica = labels[runtime.REPLICA_LABEL]
        args += ["--name", f"berth-test-{uuid.uuid4().hex[:12]}-{replica}"]
    # 96 MiB of /dev/shm: room for the 64 MiB the memory test holds there.
    return subprocess.run(
        ["docker", "run", "-d", "--shm-size", "96m", *args, images.BUSYBOX, "sh", "-c", command],
        capture_output=True, text=True, check=True,
    ).stdout.strip()


def wait_for_file(container_id: str, path: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = subprocess.run(["docker", "exec", container_id, "test", "-e", path],
                               capture_output=True, check=False)
        if probe.returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} never appeared in {container_id[:12]}")


def docker_stats_memory(container_id: str) -> float:
    """The memory `docker stats --no-stream` shows, in bytes."""
    out = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", container_id],
        capture_output=True, text=True, check=True,
    ).stdout
    value, unit = re.match(r"([\d.]+)([KMG]i?B|B)", out.strip()).groups()
    return float(value) * {"B": 1, "KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB}[unit]


def reading(cpu_total: int, system_cpu: int, *, cpus: int = 2) -> runtime.StatsReading:
    return runtime.StatsReading(
        cpu_total=cpu_total, system_cpu=system_cpu, online_cpus=cpus,
        memory_bytes=MIB, memory_limit=512 * MIB,
    )


# --- what a reading means ------------------------------------------------------------

def test_cpu_percent_is_computed_the_way_docker_stats_computes_it():
    # Half of the system's time on a 2-CPU host: one CPU fully busy, 100 %.
    assert cpu_percent(reading(1_000, 10_000), reading(3_000, 14_000)) == pytest.approx(100.0)
    assert cpu_percent(reading(1_000, 10_000), reading(1_000, 14_000)) == 0.0
    # Counters that restarted, or no system time between the readings: no value.
    assert cpu_percent(reading(5_000, 10_000), reading(1_000, 14_000)) is None
    assert cpu_percent(reading(1_000, 10_000), reading(2_000, 10_000)) is None


def test_memory_is_usage_minus_the_inactive_file_cache_on_cgroup_v1_and_v2():
    def raw(memory_stats: dict) -> dict:
        cpu = {"cpu_usage": {"total_usage": 5, "percpu_usage": [2, 3]}, "system_cpu_usage": 9}
        return {"cpu_stats": cpu, "memory_stats": memory_stats}

    v1 = runtime.parse_stats(raw({"usage": 100, "limit": 800, "stats": {
        "total_inactive_file": 30, "inactive_file": 99}}))
    v2 = runtime.parse_stats(raw({"usage": 100, "limit": 800, "stats": {"inactive_file": 40}}))
    odd = runtime.parse_stats(raw({"usage": 100, "stats": {"total_inactive_file": 500}}))
    assert (v1.memory_bytes, v1.memory_limit, v1.online_cpus) == (70, 800, 2)
    assert v2.memory_bytes == 60
    assert odd.memory_bytes == 100


def test_a_stopped_containers_zeroed_stats_are_no_reading():
    stopped = {"read": "0001-01-01T00:00:00Z", "memory_stats": {},
               "cpu_stats": {"cpu_usage": {"total_usage": 0}}}
    assert runtime.parse_stats(stopped) is None


# --- the real engine -------------------------------------------------------------------

@pytest.mark.alone
@pytest.mark.django_db
@pytest.mark.usefixtures("commits_as_in_production")
def test_it_shows_a_busy_loop_above_half_a_cpu_within_two_ticks(docker, workload):
    busy = run_labelled(workload, BUSY_LOOP)
    sampler = Sampler()

    assert sampler.reconcile().indexed == [busy]
    first = sampler.tick()
    time.sleep(2)  # a longer window between the readings: less noise from a busy host
    second = sampler.tick()

    assert (first.primed, first.written) == (1, 0)  # a one-shot reading has no previous values
    assert second.written == 1
    [row] = ContainerStatsSample.objects.filter(container__docker_id=busy)
    assert row.cpu_percent > 50.0
    assert row.timestamp == second.at
    assert row.memory_limit > 0


@pytest.mark.django_db
@pytest.mark.usefixtures("commits_as_in_production")
def test_it_shows_a_container_holding_64_mib_within_ten_percent(docker, workload):
    holder = run_labelled(workload, HOLD_64_MIB)
    wait_for_file(holder, "/dev/shm/ready")
    sampler = Sampler()
    sampler.reconcile()

    sampler.tick()
    sampler.tick()

    [row] = ContainerStatsSample.objects.filter(container__docker_id=holder)
    assert row.memory_bytes == pytest.approx(64 * MIB, rel=0.10)
    # And what docker stats shows for it, the same way.
    assert row.memory_bytes == pytest.approx(docker_stats_memory(holder), rel=0.10)


@pytest.mark.django_db
@pytest.mark.usefixtures("commits_as_in_production")
def test_it_writes_one_timestamp_per_tick_for_all_containers_in_bulk(docker, make_workload):
    web, other = make_workload(), make_workload()
    ids = [run_labelled(web, "sleep 3600"), run_labelled(web, "sleep 3600"),
           run_labelled(other, "sleep 3600")]
    sampler = Sampler()
    sampler.reconcile()
    sampler.tick()

    with CaptureQueriesContext(connection) as queries:
        result = sampler.tick()

    assert result.written == 3
    inserts = [q for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 1
    rows = ContainerStatsSample.objects.filter(container__docker_id__in=ids)
    assert set(rows.values_list("timestamp", flat=True)) == {result.at}
    by_workload = dict(rows.values_list("container__docker_id", "container__workload"))
    assert by_workload == {ids[0]: web.pk, ids[1]: web.pk, ids[2]: other.pk}


@pytest.mark.django_db
@pytest.mark.usefixtures("commits_as_in_production")
def test_it_survives_a_container_removed_mid_tick(docker, workload, monkeypatch):
    doomed, survivor = run_labelled(workload, "sleep 3600"), run_labelled(workload, "sleep 3600")
    sampler = Sampler()
    sampler.reconcile()
    sampler.tick()
    real_stats = runtime._stats

    def remove_first(api, container_id, one_shot):
        # The tick has listed both containers; this one goes before it is read.
        if container_id == doomed:
            subprocess.run(["docker", "rm", "-f", doomed], capture_output=True, check=True)
        return real_stats(api, container_id, one_shot)

    monkeypatch.setattr(runtime, "_stats", remove_first)
    result = sampler.tick()

    assert (result.written, result.missing, result.failed) == (1, 1, 0)
    assert ContainerStatsSample.objects.filter(container__docker_id=survivor).count() == 1
    assert doomed not in sampler.previous
    # The next reconcile marks the vanished container removed; the survivor stays live.
    assert sampler.reconcile().marked_removed == [doomed]
    assert Container.objects.get(docker_id=doomed).removed is not None
    assert Container.objects.get(docker_id=survivor).removed is None


@pytest.mark.django_db
@pytest.mark.usefixtures("commits_as_in_production")
def test_a_stats_call_that_hangs_does_not_hold_up_the_other_containers(
    docker, workload, monkeypatch
):
    stuck, *others = [run_labelled(workload, "sleep 3600") for _ in range(4)]
    sampler = Sampler(deadline=5)
    sampler.reconcile()
    real_stats = runtime._stats
    release = threading.Event()
    calls: list[str] = []

    def hang_for_one(api, container_id, one_shot):
        # Simulated: the engine never answers this one container's stats call (until the
        # test releases it). Every other call, and this one after, is the real engine's.
        calls.append(container_id)
        if container_id == stuck:
            release.wait(120)
        return real_stats(api, container_id, one_shot)

    monkeypatch.setattr(runtime, "_stats", hang_for_one)
    try:
        first = sampler.tick()
        assert not release.is_set()  # the tick returned while that call still hangs
        second = sampler.tick()
    finally:
        release.set()

    assert (first.primed, first.late, first.written) == (3, 1, 0)
    # Every other container is recorded in the tick, stamped with its time.
    assert (second.written, second.late, second.failed) == (3, 1, 0)
    recorded = ContainerStatsSample.objects.filter(timestamp=second.at)
    assert set(recorded.values_list("container__docker_id", flat=True)) == set(others)
    # Not asked again while its first call lingers: one thread per container at most.
    assert calls.count(stuck) == 1

    # Once the engine answers, the container is read again (its first reading primes it).
    for _ in range(200):
        if stuck not in runtime._stats_in_flight:
            break
        time.sleep(0.05)
    third = sampler.tick()
    assert (third.written, third.primed, third.late) == (3, 1, 0)
    assert calls.count(stuck) == 2


@pytest.mark.django_db
@pytest.mark.usefixtures("commits_as_in_production")
def test_it_survives_an_unreachable_engine_and_resumes_when_it_is_back(
    docker, workload, monkeypatch, caplog
):
    running = run_labelled(workload, "sleep 3600")
    sampler = Sampler()
    sampler.reconcile()
    sampler.tick()

    monkeypatch.setenv("DOCKER_HOST", CLOSED_SOCKET)
    with caplog.at_level(logging.WARNING, logger="engine.sampler"):
        down = [sampler.tick(), sampler.tick()]
        sampler._guarded(sampler.reconcile)  # what the loop does: logged, not raised
        monkeypatch.delenv("DOCKER_HOST")
        back = sampler.tick()

    assert [r.engine_unreachable for r in down] == [True, True]
    assert [r.written for r in down] == [0, 0]
    assert Container.objects.get(docker_id=running).removed is None  # not taken for gone
    assert back.written == 1  # the reading from before the outage was kept as the baseline
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in messages) == 1  # once per outage, not per tick
    assert sum("reachable again" in m for m in messages) == 1


# --- reconcile ---------------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.usefixtures("commits_as_in_production")
def test_reconcile_indexes_this_installations_labelled_containers_only(docker, make_workload):
    web = make_workload()
    unknown = run_labelled(web, "sleep 3600", **{runtime.REPLICA_LABEL: "2"})
    finished = deploy(web, at=timezone.now(), outcome=DeployRecord.Outcome.FAILED)
    running = DeployRecord.open(workload=web, reason=DeployRecord.Reason.MANUAL)
    mid_deploy = run_labelled(web, "sleep 3600", **{runtime.DEPLOY_LABEL: str(running.pk)})
    left_over = run_labelled(web, "sleep 3600", **{runtime.DEPLOY_LABEL: str(finished.pk)})
    no_workload = run_labelled(None, "sleep 3600")
    gone = make_workload()
    deleted_workload = run_labelled(gone, "sleep 3600")
    gone.delete()
    foreign = run_labelled(web, "sleep 3600", instance=f"{settings.BERTH_INSTANCE_ID}-other")
    # Berth's labels (as a container of an image Berth built inherited them), but a name
    # Berth never gives: run by hand.
    by_hand = run_labelled(web, "sleep 3600", berth_name=False)
    try:
        result = Sampler().reconcile()
    finally:
        subprocess.run(["docker", "rm", "-f", foreign], capture_output=True, check=False)

    assert result.indexed == sorted([unknown, left_over])
    row = Container.objects.get(docker_id=unknown)
    assert (row.workload_id, row.replica, row.removed) == (web.pk, 2, None)
    assert row.image_reference == images.BUSYBOX
    assert row.name and row.created <= timezone.now()
    indexed = set(Container.objects.values_list("docker_id", flat=True))
    assert not indexed & {mid_deploy, no_workload, deleted_workload, foreign, by_hand}
    assert Sampler().reconcile().indexed == []  # nothing new the second time


@pytest.mark.django_db
@pytest.mark.usefixtures("commits_as_in_production")
def test_reconcile_marks_indexed_containers_the_engine_lost_as_removed(docker, workload):
    kept = run_labelled(workload, "sleep 3600")
    lost = container(workload)  # indexed, but no such container on the engine
    already_removed = container(workload, removed=timezone.now() - timedelta(days=1))
    sampler = Sampler()

    result = sampler.reconcile()

    assert result.marked_removed == [lost.docker_id]
    lost.refresh_from_db()
    assert lost.removed is not None
    assert Container.objects.get(docker_id=kept).removed is None
    before = already_removed.removed
    already_removed.refresh_from_db()
    assert already_removed.removed == before


# --- prune -------------------------------------------------------------------------------

@pytest.mark.django_db
def test_prune_deletes_samples_older_than_the_retention_in_batches(workload):
    c = container(workload)
    now = timezone.now()
    old = sample(c, ticks(now - timedelta(days=8), every=15, count=10), cpu=1.0, memory=1)
    recent = sample(c, ticks(now, every=15, count=5), cpu=1.0, memory=1)
    sampler = Sampler(retention=7 * 86400, prune_batch=4)

    with CaptureQueriesContext(connection) as queries:
        assert sampler.prune(now=now) == len(old)

    deletes = [q for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3  # 4 + 4 + 2 rows
    assert set(ContainerStatsSample.objects.values_list("pk", flat=True)) == {
        r.pk for r in recent
    }
    assert sampler.prune(now=now) == 0


def test_the_retention_and_interval_come_from_settings(settings):
    settings.BERTH_STATS_INTERVAL, settings.BERTH_STATS_RETENTION = 30, 86400
    sampler = Sampler()
    assert (sampler.interval, sampler.retention) == (30, 86400)


# --- a slow engine and the loop ------------------------------------------------------------

class HangingEngine(BaseHTTPRequestHandler):
    """An engine that answers its version at once and never answers a stats call in time."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if "/stats" in self.path:
            time.sleep(10)
            return
        body = json.dumps({"ApiVersion": "1.41", "Version": "20.10.24"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class ThreadingUnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def slow_engine(tmp_path, monkeypatch, settings):
    socket_path = Path(tmp_path) / "slow.sock"
    server = ThreadingUnixServer(str(socket_path), HangingEngine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.BERTH_STATS_TIMEOUT = 1
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket_path}")
    yield
    server.shutdown()
    server.server_close()


@pytest.mark.django_db
def test_a_tick_on_a_slow_engine_ends_after_the_stats_timeout(slow_engine, workload):
    for replica in range(1, 9):
        container(workload, replica=replica)
    sampler = Sampler(workers=4)

    started = time.monotonic()
    result = sampler.tick()
    elapsed = time.monotonic() - started

    # Eight calls, four at a time, one second each at most: about 2 s, not 8 × 10 s.
    assert elapsed < 5, elapsed
    assert result.engine_unreachable and result.written == 0


class FakeTime:
    """The sampler loop's clock and its `stop`: waiting moves the clock on, nothing sleeps.

    `stop_after` ends the loop at the first wait that would pass that moment
    (like a stop set from another thread while the loop waits).
    """

    def __init__(self, *, start: float = 1_000_000.25, stop_after: float | None = None) -> None:
        self.now = start
        self.stop_at = None if stop_after is None else start + stop_after
        self.stopped = False

    def __call__(self) -> float:
        return self.now

    def set(self) -> None:
        self.stopped = True

    def wait(self, seconds: float) -> bool:
        if self.stopped:
            return True
        if self.stop_at is not None and self.now + seconds >= self.stop_at:
            self.now, self.stopped = max(self.now, self.stop_at), True
            return True
        self.now += seconds
        return False


class TimedSampler(Sampler):
    """A sampler whose tick takes `duration` seconds of fake time and records when it ran."""

    def __init__(self, duration: float, clock: FakeTime) -> None:
        super().__init__(interval=1, clock=clock)
        self.duration = duration
        self.runs: list[tuple[float, float, float]] = []  # (slot, started, finished)

    def tick(self, at=None):
        started = self.clock()
        self.clock.now += self.duration
        self.runs.append((at.timestamp(), started, self.clock()))

    def reconcile(self, now=None):
        pass

    def prune(self, now=None):
        return 0


@pytest.mark.django_db  # the loop closes stale connections between ticks
def test_ticks_never_overlap_and_missed_slots_are_skipped(caplog):
    clock = FakeTime(stop_after=5)
    sampler = TimedSampler(duration=1.5, clock=clock)
    with caplog.at_level(logging.WARNING, logger="engine.sampler"):
        sampler.run(clock)

    # 5 s of ticks of 1.5 s each on a 1 s grid: a tick every other slot.
    assert len(sampler.runs) == 3
    for (_slot, _started, finished), (next_slot, next_started, _) in zip(
        sampler.runs, sampler.runs[1:], strict=False
    ):
        assert next_started >= finished  # never two at once
        assert next_slot >= finished  # the next slot after the slow tick, not a missed one
        assert next_slot - _slot == 2  # the slot the slow tick ran into is skipped
    assert all(slot == int(slot) for slot, _, _ in sampler.runs)  # on the interval's grid
    assert all(started == slot for slot, started, _ in sampler.runs)  # at the slot, not before
    # Each slow tick is reported, the last one too (the stop comes in the wait after it).
    assert caplog.text.count("overran the interval: skipped 1 tick(s)") == 3


@pytest.mark.django_db  # the loop closes stale connections between ticks
def test_ticks_follow_the_grid_with_none_skipped_when_they_fit(caplog):
    clock = FakeTime(stop_after=4)
    sampler = TimedSampler(duration=0.25, clock=clock)
    with caplog.at_level(logging.WARNING, logger="engine.sampler"):
        sampler.run(clock)

    slots = [slot for slot, _, _ in sampler.runs]
    assert slots == [1_000_001, 1_000_002, 1_000_003, 1_000_004]
    assert "overran" not in caplog.text


@pytest.mark.django_db  # the loop closes stale connections between ticks
def test_stopping_lets_the_tick_in_progress_finish():
    clock = FakeTime()

    class StoppedMidTick(TimedSampler):
        def tick(self, at=None):
            clock.set()  # the stop arrives while this tick runs
            super().tick(at)

    sampler = StoppedMidTick(duration=1.0, clock=clock)
    sampler.run(clock)

    [(_slot, started, finished)] = sampler.runs  # the one in progress, finished; none after
    assert finished == started + 1.0


def test_stop_is_honoured_by_a_real_event_in_a_real_thread():
    """The loop as `manage.py sample_stats` runs it: a real Event, set from another thread."""
    sampler, stop = TimedSampler(duration=0, clock=FakeTime()), threading.Event()
    sampler.clock = time.time
    sampler.tick = lambda at=None: sampler.runs.append(at)
    thread = threading.Thread(target=sampler.run, args=(stop,))
    thread.start()
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()


@pytest.mark.django_db  # the loop closes stale connections between ticks
def test_a_failing_step_is_logged_and_the_loop_goes_on(caplog):
    class Failing(TimedSampler):
        def tick(self, at=None):
            super().tick(at)
            raise RuntimeError("database went away")

    clock = FakeTime(stop_after=2.5)
    sampler = Failing(duration=0, clock=clock)
    with caplog.at_level(logging.ERROR, logger="engine.sampler"):
        sampler.run(clock)
    assert len(sampler.runs) == 2
    assert caplog.text.count("the stats sampler's tick step failed") == 2


# --- the command ---------------------------------------------------------------------------

@pytest.mark.django_db
@pytest.mark.usefixtures("commits_as_in_production")
def test_the_command_stops_cleanly_on_sigterm():
    # A closed engine socket keeps the child off the real engine; it must run anyway.
    env = child_env() | {"BERTH_STATS_INTERVAL": "1", "DOCKER_HOST": CLOSED_SOCKET}
    child = subprocess.Popen(
        [sys.executable, "manage.py", "sample_stats"], cwd=REPO_ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert "Sampling container stats every 1 s" in child.stdout.readline()
        time.sleep(2.5)  # a few ticks against the closed socket
        assert child.poll() is None, child.stderr.read()
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=15)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    assert "Stats sampler stopped." in out
    assert "Traceback" not in err


def test_make_run_starts_the_sampler_beside_the_web_server_and_the_worker():
    makefile = (REPO_ROOT / "Makefile").read_text()
    run = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "./scripts/run.sh" in run
    # scripts/run.sh starts it and stops it with the others (tests/berth/test_run_script.py).
    script = (REPO_ROOT / "scripts" / "run.sh").read_text()
    assert '"${manage[@]}" sample_stats &' in script



def test_a_stats_answer_cut_off_is_a_container_gone_not_an_error():
    """The engine's answer for a container removed while it was read is cut short: the docker
    SDK raises JSONDecodeError. That container is gone; nothing is logged as a failure.
    (A fake API object: the cut cannot be timed against a real engine.)"""
    import json

    from lib import runtime

    class CutOff:
        def stats(self, container_id, stream, one_shot):
            raise json.JSONDecodeError("Expecting value", "", 0)

    assert runtime._stats(CutOff(), "abc", True) is None


class CuttingEngine(BaseHTTPRequestHandler):
    """An engine whose stats answers are whole, except for the containers in `cut`: their
    answer is cut off mid-read, the way the engine ends it when a container goes away while
    it is read (a short JSON body, or a chunked body that stops mid-chunk)."""

    protocol_version = "HTTP/1.1"
    cut: dict[str, str] = {}  # container id → "json", "chunked" or "garbage" (not cut: wrong)
    calls = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        match = re.search(r"/containers/([0-9a-f]+)/stats", self.path)
        if not match:
            self._send(json.dumps({"ApiVersion": "1.41", "Version": "20.10.24"}).encode())
            return
        how = self.cut.get(match.group(1))
        CuttingEngine.calls += 1
        body = json.dumps({
            "memory_stats": {"usage": 4 * MIB, "limit": 512 * MIB},
            "cpu_stats": {"system_cpu_usage": 10**9 * self.calls,
                          "cpu_usage": {"total_usage": 10**7 * self.calls}, "online_cpus": 2},
        }).encode()
        if how == "json":
            self._send(body[:9])
        elif how == "garbage":
            self._send(b"[1, 2]")
        elif how == "chunked":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s" % (len(body), body[:9]))  # the chunk never ends
            self.wfile.flush()
            self.close_connection = True
        else:
            self._send(body)

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def cutting_engine(tmp_path, monkeypatch, settings):
    socket_path = Path(tmp_path) / "cutting.sock"
    server = ThreadingUnixServer(str(socket_path), CuttingEngine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.BERTH_STATS_TIMEOUT = 5
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket_path}")
    monkeypatch.setattr(CuttingEngine, "cut", {})
    yield CuttingEngine
    server.shutdown()
    server.server_close()


@pytest.mark.django_db
@pytest.mark.parametrize(("how", "missing", "failed"), [
    ("json", 1, 0), ("chunked", 1, 0), ("garbage", 0, 1),
])
def test_a_container_cut_off_mid_tick_loses_only_its_own_reading(cutting_engine, workload,
                                                                  how, missing, failed, caplog):
    """A tick was lost whole when one answer was cut off mid-chunk (ChunkedEncodingError) or
    made no sense; now only that container's reading is, and the others' samples are
    written. A cut answer means the container went away (missing); a malformed one is a
    failure, logged."""
    doomed, *survivors = [container(workload, replica=r) for r in (1, 2, 3)]
    sampler = Sampler(workers=2)
    assert sampler.tick().primed == 3

    cutting_engine.cut = {doomed.docker_id: how}
    with caplog.at_level(logging.WARNING, logger="engine.sampler"):
        result = sampler.tick()

    assert (result.written, result.missing, result.failed) == (2, missing, failed)
    assert not result.engine_unreachable
    written = set(ContainerStatsSample.objects.values_list("container_id", flat=True))
    assert written == {c.pk for c in survivors}
    assert doomed.docker_id not in sampler.previous
    assert ("failed" in caplog.text) == bool(failed)
