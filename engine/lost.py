"""Jobs whose process is gone: finished the way their state calls for, so they block nothing.

Every Berth process shares one host, so whether a job's owner lives is known
at once (lib/owners.py). A job a dead process had taken but not yet claimed
is failed as interrupted right away, without the workload's lock: nothing of
it ran, and a late delivery of its task finds it final and does nothing. A
job that had started holds the workload's lock while it runs; it is finished
by whoever takes the lock next (engine/locked/recovery.py, recover_workload).
Only a job no worker ever took is judged by its age (BERTH_TASK_LOST_AFTER);
a task that arrives after that finds its row final too.
docs/architecture.md ("Jobs") has the rules.
"""

from __future__ import annotations

from django.utils.translation import gettext_noop

from lib import owners
from snapshots.errors import CaptureError
from snapshots.models import RestoreJob, Snapshot
from workloads.jobs import task_lost_before
from workloads.models import DeployRecord, Workload

INTERRUPTED_CAPTURE = gettext_noop("The capture was interrupted before it finished.")
INTERRUPTED_RESTORE = gettext_noop("The restore was interrupted before it changed anything.")


def fail_lost(workload: Workload | None = None) -> int:
    """Fail the queued jobs (of `workload`, or of all) that can no longer run as asked.

    Those whose task a process took and then died with, and those no worker
    took for BERTH_TASK_LOST_AFTER (their task was lost in the broker, or
    would run long after it was asked for).
    """
    failed = 0
    for record in _taken_and_queued(DeployRecord.objects.filter(outcome="queued"), workload):
        failed += DeployRecord.objects.filter(
            pk=record.pk, outcome=DeployRecord.Outcome.QUEUED, owner=record.owner
        ).fail_interrupted()
    for snapshot in _taken_and_queued(Snapshot.objects.filter(state="queued"), workload):
        failed += snapshot.fail(CaptureError(INTERRUPTED_CAPTURE),
                                only_from=Snapshot.State.QUEUED)
    for job in _taken_and_queued(RestoreJob.objects.filter(state="queued"), workload):
        failed += job.finish(RestoreJob.Outcome.FAILED, INTERRUPTED_RESTORE, only_queued=True)
    untaken = DeployRecord.objects.filter(outcome="queued", owner="",
                                          created__lt=task_lost_before())
    if workload is not None:
        untaken = untaken.filter(workload=workload)
    failed += untaken.fail_interrupted()
    failed += Snapshot.fail_interrupted(workload=workload, lock_held=False)
    failed += RestoreJob.fail_dead(workload=workload, lock_held=False)
    return failed


def release(row: DeployRecord | Snapshot | RestoreJob) -> bool:
    """After a task: its row still queued and ours means the entry point stopped before the
    claim (it raised, or refused without ending the row). Failed, so it blocks nothing."""
    if row.owner != owners.current():
        return False
    if isinstance(row, DeployRecord):
        return bool(DeployRecord.objects.filter(pk=row.pk, outcome="queued", owner=row.owner)
                    .fail_interrupted())
    if isinstance(row, Snapshot):
        return row.fail(CaptureError(INTERRUPTED_CAPTURE), only_from=Snapshot.State.QUEUED)
    return row.finish(RestoreJob.Outcome.FAILED, INTERRUPTED_RESTORE, only_queued=True)


def _taken_and_queued(rows, workload: Workload | None) -> list:
    if workload is not None:
        rows = rows.filter(workload=workload)
    return [row for row in rows.exclude(owner="") if not row.owner_alive]


def workloads_with_started_jobs(workload: Workload | None = None) -> set[int]:
    """Workloads with a started job: whoever can take the workload's lock knows it is dead.

    (A started job holds its lock to the end; its process may live on without
    it, its database connection broken mid-way, so the owner alone says too little.)
    """
    found = set()
    for rows in (DeployRecord.objects.filter(outcome="running"),
                 Snapshot.objects.filter(state="capturing"),
                 RestoreJob.objects.filter(state="running")):
        if workload is not None:
            rows = rows.filter(workload=workload)
        found |= set(rows.values_list("workload_id", flat=True))
    return found
