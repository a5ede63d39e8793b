"""The body of a capture, run under the workload's lock: a workload's volumes into one archive.

Every volume whose scope is in SUPPORTED_SCOPES is captured, in one archive,
indexed by its position among the workload's volumes (ordered by id). In the
`stop` consistency mode the running containers are stopped for the capture
and started again afterwards; in `live` they keep running. A capture Berth
takes of running containers (not the deploy's or the restore's) runs the
workload's backup hooks around it (engine/locked/hooks.py). capture_locked()
serves the deploy's pre-deploy backup (the deploy has stopped the containers
itself), capture_copies_locked() the restore's `pre_restore` snapshot.

The archive is written to a temporary file beside the others, fsynced,
renamed into place and the directory fsynced; only then is the row marked
ready with its size and sha256. A failed capture leaves no file and a row
marked failed with the reason.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone, translation
from django.utils.translation import gettext_noop

from alerts.outbox import notify
from engine.locked import copy_policy, hooks, retention
from lib import crashpoints, locks, owners, runtime
from snapshots import storage, writer
from snapshots.archive_format import Limits
from snapshots.errors import CaptureError, SnapshotError
from snapshots.models import Snapshot
from workloads import container_journal
from workloads.jobs import acting_user
from workloads.models import DeployRecord, EventLog, SnapshotConsistency, VolumeMount, Workload

logger = logging.getLogger(__name__)


PROGRESS_SECONDS = 0.5

# The clock of the pre-deploy snapshot's time budget (a test replaces it).
_clock = time.monotonic


def auto_backup_wanted(workload: Workload) -> bool:
    """The workload's "back up before deploy" setting, read afresh; None means the site default."""
    value = Workload.objects.values_list("auto_backup_before_deploy", flat=True).get(pk=workload.pk)
    return settings.BERTH_AUTO_BACKUP_BEFORE_DEPLOY if value is None else value


def capture_locked(
    *, workload: Workload, kind: str, user: AbstractBaseUser | None = None,
    deploy: DeployRecord | None = None, budget: writer.Budget | None = None,
) -> Snapshot:
    """Capture inside a caller that holds the lock and has stopped the containers itself.

    Past `budget`, the capture is abandoned: the row fails `over_budget`.
    """
    locks.assert_held(workload.pk)
    Snapshot.fail_interrupted(workload=workload, lock_held=True)
    snapshot = Snapshot.objects.create(
        workload=workload, kind=kind, user=acting_user(user), deploy=deploy,
        state=Snapshot.State.CAPTURING, owner=owners.current(),
    )
    capture_into(workload, snapshot, stop_containers=False, consistency=SnapshotConsistency.STOP,
                 budget=budget)
    return snapshot


def capture_copies_locked(
    *, workload: Workload, roots: list[str], volumes: list[dict],
    user: AbstractBaseUser | None = None,
) -> Snapshot:
    """The restore's `pre_restore` snapshot: the volumes' previous data, no longer live.

    `roots[i]` is the directory that holds volume i's previous data (the
    restore has swapped it out of the host path, so nothing writes to it);
    `volumes[i]` is how the manifest describes that volume. Runs under the
    caller's lock; returns the row, ready or failed with the reason.
    """
    locks.assert_held(workload.pk)
    Snapshot.fail_interrupted(workload=workload, lock_held=True)
    snapshot = Snapshot.objects.create(
        workload=workload, kind=Snapshot.Kind.PRE_RESTORE, user=acting_user(user),
        state=Snapshot.State.CAPTURING, owner=owners.current(),
    )
    try:
        _write(workload, snapshot, volumes, roots, SnapshotConsistency.STOP)
    except SnapshotError as exc:
        fail(workload, snapshot, exc)
    except Exception:  # noqa: BLE001 - every failure must end in a failed row
        logger.exception("pre-restore snapshot %s of workload %s failed", snapshot.pk,
                         workload.pk)
        fail(workload, snapshot, CaptureError(
            gettext_noop("Berth hit an internal error; the server log has the details.")
        ))
    if snapshot.is_ready:
        retention.prune(workload)
    return snapshot


