"""django-q2 entrypoints: thin, idempotent, and given ids rather than rows."""

from __future__ import annotations

import logging

from django_q.tasks import async_task

from workloads import deployer
from workloads.models import DeployRecord

logger = logging.getLogger(__name__)

# Berth's tasks (deploys, snapshots, restores) run with no task timeout.
# django-q2 ends a task at its timeout with SIGALRM (a SystemExit) and then
# terminates the worker: cut there, a deploy could stop between stopping the
# old containers and starting the new ones, a capture with the workload
# stopped, a restore between two steps of its protocol. None of them can
# wedge instead: every step that waits on something outside Berth has its own
# bound (Docker calls, git, the image build, the lock), and the rest is
# reading and writing data, which takes as long as the data needs. A second
# delivery of a task (the broker's retry) finds its row claimed and does nothing.
NO_TIMEOUT = -1


def enqueue_deploy(record_id: int) -> None:
    async_task(
        "workloads.tasks.run_deploy",
        record_id,
        task_name=f"deploy-{record_id}",
        timeout=NO_TIMEOUT,
    )


def run_deploy(record_id: int) -> None:
    record = (
        DeployRecord.objects.select_related("workload__stage__project", "user")
        .filter(pk=record_id)
        .first()
    )
    if record is None or record.outcome != DeployRecord.Outcome.QUEUED:
        if record is not None and record.failure_code == DeployRecord.Failure.INTERRUPTED:
            logger.warning("deploy %s waited in the queue so long that it was counted as "
                           "lost (BERTH_TASK_TIMEOUT); it is not run now", record_id)
        return  # Deleted with its workload, or already run by another worker.
    deployer.dispatch(
        workload=record.workload, reason=record.reason, user=record.user, record=record
    )
