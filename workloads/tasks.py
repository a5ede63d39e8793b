"""django-q2 entrypoints: thin, idempotent, and given ids rather than rows."""

from __future__ import annotations

from django.conf import settings
from django_q.tasks import async_task

from workloads import deployer
from workloads.models import DeployRecord


def enqueue_deploy(record_id: int) -> None:
    async_task(
        "workloads.tasks.run_deploy",
        record_id,
        task_name=f"deploy-{record_id}",
        timeout=settings.BERTH_TASK_TIMEOUT,
    )


def run_deploy(record_id: int) -> None:
    record = (
        DeployRecord.objects.select_related("workload__stage__project", "user")
        .filter(pk=record_id)
        .first()
    )
    if record is None or record.outcome != DeployRecord.Outcome.QUEUED:
        return  # Deleted with its workload, or already run by another worker.
    deployer.dispatch(
        workload=record.workload, reason=record.reason, user=record.user, record=record
    )