def backup_before_deploy(*, workload: Workload, record: DeployRecord) -> Snapshot | None:
    """dispatch()'s pre-deploy snapshot, taken while the old containers are stopped.

    Never raises: the deploy goes on whatever happens here. When the setting
    cannot be read or the capture fails, the deploy's record and an event
    say that no snapshot was taken, and why. The old containers are down
    meanwhile, so the capture has a budget (BERTH_PRE_DEPLOY_BACKUP_TIMEOUT,
    BERTH_PRE_DEPLOY_BACKUP_MAX_BYTES) and is abandoned past it.
    """
    try:
        wanted = auto_backup_wanted(workload)
    except Exception:  # noqa: BLE001 - fail open: the deploy must not depend on it
        logger.exception("reading the backup setting of workload %s failed", workload.pk)
        _no_backup(workload, record, DeployRecord.BackupFailure.SETTING_UNREADABLE)
        return None
    if not wanted or not workload.captured_volumes():
        return None  # off, or nothing to keep
    try:
        budget = writer.Budget.starting_now(
            max_bytes=settings.BERTH_PRE_DEPLOY_BACKUP_MAX_BYTES,
            seconds=settings.BERTH_PRE_DEPLOY_BACKUP_TIMEOUT, clock=_clock,
        )
        snapshot = capture_locked(
            workload=workload, kind=Snapshot.Kind.PRE_DEPLOY, user=record.user, deploy=record,
            budget=budget,
        )
    except Exception:  # noqa: BLE001 - fail open, as above
        logger.exception("the pre-deploy snapshot of workload %s failed", workload.pk)
        _no_backup(workload, record, DeployRecord.BackupFailure.CAPTURE_FAILED)
        return None
    if snapshot.failure_code == Snapshot.FailureCode.OVER_BUDGET:
        _no_backup(workload, record, DeployRecord.BackupFailure.OVER_BUDGET,
                   message=_ABANDONED.get(snapshot.failure), params=snapshot.failure_params)
    elif not snapshot.is_ready:
        _no_backup(workload, record, DeployRecord.BackupFailure.CAPTURE_FAILED)
    return snapshot


# The event of an abandoned pre-deploy snapshot, by the budget it went past.
_ABANDONED = {
    writer.OVER_BYTES: gettext_noop(
        "The snapshot before deploy #%(deploy)d was abandoned: it would hold more than its "
        "budget of %(limit)d bytes (BERTH_PRE_DEPLOY_BACKUP_MAX_BYTES). The deploy went on "
        "without it."
    ),
    writer.OVER_TIME: gettext_noop(
        "The snapshot before deploy #%(deploy)d was abandoned: it took longer than its budget "
        "of %(seconds)d s (BERTH_PRE_DEPLOY_BACKUP_TIMEOUT). The deploy went on without it."
    ),
}


def _no_backup(workload: Workload, record: DeployRecord, code: str, *,
               message: str | None = None, params: dict | None = None) -> None:
    """Record on the deploy and in a warning event why no snapshot precedes it: by default
    the reason's label, else `message` with `params` (and the deploy's id)."""
    if message is None:
        message = gettext_noop("No snapshot was taken before deploy #%(deploy)d: %(reason)s")
        params = {"reason": _english(DeployRecord.BackupFailure(code).label)}
    try:
        with transaction.atomic():
            record.note_backup_failure(code)
            EventLog.objects.create(
                workload=workload, user=record.user, level=EventLog.Level.WARNING,
                message=message, params={**(params or {}), "deploy": record.pk},
            )
    except Exception:  # noqa: BLE001 - fail open: the deploy goes on
        logger.exception("recording the missing pre-deploy snapshot of deploy %s failed",
                         record.pk)


def _english(label) -> str:
    with translation.override(None):
        return str(label)


