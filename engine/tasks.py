"""django-q2 entry points: thin, idempotent, and given ids rather than rows.

Enqueued by dotted path (engine/queue.py). A task re-reads its row, takes it
(records this process as its owner, lib/owners.py) and does nothing unless
the row is still queued and nobody took it before: a second delivery from the
broker, or one for a row deleted with its workload, changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext_noop

from alerts.models import Notification
from backups.models import BackupRecovery, RestoreDrill, SnapshotCopy
from engine import (
    alerts,
    captures,
    copies,
    deploys,
    disaster,
    drills,
    images,
    lost,
    restores,
    schedules,
)
from lib import crashpoints
from snapshots.models import RestoreJob, Snapshot
from workloads.jobs import task_lost_before
from workloads.models import DeployRecord

logger = logging.getLogger(__name__)


def run_deploy(record_id: int) -> None:
    record = (
        DeployRecord.objects.select_related("workload__stage__project", "user")
        .filter(pk=record_id)
        .first()
    )
    if record is None or record.outcome != DeployRecord.Outcome.QUEUED:
        if record is not None and record.failure_code == DeployRecord.Failure.INTERRUPTED:
            logger.warning("deploy %s waited in the queue so long that it was counted as "
                           "lost (BERTH_TASK_LOST_AFTER); it is not run now", record_id)
        return  # Deleted with its workload, or already run by another worker.
    _run(record, lambda: deploys.dispatch(
        workload=record.workload, reason=record.reason, user=record.user, record=record
    ))


def run_capture(snapshot_id: int) -> None:
    snapshot = (
        Snapshot.objects.select_related("workload__stage__project", "user")
        .filter(pk=snapshot_id)
        .first()
    )
    if snapshot is None or snapshot.state != Snapshot.State.QUEUED:
        if snapshot is not None and snapshot.state == Snapshot.State.FAILED:
            logger.warning("snapshot %s is already marked failed (a queued task that waited "
                           "past BERTH_TASK_LOST_AFTER counts as lost); it is not run",
                           snapshot_id)
        return  # Deleted, or already run by another worker.
    _run(snapshot, lambda: captures.capture_snapshot(
        workload=snapshot.workload, kind=snapshot.kind, user=snapshot.user, snapshot=snapshot
    ))


def run_restore(job_id: int) -> None:
    # A restore must never run twice: the job is claimed with a conditional
    # update under the workload's lock (a second delivery finds it no longer
    # queued, and one that gave up waiting for the lock only ends a job that
    # is still queued), and the cluster acknowledges failures instead of
    # retrying them (max_attempts 1, ack_failures).
    job = (
        RestoreJob.objects.select_related("workload__stage__project", "snapshot", "user")
        .filter(pk=job_id)
        .first()
    )
    if job is None or job.state != RestoreJob.State.QUEUED or job.snapshot is None:
        if job is not None and job.snapshot is None and job.state == RestoreJob.State.QUEUED:
            job.finish(RestoreJob.Outcome.FAILED, gettext_noop(
                "The snapshot was deleted before the restore started."))
        elif job is not None and job.state == RestoreJob.State.FINISHED and job.started is None:
            logger.warning("restore %s was closed before a worker took it (a queued task that "
                           "waited past BERTH_TASK_LOST_AFTER counts as lost); it is not run",
                           job_id)
        return  # Deleted with its workload, or already run by another worker.
    _run(job, lambda: restores.restore(
        workload=job.workload, snapshot=job.snapshot, user=job.user, job=job
    ))


def run_copy(copy_id: int) -> None:
    _run_unlocked(SnapshotCopy.objects.select_related(
        "target", "snapshot__workload__stage__project"), copy_id, copies.copy_snapshot)


def run_recovery(recovery_id: int) -> None:
    # The restore and the deploy inside take the workload's lock themselves.
    _run_unlocked(BackupRecovery.objects.select_related("target", "into__stage__project", "user"),
                  recovery_id, disaster.run_recovery, identity_encrypted="")


def run_drill(drill_id: int) -> None:
    _run_unlocked(RestoreDrill.objects.select_related("target", "workload"), drill_id,
                  drills.run_drill)


def run_notification(notification_id: int) -> None:
    _run_unlocked(Notification.objects.all(), notification_id, alerts.send)


def _run_unlocked(rows: QuerySet, row_id: int, body: Callable[[Any], object],
                  **cleared: object) -> None:
    """The task of a row that changes no volume and takes no workload lock itself (a copy, a
    recovery, a drill, a notification): taking the row is what keeps a second delivery from
    running it again. A row still queued and ours afterwards stopped before it started: it
    is failed ("interrupted", with `cleared` fields emptied), so it blocks nothing."""
    model = rows.model
    row = rows.filter(pk=row_id).first()
    if row is None or row.state != model.State.QUEUED or not row.take():
        return
    try:
        body(row)
    finally:
        model.objects.filter(pk=row.pk, state=model.State.QUEUED, owner=row.owner).update(
            state=model.State.FAILED, failure_code="interrupted", finished=timezone.now(),
            **cleared)


def _run(row: DeployRecord | Snapshot | RestoreJob, body: Callable[[], object]) -> None:
    """Take the row, run the entry point; a row still queued and ours afterwards is failed
    (something raised before the claim), so it never blocks the workload while we live."""
    if not _take(row):
        return
    try:
        body()
    finally:
        # (The row may be gone with its workload.)
        state = type(row).objects.filter(pk=row.pk).values_list(row.state_field, flat=True)
        if state.first() == row.queued_state and lost.release(row):
            logger.warning("%s %s stopped before it started; it is marked failed",
                           type(row).__name__, row.pk)


def _take(row: DeployRecord | Snapshot | RestoreJob) -> bool:
    """Become the row's owner; False if it may not run (any more).

    A task that arrives for a row whose first taker died, or after its row
    counts as lost (BERTH_TASK_LOST_AFTER), fails the row instead
    (engine/lost.py): a job never runs long after it was asked for.
    """
    if row.owner == "" and row.created < task_lost_before():
        lost.fail_lost(row.workload)
        logger.warning("%s %s arrived after BERTH_TASK_LOST_AFTER; it is marked failed, not run",
                       type(row).__name__, row.pk)
        return False
    if row.take():
        crashpoints.reached("task.taken")
        return True
    row.refresh_from_db(fields=["owner"])
    if row.owner and not row.owner_alive:
        lost.fail_lost(row.workload)
        logger.warning("%s %s: the process that took it stopped; it is marked failed, not run",
                       type(row).__name__, row.pk)
    return False


def run_schedule_tick() -> None:
    """Every minute (django-q2's CRON schedule `berth-backup-schedules`): start the due
    backups, then the due restore drills."""
    schedules.tick()
    drills.due()




def run_image_gc() -> None:
    """Every day (django-q2's CRON schedule `berth-image-gc`): remove Berth's images that
    nothing needs any more (engine/images.py)."""
    report = images.prune()
    logger.info("image collection: %d image(s) removed, %d bytes freed; %d skipped",
                len(report.removed), report.bytes_freed, len(report.skipped))
