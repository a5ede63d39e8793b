"""A killed worker never leaves a workload down, never blocks it, and never leaks disk.

Each test runs the work in a child process (tests/snapshots/killing.py) that
dies at a named point with os._exit (lib/crashpoints.py: no cleanup, no
`finally`, as a SIGKILL leaves it), then runs the sweep once, in this process,
as `manage.py recover --every 60` would within a minute, and checks what an
operator would see. tests/snapshots/test_crash_random.py kills at random
instants instead.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from engine import captures, deploys, lost, sweep, tasks
from lib import crashpoints, owners
from snapshots.models import RestoreJob, Snapshot
from tests.conftest import container_image_digest, dead_owner, move_current_tag
from tests.fixtures import images
from tests.snapshots.conftest import add_volume, fill
from tests.snapshots.killing import (
    container_journals,
    spawn,
    swept,
    temporary_files,
    wait_for,
)
from tests.snapshots.restoring import (
    OLD,
    engine_containers,
    inspect,
    journals,
    served,
    strays,
)
from workloads.models import Container, DeployRecord, Workload

pytestmark = pytest.mark.django_db(transaction=True)

Outcome, Failure = DeployRecord.Outcome, DeployRecord.Failure


@pytest.fixture
def running(docker, current_tag, make_workload) -> tuple[Workload, DeployRecord]:
    """The httpd workload with one volume, deployed from v1 and serving the "old" data."""
    workload = make_workload()
    fill(add_volume(workload, "data", "/data"), OLD)
    first = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    assert first.outcome == Outcome.SUCCEEDED, first.failure_code
    workload.refresh_from_db()
    return workload, first


def the_one_container(workload: Workload):
    [container] = engine_containers(workload)
    assert container.running, container
    assert container.name == workload.container_name(1)
    return container


# --- a deploy killed in the middle of its swap -----------------------------------------------

@pytest.mark.parametrize(("point", "wins"), [
    ("deploy.created", "old"),       # the new container created, the old one still running
    ("deploy.old-stopped", "old"),   # the old one stopped, the new one not started
    ("deploy.new-started", "old"),   # the new one started, the commit not yet recorded
    ("deploy.committed", "new"),     # committed, the old one not yet removed
    ("deploy.old-removed", "new"),   # the old one removed, the new one not yet renamed
])
def test_a_deploy_killed_mid_swap_is_finished_or_undone_by_the_sweep(running, point, wins):
    workload, first = running
    move_current_tag("v2")
    child = spawn(f"deploys.dispatch(workload=Workload.objects.with_parents().get("
                  f"pk={workload.pk}), reason='manual')", BERTH_CRASH_POINT=point)
    _out, err = child.communicate(timeout=180)
    assert child.returncode == crashpoints.CRASH_EXIT, err
    killed = DeployRecord.objects.exclude(pk=first.pk).get(workload=workload)
    assert killed.outcome == Outcome.RUNNING and not killed.owner_alive
    assert container_journals() == [f"workload-{workload.pk}-deploy-{killed.pk}.json"]

    swept()

    killed.refresh_from_db()
    workload.refresh_from_db()
    container = the_one_container(workload)
    assert served(container.id, "index.html") == OLD["index.html"]
    if wins == "old":
        assert container_image_digest(container.id) == first.pinned_reference
        assert (killed.outcome, killed.failure_code) == (Outcome.FAILED, Failure.INTERRUPTED)
        assert workload.running_reference == first.replay_reference
    else:
        assert container_image_digest(container.id) == killed.pinned_reference
        assert killed.pinned_reference != first.pinned_reference
        assert killed.outcome == Outcome.SUCCEEDED
        assert workload.running_reference == killed.replay_reference
        assert workload.events.filter(level="warning", params={"deploy": killed.pk}).exists()
    assert list(Container.objects.filter(workload=workload).live()
                .values_list("docker_id", flat=True)) == [container.id]
    assert container_journals() == []
    # The next deploy is accepted, and runs.
    assert deploys.dispatch(workload=workload, reason="manual").outcome == Outcome.SUCCEEDED
    assert sweep.recover_all().recovered == []


def test_the_sweep_waits_for_a_stop_the_killed_deploy_left_in_flight(docker, make_workload):
    """The engine goes on stopping a container after the process that asked for it died. The
    worker dies just before its stop; the stop it would have sent is sent here, as the
    engine would carry it out, and the sweep comes while it is still in progress."""
    workload = make_workload(image=images.SLOWSTOP_V1)
    first = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    assert first.outcome == Outcome.SUCCEEDED, first.failure_code
    [old] = engine_containers(workload)
    Workload.objects.filter(pk=workload.pk).update(image=images.SLOWSTOP_V2)
    child = spawn(f"deploys.dispatch(workload=Workload.objects.with_parents().get("
                  f"pk={workload.pk}), reason='manual')", BERTH_CRASH_POINT="deploy.stopping")
    _out, err = child.communicate(timeout=180)
    assert child.returncode == crashpoints.CRASH_EXIT, err
    in_flight = subprocess.Popen(["docker", "stop", "-t", "10", old.id],
                                 stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    assert [c.running for c in engine_containers(workload) if c.id == old.id] == [True]

    swept()
    in_flight.wait(timeout=30)

    assert the_one_container(workload).id == old.id
    time.sleep(1)  # still running once the stop that was in flight is long over
    assert the_one_container(workload).id == old.id


def test_the_next_deploy_recovers_a_killed_swap_before_its_own(running):
    workload, first = running
    child = spawn(f"deploys.dispatch(workload=Workload.objects.with_parents().get("
                  f"pk={workload.pk}), reason='manual')", BERTH_CRASH_POINT="deploy.old-stopped")
    child.communicate(timeout=180)
    assert not any(c.running for c in engine_containers(workload))  # the app is down
    # Its journal needs the engine, so no web request touches it: the next holder of the
    # lock does, and this deploy, run in-process like the `deploy` command, is that holder.
    record = deploys.dispatch(workload=workload, reason="manual")
    assert record.outcome == Outcome.SUCCEEDED
    the_one_container(workload)
    assert container_journals() == []
    killed = DeployRecord.objects.exclude(pk__in=[first.pk, record.pk]).get(workload=workload)
    assert (killed.outcome, killed.failure_code) == (Outcome.FAILED, Failure.INTERRUPTED)


def test_a_capture_killed_while_the_workload_is_stopped_starts_it_again(running):
    workload, _first = running
    child = spawn(f"captures.capture_snapshot(workload=Workload.objects.with_parents().get("
                  f"pk={workload.pk}))", BERTH_CRASH_POINT="capture.stopped")
    _out, err = child.communicate(timeout=180)
    assert child.returncode == crashpoints.CRASH_EXIT, err
    assert not any(c.running for c in engine_containers(workload))  # the app is down
    snapshot = Snapshot.objects.get(workload=workload)

    swept()

    the_one_container(workload)
    snapshot.refresh_from_db()
    assert snapshot.state == Snapshot.State.FAILED and "interrupted" in snapshot.failure_text
    assert container_journals() == [] and temporary_files() == []


# --- a worker killed between taking a task and claiming its row ------------------------------

def queued_row(kind: str, workload: Workload, snapshot: Snapshot | None):
    if kind == "deploy":
        return DeployRecord.open(workload=workload, reason=DeployRecord.Reason.API)
    if kind == "capture":
        return Snapshot.objects.create(workload=workload, kind=Snapshot.Kind.MANUAL)
    return RestoreJob.objects.create(workload=workload, snapshot=snapshot,
                                     bytes_total=snapshot.data_bytes)


def is_final(row) -> bool:
    row.refresh_from_db()
    if isinstance(row, DeployRecord):
        return (row.outcome, row.failure_code) == (Outcome.FAILED, Failure.INTERRUPTED)
    if isinstance(row, Snapshot):
        return row.state == Snapshot.State.FAILED
    return row.state == RestoreJob.State.FINISHED and row.outcome == RestoreJob.Outcome.FAILED


def request(kind: str, client: APIClient, workload: Workload, snapshot: Snapshot):
    if kind == "deploy":
        return client.post(f"/api/workloads/{workload.pk}/deploy")
    if kind == "capture":
        return client.post(f"/api/workloads/{workload.pk}/snapshots")
    return client.post(f"/api/workloads/{workload.pk}/snapshots/{snapshot.pk}/restore",
                       headers={"X-Confirm-Restore": workload.path})


@pytest.mark.parametrize("kind", ["deploy", "capture", "restore"])
@pytest.mark.parametrize("closed_by", ["the sweep", "the next request"])
def test_a_worker_killed_after_taking_a_task_blocks_nothing(running, api_as, operator, kind,
                                                             closed_by):
    workload, _first = running
    snapshot = None
    if kind == "restore":
        snapshot = captures.capture_snapshot(workload=workload)
        assert snapshot.is_ready
    row = queued_row(kind, workload, snapshot)
    task = {"deploy": "run_deploy", "capture": "run_capture", "restore": "run_restore"}[kind]
    child = spawn(f"tasks.{task}({row.pk})", BERTH_CRASH_POINT="task.taken")
    _out, err = child.communicate(timeout=120)
    assert child.returncode == crashpoints.CRASH_EXIT, err
    row.refresh_from_db()
    assert row.owner and not row.owner_alive and not is_final(row)

    if closed_by == "the sweep":
        swept()
        assert is_final(row)
    response = request(kind, api_as(operator), workload, snapshot)
    assert response.status_code == 202, response.content
    assert is_final(row)
    # A late delivery of the dead worker's task finds its row final and does nothing.
    getattr(tasks, task)(row.pk)
    assert is_final(row)
    the_one_container(workload)


def test_a_late_delivery_fails_a_row_whose_first_taker_died(workload):
    record = DeployRecord.open(workload=workload, reason=DeployRecord.Reason.API)
    DeployRecord.objects.filter(pk=record.pk).update(owner=dead_owner())
    tasks.run_deploy(record.pk)  # the broker hands the task out again
    assert is_final(record)


# --- owners -----------------------------------------------------------------------------------

def test_a_reused_pid_is_not_taken_for_the_owner(workload):
    me = owners.current()
    boot, namespace, pid, started = me.split(":")
    assert owners.is_alive(me)
    # The same pid, but another process (the kernel reused it): another start time.
    heir = f"{boot}:{namespace}:{pid}:{int(started) + 1}"
    assert owners.is_dead(heir)
    assert owners.is_dead(f"{'0' * 32}:{namespace}:{pid}:{started}")  # another boot
    assert owners.is_dead("not an owner") and owners.is_dead("")
    assert owners.is_dead(dead_owner())
    assert owners.from_token(f".tmp-{owners.token(me)}-abcd.tar.zst") == me

    taken = DeployRecord.open(workload=workload, reason=DeployRecord.Reason.API)
    DeployRecord.objects.filter(pk=taken.pk).update(owner=heir)
    assert lost.fail_lost(workload) == 1
    assert is_final(taken)
    alive = DeployRecord.open(workload=workload, reason=DeployRecord.Reason.API)
    DeployRecord.objects.filter(pk=alive.pk).update(owner=me)
    assert lost.fail_lost(workload) == 0
    alive.refresh_from_db()
    assert alive.outcome == Outcome.QUEUED


# --- temporary files ---------------------------------------------------------------------------

def big_volume(workload: Workload) -> None:
    """Enough data that the capture reports progress (and so reaches capture.writing)."""
    data = workload.volumes.get().host_path()
    with open(f"{data}/big.bin", "wb") as f:
        f.write(b"\0" * (8 << 20))


def test_a_capture_killed_mid_write_leaves_no_temporary_file(running):
    workload, _first = running
    big_volume(workload)
    child = spawn(f"captures.capture_snapshot(workload=Workload.objects.with_parents().get("
                  f"pk={workload.pk}))", BERTH_CRASH_POINT="capture.writing")
    _out, err = child.communicate(timeout=180)
    assert child.returncode == crashpoints.CRASH_EXIT, err
    [left] = temporary_files()
    assert owners.from_token(left) and not owners.is_alive(owners.from_token(left))

    swept()

    assert temporary_files() == []
    assert Snapshot.objects.get(workload=workload).state == Snapshot.State.FAILED
    the_one_container(workload)


def test_a_capture_in_progress_in_another_process_keeps_its_file(running, tmp_path):
    workload, _first = running
    big_volume(workload)
    Workload.objects.filter(pk=workload.pk).update(snapshot_consistency="live")
    release = tmp_path / "release"
    child = spawn(f"captures.capture_snapshot(workload=Workload.objects.with_parents().get("
                  f"pk={workload.pk}))", BERTH_PAUSE_POINT="capture.writing",
                  BERTH_PAUSE_FILE=str(release))
    try:
        wait_for(tmp_path / "release.reached", child)
        [writing] = temporary_files()
        sweep.recover_all()
        assert temporary_files() == [writing]
        assert Snapshot.objects.get(workload=workload).state == Snapshot.State.CAPTURING
    finally:
        release.touch()
        _out, err = child.communicate(timeout=180)
    assert child.returncode == 0, err
    assert Snapshot.objects.get(workload=workload).state == Snapshot.State.READY
    assert temporary_files() == []


def test_an_owner_out_of_sight_is_never_called_dead(monkeypatch):
    """Another PID namespace's pids mean nothing here, and a /proc entry this process may not
    read (hidepid, another user: simulated, as the tests run as root) says nothing either."""
    boot, namespace, pid, started = owners.current().split(":")
    assert owners.is_alive(f"{boot}:{int(namespace) + 1}:{pid}:{int(started) + 1}")

    def hidden(pid: int):
        raise owners.Unknown("permission denied")

    monkeypatch.setattr(owners, "start_time", hidden)
    assert owners.is_alive(f"{boot}:{namespace}:{pid}:{int(started) + 1}")


def test_the_sweep_removes_uploads_and_scratch_trees_of_dead_processes_only(db):
    from snapshots import storage

    dead, me = owners.token(dead_owner()), owners.token()
    storage.uploads_dir().mkdir(parents=True, exist_ok=True)
    dead_upload = storage.uploads_dir() / f".upload-{dead}-0123.tar.zst"
    dead_scratch = storage.root() / f".scratch-{dead}-4567"
    live_upload = storage.uploads_dir() / f".upload-{me}-89ab.tar.zst"
    dead_upload.write_bytes(b"half an upload")
    (dead_scratch / "volumes" / "0").mkdir(parents=True)
    live_upload.write_bytes(b"still arriving")

    assert storage.sweep_abandoned() == 2

    assert temporary_files() == [str(live_upload)]
    live_upload.unlink()


@pytest.mark.parametrize("point", ["deploy.old-stopped", "deploy.new-started",
                                   "deploy.committed"])
def test_a_restore_killed_inside_its_own_redeploy_ends_running_on_the_snapshot(running, point):
    """The restore's redeploy is a swap too: its container journal is settled first, then the
    restore's journal finishes the restore (and redeploys again if the swap was undone)."""
    workload, _first = running
    data = workload.volumes.get().host_path()
    snapshot = captures.capture_snapshot(workload=workload)
    with open(f"{data}/index.html", "wb") as f:
        f.write(b"<h1>written after the snapshot</h1>")
    child = spawn(f"restores.restore(workload=Workload.objects.with_parents().get("
                  f"pk={workload.pk}), snapshot=Snapshot.objects.get(pk={snapshot.pk}))",
                  BERTH_CRASH_POINT=point)
    _out, err = child.communicate(timeout=180)
    assert child.returncode == crashpoints.CRASH_EXIT, err

    swept()

    container = the_one_container(workload)
    assert served(container.id, "index.html") == OLD["index.html"]  # the snapshot's data
    job = RestoreJob.objects.get(workload=workload)
    assert job.outcome == RestoreJob.Outcome.SUCCEEDED, job.reason_text
    # A redeploy that committed is finished, not run a second time; one undone runs again.
    redeploys = DeployRecord.objects.filter(workload=workload, reason="restore")
    assert redeploys.filter(outcome=Outcome.SUCCEEDED).count() == 1
    assert redeploys.count() == (1 if point == "deploy.committed" else 2)
    assert job.deploy_id == redeploys.get(outcome=Outcome.SUCCEEDED).pk
    assert journals() == [] and container_journals() == [] and temporary_files() == []
    assert strays([Path(data)]) == []


