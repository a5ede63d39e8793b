"""Restore drills: prove a copy restores by reading it back the way a recovery would.

A drill downloads a verified copy, decrypts it with the target's stored
identity, checks it against its sidecar's size and SHA-256 (engine/disaster.py
does the same for a recovery) and extracts it in full with the safe
extractor into a scratch directory, which is removed: every member checked,
the per-volume counts and bytes against the manifest. Nothing is restored.
A backup policy asks for one every `drill_every_days` (engine/schedules.py);
an operator may ask for one at any time. A failed drill is an alert
(alerts: drill_failed). docs/schedules.md describes drills.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext_noop

from alerts.outbox import notify
from backups.models import BackupPolicy, RestoreDrill, SnapshotCopy
from engine import disaster, imports, queue
from lib import owners
from snapshots import storage
from snapshots.errors import SnapshotError
from workloads.models import Workload

logger = logging.getLogger(__name__)

_BUSY = gettext_noop("A restore drill of this workload is queued or running.")


class DrillRefused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def request_drill(*, copy: SnapshotCopy, user: AbstractBaseUser | None = None,
                  queued: bool = True) -> RestoreDrill:
    """Open a drill of a verified copy (queued for the worker, or for this process)."""
    if copy.state != SnapshotCopy.State.VERIFIED:
        raise DrillRefused(gettext_noop("Only a verified copy can be drilled."))
    try:
        with transaction.atomic():
            row = RestoreDrill.objects.create(
                copy=copy, workload_id=copy.workload_id, target_id=copy.target_id,
                remote_key=copy.remote_key, owner="" if queued else owners.current())
    except IntegrityError:
        raise DrillRefused(_BUSY) from None
    if queued:
        transaction.on_commit(lambda: queue.enqueue(queue.DRILL, row.pk, name=f"drill-{row.pk}"))
    return row


def run_drill(row: RestoreDrill) -> RestoreDrill:
    """The drill's body (the task's, or the command's); the row says how it ended."""
    if not row.move(only_from=[RestoreDrill.State.QUEUED], state=RestoreDrill.State.RUNNING,
                    started=timezone.now(), owner=owners.current()):
        return row
    staged = None
    try:
        target = row.target
        identities = disaster.identities_for(target, "")
        if target.encrypted and not identities and row.remote_key.endswith(".age"):
            raise disaster.RecoveryError("no_identity", gettext_noop(
                "The target stores no identity: a drill needs one to read its copies."))
        described = disaster.describe(target, row.remote_key, identities)
        disaster.check_room(described.snapshot["size"])
        row.start_progress(described.snapshot["size"])
        staged = disaster.download(target, row.remote_key, described, identities,
                                   lambda done, _total: row.report_progress(done))
        try:
            extracted = imports.validate(staged.path,
                                         volume_count=described.snapshot["volume_count"])
        except SnapshotError as exc:
            # The reason quotes the archive (names an outsider may have written): the log
            # has it; the row and the notification carry the fixed text only.
            logger.warning("restore drill %s: the archive was refused: %s", row.pk,
                           exc.english)
            raise disaster.RecoveryError("refused", gettext_noop(
                "The safe extractor refused the archive: it is damaged or was altered (the "
                "server log says where).")) from None
    except disaster.RecoveryError as exc:
        _fail(row, exc.code, exc.message, exc.params)
        return row
    except Exception as exc:  # noqa: BLE001 - a drill ends failed, never half-recorded
        logger.exception("restore drill %s failed", row.pk)
        _fail(row, "internal", gettext_noop("The drill failed unexpectedly (%(error)s); the "
                                            "server log has the details."),
              {"error": type(exc).__name__})
        return row
    finally:
        if staged is not None:
            storage.discard(staged.path)
    files = sum(v.get("files", 0) for v in extracted.manifest.get("volumes", []))
    row.move(only_from=[RestoreDrill.State.RUNNING], state=RestoreDrill.State.PASSED,
             finished=timezone.now(), files=files, bytes_done=row.bytes_total)
    logger.info("restore drill %s of %s: restorable (%d files)", row.pk, row.remote_key, files)
    return row


def _fail(row: RestoreDrill, code: str, message: str, params: dict) -> None:
    if not row.move(only_from=RestoreDrill.ACTIVE_STATES, state=RestoreDrill.State.FAILED,
                    finished=timezone.now(), failure_code=code, failure_message=message,
                    failure_params=params):
        return
    logger.warning("restore drill %s of %s failed: %s", row.pk, row.remote_key, code)
    notify("drill_failed", workload=row.workload, code=code, message=message, params=params,
           key=f"drill-{row.pk}")


def due(*, now: datetime | None = None) -> list[RestoreDrill]:
    """Queue a drill of the newest verified copy of every workload whose policy wants one
    and whose last drill is older than the policy's `drill_every_days`."""
    now = now or timezone.now()
    started = []
    for workload in Workload.objects.with_parents().order_by("pk"):
        policy = BackupPolicy.objects.for_workload(workload)
        if policy is None or not policy.enabled or not policy.drill_every_days:
            continue
        last = workload.restore_drills.order_by("-created").values_list("created",
                                                                         flat=True).first()
        if last is not None and now - last < timedelta(days=policy.drill_every_days):
            continue
        newest = (SnapshotCopy.objects.filter(workload=workload,
                                              state=SnapshotCopy.State.VERIFIED)
                  .order_by("-taken", "-created").first())
        if newest is None:
            continue
        try:
            started.append(request_drill(copy=newest))
        except DrillRefused:
            continue
    return started


def fail_lost() -> int:
    """Fail the drills whose worker died, or that no worker took in time."""
    failed = 0
    for row in RestoreDrill.objects.filter(state__in=RestoreDrill.ACTIVE_STATES):
        if not row.is_lost():
            continue
        before = row.state
        _fail(row, "interrupted", gettext_noop("The drill was interrupted (its worker "
                                               "stopped)."), {})
        failed += row.state != before
    return failed
