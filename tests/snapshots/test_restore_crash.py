"""Crash injection: a restore killed at every named point, then a sweep killed too, then a sweep.

Each case runs a real restore of the deployed httpd workload (two volumes) in
a child process that dies with os._exit at one crash point
(lib/crashpoints.py). Then `manage.py recover` runs in a child
that is itself killed at a point of the recovery (if it gets there), then
once more to the end. Afterwards:

- every volume's tree equals the old tree or the snapshot's, all on the same
  side, and the side is the one the journal's COMMIT record decided;
- nothing is left beside the volumes and no journal is left;
- exactly one container runs, on that data, from the digest that ran before;
- the job is finished with the matching outcome;
- a further sweep changes nothing (trees, containers, rows).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine import captures, deploys
from lib import crashpoints
from snapshots import journal
from snapshots.models import RestoreJob, Snapshot
from tests.conftest import container_image_digest
from tests.snapshots.conftest import add_volume, fill
from tests.snapshots.restoring import (
    NEW,
    NEW_CONFIG,
    OLD,
    OLD_CONFIG,
    engine_containers,
    in_container,
    inspect,
    journals,
    replace_content,
    run_sweep,
    served,
    spawn_restore,
    strays,
    trees,
)
from workloads.models import DeployRecord, EventLog

pytestmark = pytest.mark.django_db(transaction=True)

# (where the restore dies, where the first sweep dies if it gets there, which data wins)
CASES = [
    ("restore.claimed", "sweep.started", "old"),
    ("restore.checked", "sweep.started", "old"),
    ("restore.prepared", "sweep.started", "old"),
    ("restore.extracting", "rollback.cleaned", "old"),
    ("restore.extracted", "rollback.put-back-0", "old"),
    ("restore.journaled", "rollback.cleaned", "old"),
    ("restore.quiesced", "rollback.redeployed", "old"),
    ("restore.swapped-0", "rollback.put-back-0", "old"),
    ("restore.swapped-1", "rollback.put-back-1", "old"),
    ("restore.swapped", "rollback.cleaned", "old"),
    ("restore.committed", "forward.redeployed", "new"),
    ("forward.redeployed", "forward.archived", "new"),
    ("forward.archived", "forward.cleaned", "new"),
    ("forward.cleaned", "forward.marked", "new"),
    ("forward.marked", "sweep.started", "new"),
]
# The same with two renames instead of an exchange (a filesystem without renameat2).
FALLBACK_CASES = [
    ("restore.aside", "rollback.put-back-0", "old"),
    ("restore.swapped-0", "rollback.half-put-back", "old"),
    ("restore.swapped", "rollback.redeployed", "old"),
    ("restore.committed", "forward.archived", "new"),
]
BIG = os.urandom(3 << 20)  # so that "restore.extracting" falls in the middle of the archive


@pytest.fixture
def scene(docker, current_tag, make_workload):
    """The deployed workload serving "old" data, a snapshot of "new" data, and both trees."""
    workload = make_workload()
    data = add_volume(workload, "data", "/data")
    config = add_volume(workload, "config", "/config")
    fill(data, NEW | {"big.bin": BIG})
    fill(config, NEW_CONFIG)
    deploy = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    assert deploy.outcome == DeployRecord.Outcome.SUCCEEDED, deploy.failure_code
    new = trees([data, config])
    snapshot = captures.capture_snapshot(workload=workload)
    assert snapshot.is_ready, snapshot.failure_text
    replace_content(data, OLD)
    replace_content(config, OLD_CONFIG)
    old = trees([data, config])
    workload.refresh_from_db()
    return workload, [data, config], snapshot, deploy, {"old": old, "new": new}


def state(workload, paths) -> dict:
    """Everything a sweep could change."""
    return {
        "trees": trees(paths),
        "containers": [(c.id, inspect(c.id, "{{.State.StartedAt}}"))
                       for c in engine_containers(workload)],
        "jobs": list(RestoreJob.objects.values()),
        "deploys": DeployRecord.objects.filter(workload=workload).count(),
        "snapshots": list(Snapshot.objects.filter(workload=workload).values("pk", "state")),
        "events": EventLog.objects.filter(workload=workload).count(),
        "strays": strays(paths),
        "journals": journals(),
    }


@pytest.mark.parametrize(("restore_point", "sweep_point", "side"), CASES,
                         ids=[f"{a}+{b}" for a, b, _ in CASES])
def test_a_crash_anywhere_ends_all_old_or_all_new(restore_point, sweep_point, side, scene):
    crash_and_recover(scene, restore_point, sweep_point, side)


@pytest.mark.parametrize(("restore_point", "sweep_point", "side"), FALLBACK_CASES,
                         ids=[f"{a}+{b}" for a, b, _ in FALLBACK_CASES])
def test_a_crash_with_the_two_rename_fallback_ends_all_old_or_all_new(
    restore_point, sweep_point, side, scene
):
    crash_and_recover(scene, restore_point, sweep_point, side, TEST_NO_EXCHANGE="1")


def crash_and_recover(scene, restore_point: str, sweep_point: str, side: str, **env) -> None:
    workload, paths, snapshot, deploy, expected = scene
    [before] = engine_containers(workload)
    started = inspect(before.id, "{{.State.StartedAt}}")

    child = spawn_restore(workload, snapshot, BERTH_CRASH_POINT=restore_point, **env)
    out, err = child.communicate(timeout=180)
    assert child.returncode == crashpoints.CRASH_EXIT, f"it did not crash: {out}\n{err}"
    left = [journal.load(Path(journal.directory()) / name) for name in journals()]
    assert [record.workload for record in left] in ([], [workload.pk])
    committed = any(record.committed for record in left)
    assert ("new" if committed else "old") == side, "the commit record disagrees with the case"

    first = run_sweep(BERTH_CRASH_POINT=sweep_point)
    # With a journal to recover, the first sweep reaches its crash point and dies there.
    assert first.returncode == (crashpoints.CRASH_EXIT if left else 0), first.stderr
    second = run_sweep()
    assert second.returncode == 0, second.stdout + second.stderr

    assert trees(paths) == expected[side], f"the volumes are not all {side}"
    assert strays(paths) == [] and journals() == []
    [running] = engine_containers(workload)
    assert running.running
    assert served(running.id, "index.html") == (NEW if side == "new" else OLD)["index.html"]
    config = (NEW_CONFIG if side == "new" else OLD_CONFIG)["app.conf"]
    assert in_container(running.id, "cat /config/app.conf") == config
    assert container_image_digest(running.id) == deploy.pinned_reference
    if side == "old" and restore_point in {"restore.claimed", "restore.checked",
                                           "restore.prepared", "restore.extracting",
                                           "restore.extracted", "restore.journaled"}:
        # Killed before the quiesce: the containers were never touched.
        assert (running.id, inspect(running.id, "{{.State.StartedAt}}")) == (before.id, started)
    job = RestoreJob.objects.get(workload=workload)
    assert job.state == RestoreJob.State.FINISHED
    assert job.outcome == (RestoreJob.Outcome.SUCCEEDED if side == "new"
                           else RestoreJob.Outcome.FAILED)
    if side == "new":
        assert job.pre_restore_snapshot.is_ready
    settled = state(workload, paths)

    third = run_sweep()

    assert third.returncode == 0 and "Nothing was interrupted." in third.stdout
    assert state(workload, paths) == settled, "a second sweep changed something"


def test_a_deploy_after_a_killed_restore_puts_the_volumes_back_first(scene):
    """No start-up in between: the next holder of the workload's lock recovers the journal."""
    workload, paths, snapshot, deploy, expected = scene
    child = spawn_restore(workload, snapshot, BERTH_CRASH_POINT="restore.swapped-0")
    child.communicate(timeout=180)
    assert child.returncode == crashpoints.CRASH_EXIT
    assert trees(paths) not in (expected["old"], expected["new"])  # half swapped

    record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)

    assert record.outcome == DeployRecord.Outcome.SUCCEEDED, record.failure_code
    assert trees(paths) == expected["old"] and strays(paths) == [] and journals() == []
    job = RestoreJob.objects.get(workload=workload)
    assert job.outcome == RestoreJob.Outcome.FAILED and "were all swapped" in job.reason_text
    [running] = engine_containers(workload)
    assert served(running.id, "index.html") == OLD["index.html"]