def test_a_capture_killed_after_placing_its_archive_leaves_no_file(running):
    from snapshots import storage

    workload, _first = running
    child = spawn(f"captures.capture_snapshot(workload=Workload.objects.with_parents().get("
                  f"pk={workload.pk}))", BERTH_CRASH_POINT="capture.placed")
    _out, err = child.communicate(timeout=180)
    assert child.returncode == crashpoints.CRASH_EXIT, err
    snapshot = Snapshot.objects.get(workload=workload)
    assert snapshot.state == Snapshot.State.CAPTURING and snapshot.archive
    assert storage.archive_path(workload.pk, snapshot.archive).exists()

    swept()

    snapshot.refresh_from_db()
    assert snapshot.state == Snapshot.State.FAILED
    assert not storage.archive_path(workload.pk, snapshot.archive).exists()
    the_one_container(workload)


# --- rows that stop before their claim, and tasks that arrive too late ------------------------

@pytest.mark.parametrize("kind", ["capture", "restore"])
def test_a_task_that_raises_before_its_claim_leaves_no_queued_row(snapshotted, monkeypatch,
                                                                  kind):
    """The worker lives on, so its row would look taken by a live process for ever."""
    from django.db import OperationalError

    from engine.locked import recovery

    workload, _paths, snapshot, _wanted = snapshotted
    row = queued_row(kind, workload, snapshot)

    def locked(workload):
        raise OperationalError("database is locked")

    monkeypatch.setattr(recovery, "recover_workload", locked)
    task = {"capture": tasks.run_capture, "restore": tasks.run_restore}[kind]
    with pytest.raises(OperationalError):
        task(row.pk)
    assert is_final(row)


