"""django-q2 entrypoints: thin, idempotent, and given ids rather than rows."""

from __future__ import annotations

from django.conf import settings
from django_q.tasks import async_task

from snapshots import capture
from snapshots.models import Snapshot


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
