"""The crash test: SIGKILL at random instants during real restores, deploys and captures.

Each round picks an operation and an instant with a seeded random generator
(BERTH_CRASH_SEED, printed with every failure, reproduces a run), runs the
operation in a child process, and kills it with SIGKILL at that instant — or,
as in a power cut, kills every Berth process at once: the worker and a sweep
(`manage.py recover --every 1`) running beside it. Some rounds then start
`manage.py recover` and kill it too, at a random instant of its recovery.
Then the sweep runs once, to its end. After every round:

- each volume holds exactly the old data or exactly the snapshot's, all on
  the same side (and the old data, unless the operation was a restore);
- nothing is left beside the volumes, no journal, no temporary file;
- every job of the workload is final, and the workload has exactly one
  container, running, under its final name;
- the next restore and the next deploy are accepted, and they run.

The step-named crash injection (test_restore_crash.py, test_killed_workers.py)
stays: it reaches every step; this reaches the instants between them.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from engine import captures, deploys, restores
from snapshots.models import RestoreJob, Snapshot
from tests.fixtures import forking
from tests.snapshots.conftest import add_volume, fill
from tests.snapshots.killing import container_journals, swept, temporary_files
from tests.snapshots.restoring import (
    NEW,
    NEW_CONFIG,
    OLD,
    OLD_CONFIG,
    engine_containers,
    journals,
    replace_content,
    strays,
    trees,
)
from workloads.models import DeployRecord, Workload

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SEED = int(os.environ.get("BERTH_CRASH_SEED", "20261206"))
ROUNDS = int(os.environ.get("BERTH_CRASH_ROUNDS", "10"))
# How long after the child says it is ready the kill may come: about the length of each
# operation on this test's small data, so most kills land inside it.
WINDOW = {"restore": 1.2, "deploy": 0.8, "capture": 0.6, "sweep": 1.0}

CHILD = """
import sys
import django
django.setup()
from engine import captures, deploys, restores
from snapshots.models import Snapshot
from workloads.models import Workload
workload = Workload.objects.with_parents().get(pk=int(sys.argv[2]))
print("ready", flush=True)
operation = sys.argv[1]
if operation == "restore":
    restores.restore(workload=workload, snapshot=Snapshot.objects.get(pk=int(sys.argv[3])))
elif operation == "deploy":
    deploys.dispatch(workload=workload, reason="manual")
else:
    captures.capture_snapshot(workload=workload)
print("done", flush=True)
"""


@pytest.fixture
def stand(docker, current_tag, make_workload, monkeypatch, settings):
    """A deployed workload with two volumes holding the old data, and a snapshot of the new."""
    # Every round may capture: retention must not prune the snapshot the rounds restore.
    monkeypatch.setenv("BERTH_SNAPSHOT_KEEP_MANUAL", "100")
    settings.BERTH_SNAPSHOT_KEEP = {**settings.BERTH_SNAPSHOT_KEEP, "manual": 100}
    workload = make_workload()
    data = add_volume(workload, "data", "/data")
    config = add_volume(workload, "config", "/config")
    fill(data, NEW)
    fill(config, NEW_CONFIG)
    assert deploys.dispatch(workload=workload, reason="manual").outcome == "succeeded"
    snapshot = captures.capture_snapshot(workload=workload)
    assert snapshot.is_ready
    new = trees([data, config])
    put_old(workload, [data, config])
    return workload, [data, config], snapshot, new


def put_old(workload: Workload, paths) -> None:
    replace_content(paths[0], OLD)
    replace_content(paths[1], OLD_CONFIG)


def run_and_kill(rng: random.Random, operation: str, workload: Workload, snapshot: Snapshot,
                 everything: bool) -> str:
    """Run `operation` in a child and SIGKILL it (and a sweep beside it) at a random instant."""
    sweeper = forking.run_command("recover", "--every", "1") if everything else None
    child = forking.run_code(CHILD, operation, str(workload.pk), str(snapshot.pk))
    try:
        assert child.stdout.readline().strip() == "ready", child.communicate()
        delay = rng.uniform(0, WINDOW[operation])
        time.sleep(delay)
        for process in filter(None, (child, sweeper)):
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
    finally:
        for process in filter(None, (child, sweeper)):
            if process.poll() is None:
                process.kill()
            process.wait(timeout=60)
    return f"killed after {delay:.3f} s ({'ended first' if child.returncode == 0 else 'killed'})"


def kill_a_sweep(rng: random.Random) -> str:
    """Start the recovery sweep in a child and SIGKILL it at a random instant of its work."""
    sweeper = forking.run_command("recover")
    delay = rng.uniform(0, WINDOW["sweep"])
    try:
        time.sleep(delay)
    finally:
        sweeper.kill()
        sweeper.wait(timeout=60)
    ended = "ended first" if sweeper.returncode == 0 else "killed"
    return f"a sweep killed after {delay:.3f} s ({ended})"


def check_round(workload: Workload, paths, snapshot: Snapshot, before: list, new: list,
                operation: str) -> None:
    swept()
    after = trees(paths)
    allowed = [before, new] if operation == "restore" else [before]
    assert after in allowed, "a volume holds neither all-old nor all-new data"
    assert strays(paths) == [] and journals() == [] and container_journals() == []
    assert temporary_files() == []
    assert not DeployRecord.objects.filter(workload=workload).active().exists()
    assert not Snapshot.objects.filter(workload=workload).active().exists()
    assert not RestoreJob.objects.filter(workload=workload).active().exists()
    # Exactly one container, running under its final name: none stopped or half-renamed beside it.
    containers = [(c.name, c.running) for c in engine_containers(workload)]
    assert containers == [(workload.container_name(1), True)], containers
    # The next restore and the next deploy are accepted, and run.
    job = restores.request_restore(workload=workload, snapshot=snapshot)
    job.refresh_from_db()
    assert job.outcome == RestoreJob.Outcome.SUCCEEDED, job.reason_text
    assert trees(paths) == new
    record = deploys.request_deploy(workload=workload, reason="api")
    record.refresh_from_db()
    assert record.outcome == DeployRecord.Outcome.SUCCEEDED, record.failure_code


def test_random_kills_leave_every_volume_whole_and_nothing_behind(stand):
    workload, paths, snapshot, new = stand
    rng = random.Random(SEED)
    for number in range(ROUNDS):
        operation = rng.choice(["restore", "deploy", "capture"])
        everything = rng.random() < 0.3
        put_old(workload, paths)
        before = trees(paths)
        what = f"{operation}, {'every process' if everything else 'the worker'}"
        try:
            what += ", " + run_and_kill(rng, operation, workload, snapshot, everything)
            if rng.random() < 0.4:  # the sweep that should recover it is killed too
                what += ", " + kill_a_sweep(rng)
            print(f"round {number}: {what}")
            check_round(workload, paths, snapshot, before, new, operation)
        except AssertionError as exc:
            raise AssertionError(f"BERTH_CRASH_SEED={SEED}, round {number} ({what}): {exc}") \
                from exc
        snapshot.refresh_from_db()  # still there: retention keeps 100 manual snapshots