def test_a_task_nobody_took_in_time_is_failed_by_the_sweep_and_never_runs(workload, settings):
    from datetime import timedelta

    from django.utils import timezone

    long_ago = timezone.now() - timedelta(seconds=settings.BERTH_TASK_LOST_AFTER + 1)
    swept_row = DeployRecord.open(workload=workload, reason=DeployRecord.Reason.API)
    DeployRecord.objects.filter(pk=swept_row.pk).update(created=long_ago)
    swept()
    assert is_final(swept_row)

    late = DeployRecord.open(workload=workload, reason=DeployRecord.Reason.API)
    DeployRecord.objects.filter(pk=late.pk).update(created=long_ago)
    tasks.run_deploy(late.pk)  # the broker hands it out 70 minutes late: it must not run
    late.refresh_from_db()
    assert (late.outcome, late.failure_code, late.started) == (Outcome.FAILED,
                                                               Failure.INTERRUPTED, None)


def test_a_deploy_command_killed_while_it_waits_for_the_lock_blocks_nothing(workload):
    import threading

    from django.db import connection

    from lib import locks

    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with locks.workload_lock(workload.pk):
            held.set()
            release.wait(60)
        connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(10)
    try:
        child = spawn(f"deploys.dispatch(workload=Workload.objects.with_parents().get("
                      f"pk={workload.pk}), reason='manual')")
        deadline = time.monotonic() + 60
        while not DeployRecord.objects.filter(workload=workload).exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)  # it waits for the lock now
        child.kill()
        child.wait()
    finally:
        release.set()
        thread.join()
    waiting = DeployRecord.objects.get(workload=workload)
    assert waiting.outcome == Outcome.QUEUED and waiting.owner

    swept()

    assert is_final(waiting)
    assert deploys.request_deploy(workload=workload, reason=DeployRecord.Reason.API)