def capture_into(workload: Workload, snapshot: Snapshot, *, stop_containers: bool,
                 consistency: str, run_hooks: bool = False,
                 budget: writer.Budget | None = None) -> None:
    """Capture the volumes into `snapshot`; the row ends ready or failed with the reason.

    With `run_hooks`, the workload's backup hooks run around it
    (engine/locked/hooks.py): the pre-backup hook while the containers still
    run, the post-backup hook once they run again, whatever failed between.
    """
    stopped: container_journal.Operation | None = None
    hooked = False
    try:
        volumes = workload.captured_volumes()
        if not volumes:
            raise CaptureError(gettext_noop("This workload has no volumes to snapshot."))
        roots = [_host_path(v) for v in volumes]
        if run_hooks:
            hooked = True
            hooks.before(workload, snapshot)
        if stop_containers:
            stopped = _stop_containers(workload, snapshot)
        _write(workload, snapshot, [_described(v) for v in volumes], roots, consistency,
               budget)
    except SnapshotError as exc:
        fail(workload, snapshot, exc)
    except Exception:  # noqa: BLE001 - every failure must end in a failed row
        logger.exception("snapshot %s of workload %s failed", snapshot.pk, workload.pk)
        fail(workload, snapshot, CaptureError(
            gettext_noop("Berth hit an internal error; the server log has the details.")
        ))
    finally:
        if stopped is not None:
            _start_containers(workload, snapshot, stopped)
    if hooked:
        hooks.after(workload, snapshot)
    if snapshot.is_ready:
        retention.prune(workload)


def _host_path(volume: VolumeMount) -> str:
    try:
        return volume.host_path()
    except ValidationError:
        raise CaptureError(
            gettext_noop("The volume %(target)s has a host path that is not valid."),
            target=volume.target,
        ) from None


def _stop_containers(workload: Workload,
                     snapshot: Snapshot) -> container_journal.Operation | None:
    """Stop the workload's running containers, journaled first (a process killed while they
    are down leaves the next holder of the lock what to start again); None if none ran."""
    try:
        running = [c.id for c in runtime.list_containers(workload.pk) if c.running]
    except runtime.EngineError as exc:
        raise _not_stopped(workload, exc) from None
    if not running:
        return None
    operation = container_journal.Operation(
        kind=container_journal.CAPTURE, row=snapshot.pk, workload=workload.pk, stopped=running,
    )
    try:
        operation.record(container_journal.PREPARE)
    except OSError as exc:
        raise CaptureError(gettext_noop("The snapshot could not be journaled (%(error)s)."),
                           error=exc.strerror or str(exc)) from None
    stopped: list[str] = []
    try:
        for container_id in running:
            runtime.stop(container_id)
            stopped.append(container_id)
    except runtime.EngineError as exc:
        for container_id in stopped:
            _start_one(container_id)
        container_journal.remove(operation)
        raise _not_stopped(workload, exc) from None
    crashpoints.reached("capture.stopped")
    return operation


def _not_stopped(workload: Workload, exc: runtime.EngineError) -> CaptureError:
    logger.error("stopping workload %s for a snapshot failed: %s", workload.pk, exc.raw)
    return CaptureError(gettext_noop(
        "The containers could not be stopped for the snapshot (Docker: %(error)s)."
    ), error=str(exc))


def _start_one(container_id: str) -> bool:
    try:
        runtime.start(container_id)
    except runtime.EngineError as exc:
        logger.error("restarting container %s after a snapshot failed: %s", container_id, exc.raw)
        return False
    return True


def _start_containers(workload: Workload, snapshot: Snapshot,
                      stopped: container_journal.Operation) -> None:
    if not all([_start_one(container_id) for container_id in stopped.stopped]):
        EventLog.objects.create(
            workload=workload, user=snapshot.user, level=EventLog.Level.ERROR,
            message=gettext_noop("The containers could not be started again after snapshot "
                                 "#%(id)d; deploy the workload to bring it back."),
            params={"id": snapshot.pk},
        )
        return  # the journal stays: the sweep tries once more
    try:
        container_journal.remove(stopped)
    except OSError:
        logger.exception("snapshot %s: its container journal could not be removed", snapshot.pk)


