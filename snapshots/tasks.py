"""django-q2 entrypoints: thin, idempotent, and given ids rather than rows."""

from __future__ import annotations

import logging

from django.conf import settings
from django.utils.translation import gettext_noop
from django_q.tasks import async_task

from snapshots import capture
from snapshots.models import RestoreJob, Snapshot

logger = logging.getLogger(__name__)


def enqueue_capture(snapshot_id: int) -> None:
    async_task(
        "snapshots.tasks.run_capture",
        snapshot_id,
        task_name=f"snapshot-{snapshot_id}",
        timeout=settings.BERTH_TASK_TIMEOUT,
    )


def run_capture(snapshot_id: int) -> None:
    snapshot = (
        Snapshot.objects.select_related("workload__stage__project", "user")
        .filter(pk=snapshot_id)
        .first()
    )
    if snapshot is None or snapshot.state != Snapshot.State.QUEUED:
        return  # Deleted, or already run by another worker.
    capture.capture_snapshot(
        workload=snapshot.workload, kind=snapshot.kind, user=snapshot.user, snapshot=snapshot
    )


# A restore (and the sweep that finishes or undoes a killed one) runs with no
# task timeout. django-q2 ends a task at its timeout with SIGALRM and then
# terminates the worker: cut there, a restore would stop between two steps of
# its protocol — with the workload down until something recovers it — and a
# recovery would stop likewise. Neither can wedge: every step that waits on
# something outside Berth has its own bound (Docker calls, the lock), and the
# rest is reading and writing the data, which takes as long as the data needs.
NO_TIMEOUT = -1


def enqueue_restore(job_id: int) -> None:
    # A restore must never run twice: the job is claimed with a conditional
    # update under the workload's lock (a second delivery finds it no longer
    # queued, and one that gave up waiting for the lock only ends a job that
    # is still queued), and the cluster acknowledges failures instead of
    # retrying them (max_attempts 1, ack_failures).
    async_task(
        "snapshots.tasks.run_restore",
        job_id,
        task_name=f"restore-{job_id}",
        timeout=NO_TIMEOUT,
    )


def run_restore(job_id: int) -> None:
    from snapshots import restore

    job = (
        RestoreJob.objects.select_related("workload__stage__project", "snapshot", "user")
        .filter(pk=job_id)
        .first()
    )
    if job is None or job.state != RestoreJob.State.QUEUED or job.snapshot is None:
        if job is not None and job.snapshot is None and job.state == RestoreJob.State.QUEUED:
            job.finish(RestoreJob.Outcome.FAILED, gettext_noop(
                "The snapshot was deleted before the restore started."))
        return  # Deleted with its workload, or already run by another worker.
    restore.restore(workload=job.workload, snapshot=job.snapshot, user=job.user, job=job)


def sweep_restores() -> None:
    """Finish or undo restores whose process died while Berth kept running (every minute).

    Scheduled by the migration snapshots 0004 with no task timeout. A journal
    whose workload is locked belongs to a restore that is still running and
    is left alone; problems are logged (and refuse that workload's deploys
    and restores until someone looks, docs/restore-protocol.md "By hand").
    """
    from snapshots import recovery

    report = recovery.recover_all()
    for problem in report.problems:
        logger.error("restore sweep: %s", problem)
    if report.recovered:
        logger.warning("restore sweep recovered %s", ", ".join(report.recovered))