def test_a_started_job_left_behind_by_a_live_process_is_failed_once_the_lock_is_free(workload):
    """Its process lives on without it (its database connection broke mid-way): the lock it
    no longer holds says the job is over."""
    record = DeployRecord.open(workload=workload, reason=DeployRecord.Reason.API)
    record.claim()
    capturing = Snapshot.objects.create(workload=workload, state=Snapshot.State.CAPTURING,
                                        owner=owners.current())
    assert record.owner_alive

    swept()

    assert is_final(record) and is_final(capturing)


def test_a_container_started_after_the_capture_stopped_it_is_left_running(running):
    workload, _first = running
    child = spawn(f"captures.capture_snapshot(workload=Workload.objects.with_parents().get("
                  f"pk={workload.pk}))", BERTH_CRASH_POINT="capture.stopped")
    _out, err = child.communicate(timeout=180)
    assert child.returncode == crashpoints.CRASH_EXIT, err
    [container] = engine_containers(workload)
    subprocess.run(["docker", "start", container.id], check=True, capture_output=True)
    started = inspect(container.id, "{{.State.StartedAt}}")

    swept()

    assert the_one_container(workload).id == container.id
    assert inspect(container.id, "{{.State.StartedAt}}") == started  # not restarted
    assert container_journals() == []


