"""django-q2 entrypoints: thin, idempotent, and given ids rather than rows."""

from __future__ import annotations

import logging

from django.utils.translation import gettext_noop
from django_q.tasks import async_task

from snapshots import capture
from snapshots.models import RestoreJob, Snapshot
from workloads.tasks import NO_TIMEOUT

logger = logging.getLogger(__name__)


def enqueue_capture(snapshot_id: int) -> None:
    async_task(
        "snapshots.tasks.run_capture",
        snapshot_id,
        task_name=f"snapshot-{snapshot_id}",
        timeout=NO_TIMEOUT,
    )


def run_capture(snapshot_id: int) -> None:
    snapshot = (
        Snapshot.objects.select_related("workload__stage__project", "user")
        .filter(pk=snapshot_id)
        .first()
    )
    if snapshot is None or snapshot.state != Snapshot.State.QUEUED:
        if snapshot is not None and snapshot.state == Snapshot.State.FAILED:
            logger.warning("snapshot %s is already marked failed (a queued task that waited "
                           "past BERTH_TASK_TIMEOUT counts as lost); it is not run", snapshot_id)
        return  # Deleted, or already run by another worker.
    capture.capture_snapshot(
        workload=snapshot.workload, kind=snapshot.kind, user=snapshot.user, snapshot=snapshot
    )


def enqueue_restore(job_id: int) -> None:
    # A restore must never run twice: the job is claimed with a conditional
    # update under the workload's lock (a second delivery finds it no longer
    # queued, and one that gave up waiting for the lock only ends a job that
    # is still queued), and the cluster acknowledges failures instead of
    # retrying them (max_attempts 1, ack_failures). No task timeout: see
    # workloads/tasks.py.
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
        elif job is not None and job.state == RestoreJob.State.FINISHED and job.started is None:
            logger.warning("restore %s was closed before a worker took it (a queued task that "
                           "waited past BERTH_TASK_TIMEOUT counts as lost); it is not run", job_id)
        return  # Deleted with its workload, or already run by another worker.
    restore.restore(workload=job.workload, snapshot=job.snapshot, user=job.user, job=job)