class _Progress:
    """Writes the bytes done to the row at most every PROGRESS_SECONDS."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.last = time.monotonic()
        self.writing = False

    def __call__(self, done: int) -> None:
        if not self.writing and done:
            self.writing = True
            crashpoints.reached("capture.writing")
        now = time.monotonic()
        if now - self.last >= PROGRESS_SECONDS:
            self.last = now
            self.snapshot.report_progress(done)


def _described(volume: VolumeMount) -> dict:
    """A volume as the manifest records it (for people: restore never uses these paths)."""
    return {"scope": volume.scope, "source": volume.source, "target": volume.target}


def _write(workload: Workload, snapshot: Snapshot, volumes: list[dict],
           roots: list[str], consistency: str, budget: writer.Budget | None = None) -> None:
    """Scan and write the archive; a failure (OverBudget too) leaves no temporary file."""
    scans = writer.scan_volumes(roots, Limits.from_settings(), budget)
    snapshot.start_progress(sum(scan.bytes for scan in scans))
    manifest = writer.build_manifest(
        created=timezone.now().isoformat(),
        workload={"id": workload.pk, "name": workload.name, "path": str(workload)},
        consistency=consistency,
        volumes=volumes,
        scans=scans,
    )
    fd, temp = storage.open_temp(storage.workload_dir(workload.pk))
    try:
        sink = writer.HashingWriter(fd)
        try:
            report = writer.write_archive(sink, manifest, scans, progress=_Progress(snapshot),
                                          budget=budget)
        finally:
            sink.close()
        os.fsync(fd)
    except OSError as exc:
        storage.discard(temp)
        raise CaptureError(gettext_noop("The archive could not be written (%(error)s)."),
                           error=exc.strerror or str(exc)) from None
    except BaseException:
        storage.discard(temp)
        raise
    finally:
        os.close(fd)
    _keep(workload, snapshot, temp, sink, manifest, report)


def _keep(workload: Workload, snapshot: Snapshot, temp: Path, sink: writer.HashingWriter,
          manifest: dict, report: writer.WriteReport) -> None:
    name = storage.new_archive_name(snapshot.kind)
    # Named on the row before the file is: a process killed between the two
    # leaves a row that says which archive to remove (swap_recovery).
    Snapshot.objects.filter(pk=snapshot.pk).update(archive=name)
    try:
        storage.place(temp, workload.pk, name)
    except BaseException:
        storage.discard(temp)
        raise
    crashpoints.reached("capture.placed")
    kept = snapshot.succeed(
        archive=name, size=sink.size, sha256=sink.sha256.hexdigest(), manifest=manifest,
        changed=len(report.changed),
    )
    if not kept:  # The row was deleted while the capture ran.
        storage.remove_archive(workload.pk, name)
        return
    if report.changed:
        logger.warning("snapshot %s: files changed while captured: %s",
                       snapshot.pk, report.changed[:20])
    EventLog.objects.create(
        workload=workload, user=snapshot.user,
        message=gettext_noop("Took snapshot #%(id)d (%(kind)s)."),
        params={"id": snapshot.pk, "kind": _english(Snapshot.Kind(snapshot.kind).label)},
    )
    copy_policy.queue_copies(snapshot)


def fail(workload: Workload, snapshot: Snapshot, error: SnapshotError,
            only_from: str | None = None) -> None:
    logger.warning("snapshot %s of workload %s failed: %s", snapshot.pk, workload.pk,
                   error.english)
    if not snapshot.fail(error, only_from=only_from):
        return  # claimed by another worker meanwhile
    EventLog.objects.create(
        workload=workload, user=snapshot.user, level=EventLog.Level.WARNING,
        message=gettext_noop("Snapshot #%(id)d failed; the snapshots panel says why."),
        params={"id": snapshot.pk},
    )
    if snapshot.kind == Snapshot.Kind.SCHEDULED:
        # A scheduled backup nobody watches must be loud when it fails.
        notify("backup_failed", workload=workload, code="capture_failed",
               message=gettext_noop("Scheduled snapshot #%(id)d failed."),
               params={"id": snapshot.pk}, key=f"backup-{snapshot.pk}")