def test_an_engine_that_does_not_answer_defers_a_journal_without_stopping_berth(
        workload, monkeypatch):
    """`make run` runs `recover` once before serving; with no engine Berth must still start."""
    import io

    from django.core.management import call_command

    from lib import runtime
    from workloads import container_journal

    container_journal.Operation(kind=container_journal.DEPLOY, row=1, workload=workload.pk,
                                stopped=[], old=[]).record(container_journal.PREPARE)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/closed.sock")
    monkeypatch.setattr(runtime, "_clients", {})
    out = io.StringIO()
    call_command("recover", stdout=out)
    assert "Left for the next sweep" in out.getvalue()
    assert container_journals() == [f"workload-{workload.pk}-deploy-1.json"]
    monkeypatch.undo()
    swept()
    assert container_journals() == []


def test_a_task_whose_row_went_with_its_workload_ends_quietly(workload, monkeypatch):
    snapshot = Snapshot.objects.create(workload=workload, kind=Snapshot.Kind.MANUAL)

    def removed(**kwargs):
        Workload.objects.filter(pk=workload.pk).delete()

    monkeypatch.setattr(captures, "capture_snapshot", removed)
    tasks.run_capture(snapshot.pk)
    assert not Snapshot.objects.filter(pk=snapshot.pk).exists()
