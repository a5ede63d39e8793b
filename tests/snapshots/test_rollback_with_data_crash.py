"""Crash injection in a rollback with data: old data + old code, or target data + target code.

As tests/snapshots/test_restore_crash.py does for a restore: the rollback runs
in a child that dies with os._exit at one crash point (lib/crashpoints.py),
then `manage.py recover` runs in a child that is itself killed at a point of
the recovery (if it gets there), then once more to the end. Besides the
restore's points, the cases kill it inside the redeploy of the target's digest
(the deploy's own points), and kill the sweep inside its redeploy of the old
digest. Afterwards:

- the volumes all hold the v2-era data and v2's digest runs ("old"), or they
  all hold v1's pre-deploy snapshot and v1's digest runs ("new") — the side
  the journal's COMMIT record decided, never data of one side under the code
  of the other;
- nothing is left beside the volumes and no journal is left;
- the job is finished with the matching outcome; on the new side the ledger
  row of the redeploy is a rollback to v1 that says it restored code,
  configuration and data (the workload is configured to run v1's digest), and
  the v2-era data is a pre-restore snapshot; on the old side the configuration
  is as it was;
- a further sweep changes nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lib import crashpoints
from snapshots import journal
from snapshots.models import RestoreJob, Snapshot
from tests.conftest import container_image_digest
from tests.snapshots.restoring import (
    engine_containers,
    in_container,
    inspect,
    journals,
    run_sweep,
    strays,
    trees,
)
from tests.snapshots.rolling_back import release_v1_then_v2, spawn_rollback
from tests.snapshots.test_restore_crash import CASES as RESTORE_CASES
from tests.snapshots.test_restore_crash import FALLBACK_CASES
from workloads.models import DeployRecord, EventLog

pytestmark = pytest.mark.django_db(transaction=True)

# The restore's own cases, and the redeploy of the target's digest killed at each of its
# steps (after the commit, so the sweep finishes forward), and the sweep's redeploy of
# the old digest killed mid-way (before the commit, so it rolls back).
CASES = RESTORE_CASES + [
    ("deploy.created", "forward.redeployed", "new"),
    ("deploy.old-stopped", "deploy.new-started", "new"),
    ("deploy.new-started", "forward.archived", "new"),
    ("deploy.committed", "forward.cleaned", "new"),
    ("deploy.old-removed", "forward.marked", "new"),
    ("restore.swapped-0", "deploy.new-started", "old"),
    ("restore.swapped", "deploy.committed", "old"),
]


@pytest.fixture
def released(current_tag, make_workload):
    return release_v1_then_v2(make_workload)


def state(released) -> dict:
    """Everything a sweep could change."""
    workload = released.workload
    return {
        "trees": trees(released.paths),
        "containers": [(c.id, inspect(c.id, "{{.State.StartedAt}}"))
                       for c in engine_containers(workload)],
        "jobs": list(RestoreJob.objects.values()),
        "deploys": list(DeployRecord.objects.filter(workload=workload).values()),
        "snapshots": list(Snapshot.objects.filter(workload=workload).values("pk", "state")),
        "events": EventLog.objects.filter(workload=workload).count(),
        "strays": strays(released.paths),
        "journals": journals(),
    }


@pytest.mark.parametrize(("rollback_point", "sweep_point", "side"), CASES,
                         ids=[f"{a}+{b}" for a, b, _ in CASES])
def test_a_crash_anywhere_ends_old_data_and_code_or_target_data_and_code(
    rollback_point, sweep_point, side, released
):
    crash_and_recover(released, rollback_point, sweep_point, side)


@pytest.mark.parametrize(("rollback_point", "sweep_point", "side"), FALLBACK_CASES,
                         ids=[f"{a}+{b}" for a, b, _ in FALLBACK_CASES])
def test_a_crash_with_the_two_rename_fallback_ends_on_one_side(
    rollback_point, sweep_point, side, released
):
    crash_and_recover(released, rollback_point, sweep_point, side, TEST_NO_EXCHANGE="1")


def crash_and_recover(released, rollback_point: str, sweep_point: str, side: str,
                      **env) -> None:
    workload = released.workload
    configured_before = workload.image
    child = spawn_rollback(released, BERTH_CRASH_POINT=rollback_point, **env)
    out, err = child.communicate(timeout=180)
    assert child.returncode == crashpoints.CRASH_EXIT, f"it did not crash: {out}\n{err}"
    left = [journal.load(Path(journal.directory()) / name) for name in journals()]
    assert [record.workload for record in left] in ([], [workload.pk])
    for record in left:
        # Both digests are in the journal: the target's after the commit, v2's before it.
        assert record.reference == released.v1.pinned_reference
        assert record.previous == released.v2.pinned_reference
        assert record.rollback_to == released.v1.pk
    committed = any(record.committed for record in left)
    assert ("new" if committed else "old") == side, "the commit record disagrees with the case"

    first = run_sweep(BERTH_CRASH_POINT=sweep_point)
    assert first.returncode in (0, crashpoints.CRASH_EXIT), first.stderr
    if left and not sweep_point.startswith("deploy."):
        # With a journal to recover, the first sweep reaches its crash point and dies there.
        assert first.returncode == crashpoints.CRASH_EXIT, first.stdout + first.stderr
    second = run_sweep()
    assert second.returncode == 0, second.stdout + second.stderr

    new = side == "new"
    assert trees(released.paths) == (released.target_trees if new else released.current_trees)
    assert strays(released.paths) == [] and journals() == []
    [running] = engine_containers(workload)
    assert running.running
    code = released.v1 if new else released.v2
    assert container_image_digest(running.id) == code.pinned_reference
    assert in_container(running.id, "cat /version") == (b"v1\n" if new else b"v2\n")
    job = RestoreJob.objects.get(workload=workload)
    assert job.state == RestoreJob.State.FINISHED
    assert job.outcome == (RestoreJob.Outcome.SUCCEEDED if new else RestoreJob.Outcome.FAILED)
    if new:
        assert job.pre_restore_snapshot.is_ready
        assert job.deploy.reason == DeployRecord.Reason.ROLLBACK
        assert job.deploy.rolled_back_from == released.v1
        # The configuration came back with the code and the data, and only then.
        assert job.deploy.rollback_restored == \
            DeployRecord.RollbackRestored.CODE_CONFIGURATION_DATA
        assert job.deploy.outcome == DeployRecord.Outcome.SUCCEEDED
    elif job.deploy is not None:
        # The old data came back up on the old code, as a restore's redeploy.
        assert job.deploy.reason == DeployRecord.Reason.RESTORE
        assert job.deploy.rollback_restored == ""
    assert not DeployRecord.objects.filter(workload=workload).active().exists()
    workload.refresh_from_db()
    assert workload.image == (released.v1.pinned_reference if new else configured_before)
    settled = state(released)

    third = run_sweep()

    assert third.returncode == 0 and "Nothing was interrupted." in third.stdout
    assert state(released) == settled, "a second sweep changed something"
