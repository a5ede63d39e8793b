"""Capture entry points: a manual snapshot, queued or now, and deleting one.

request_snapshot() queues a capture; capture_snapshot() takes the workload's
lock, finishes a restore a dead process left, claims the row and runs the
body (engine/locked/capture.py). delete_snapshot() is the one way any
interface deletes a snapshot.
"""

from __future__ import annotations

import logging

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils.translation import gettext, gettext_noop

from backups.models import SnapshotCopy
from engine import copy_upkeep, lost, queue
from engine.locked import capture, recovery, swap_recovery
from lib import locks, owners
from snapshots.errors import CaptureError
from snapshots.models import Snapshot
from workloads.jobs import acting_user
from workloads.models import EventLog, SnapshotConsistency, Workload

logger = logging.getLogger(__name__)


class SnapshotBusy(Exception):
    """A snapshot of this workload is already queued or running, or this one still is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return gettext(self.message)


def request_snapshot(*, workload: Workload, user: AbstractBaseUser | None = None,
                     kind: str = Snapshot.Kind.MANUAL) -> Snapshot:
    """Queue a manual (or scheduled) capture on the task worker; returns the queued row.

    Raises SnapshotBusy while another capture of that kind of the workload is
    queued or running (for manual ones a unique constraint backs this up
    across processes).
    """
    _clear_dead_rows(workload)
    if Snapshot.objects.active().filter(workload=workload, kind=kind).exists():
        raise SnapshotBusy(gettext_noop("A snapshot of this workload is already queued or "
                                        "being taken."))
    snapshot = Snapshot.objects.create(workload=workload, kind=kind, user=acting_user(user))
    transaction.on_commit(
        lambda: queue.enqueue(queue.CAPTURE, snapshot.pk, name=f"snapshot-{snapshot.pk}")
    )
    return snapshot


def _clear_dead_rows(workload: Workload) -> None:
    """Fail the rows of captures that were killed, so they do not block new ones.

    One that stopped the workload and left its containers down is the
    sweep's (it starts them again); engine/lost.py says the rest.
    """
    lost.fail_lost(workload)
    try:
        with locks.try_workload_lock(workload.pk):
            swap_recovery.fail_dead_rows(workload)
    except locks.LockTimeout:
        pass  # a deploy, restore or capture runs: its rows are alive


def capture_snapshot(
    *, workload: Workload, kind: str = Snapshot.Kind.MANUAL,
    user: AbstractBaseUser | None = None, snapshot: Snapshot | None = None,
) -> Snapshot:
    """Capture now, in this process, under the workload's lock; returns the finished row.

    `snapshot` is a queued row from request_snapshot(); it is claimed only
    once the lock is held (so a capturing row always has the lock), and if
    another worker has already claimed it, it is returned untouched.
    """
    error = None
    try:
        with locks.workload_lock(workload.pk):
            error = _finish_interrupted_restores(workload)
            if error is None:
                if snapshot is None:
                    snapshot = Snapshot.objects.create(
                        workload=workload, kind=kind, user=acting_user(user),
                        state=Snapshot.State.CAPTURING, owner=owners.current(),
                    )
                elif not snapshot.claim():
                    return snapshot
                workload.refresh_from_db()
                live = workload.snapshot_consistency == SnapshotConsistency.LIVE
                capture.capture_into(workload, snapshot, stop_containers=not live,
                                     consistency=workload.snapshot_consistency, run_hooks=True)
    except locks.LockTimeout:
        error = CaptureError(gettext_noop(
            "Another deploy, restore or snapshot of this workload did not finish in time."
        ))
    if error is not None:
        if snapshot is None:
            snapshot = Snapshot.objects.create(workload=workload, kind=kind, user=acting_user(user),
                                               state=Snapshot.State.FAILED)
        capture.fail(workload, snapshot, error, only_from=snapshot.state)
    return snapshot


def _finish_interrupted_restores(workload: Workload) -> CaptureError | None:
    """A restore killed half-way is finished or undone before its volumes are read.

    (A restore holds the lock to its end, so a journal found under the lock is
    a dead one's.) Returns why the capture cannot go on, if the recovery failed.
    """
    try:
        recovery.recover_workload(workload)
    except recovery.RecoveryError:
        logger.exception("an interrupted restore of workload %s cannot be recovered", workload.pk)
        return CaptureError(gettext_noop(
            "An interrupted restore of this workload could not be recovered; its volumes are "
            "not captured until it is (see `manage.py recover`)."
        ))
    return None


def delete_snapshot(*, snapshot: Snapshot, user: AbstractBaseUser | None = None,
                    with_copies: bool = False) -> None:
    """Delete a finished snapshot; its file goes once the transaction commits.

    Its copies on backup targets stay (their rows lose the snapshot) unless
    `with_copies`: then its verified copies are removed from their targets
    first, and copy_upkeep.CopiesNotRemoved keeps the snapshot if one cannot be.
    """
    if snapshot.is_active:
        raise SnapshotBusy(gettext_noop("This snapshot is still being taken; delete it once it "
                                        "has finished."))
    if snapshot.restores.active().exists():
        raise SnapshotBusy(gettext_noop("This snapshot is being restored; delete it once the "
                                        "restore has finished."))
    if with_copies:
        if snapshot.copies.filter(state__in=SnapshotCopy.ACTIVE_STATES).exists():
            raise SnapshotBusy(gettext_noop("A copy of this snapshot is under way; delete it "
                                            "with its copies once the copy has finished."))
        copy_upkeep.remove_copies(snapshot=snapshot)
    with transaction.atomic():
        snapshot_id = snapshot.pk
        snapshot.delete()
        EventLog.objects.create(
            workload=snapshot.workload, user=acting_user(user),
            message=gettext_noop("Deleted snapshot #%(id)d."), params={"id": snapshot_id},
        )
