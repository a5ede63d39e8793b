"""The body of a restore, under the workload's lock: all volumes or none, crash-safe.

Pre-flight, extraction beside each volume, quiesce, swap and COMMIT, each
step journaled before it is taken; after the commit, and for any failure
before it, engine/locked/recovery.py takes over — the very code the sweep
runs after a crash. docs/restore-protocol.md is the protocol and its why.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import BinaryIO

from django.utils import timezone
from django.utils.translation import gettext_noop

from engine.locked import preflight, recovery
from lib import crashpoints, exchange, locks, runtime
from lib.fsutil import fsync_dir
from snapshots import archive, journal
from snapshots.archive_format import Limits
from snapshots.errors import ArchiveError, PreflightError, RestoreError, SnapshotError
from snapshots.journal import Journal, Target
from snapshots.models import RestoreJob, Snapshot
from workloads.models import Container, DeployRecord, EventLog, Workload

logger = logging.getLogger(__name__)

PROGRESS_SECONDS = 0.5
Phase, Outcome = RestoreJob.Phase, RestoreJob.Outcome


def refuse(job: RestoreJob, workload: Workload, error: SnapshotError, *,
             only_queued: bool = False) -> None:
    logger.warning("restore %s of workload %s refused: %s", job.pk, workload.pk, error.english)
    if job.finish(Outcome.FAILED, error.message, error.params, only_queued=only_queued):
        recovery.tell_outcome(job, workload)
        EventLog.objects.create(
            workload=workload, user=job.user, level=EventLog.Level.WARNING,
            message=gettext_noop("Restore #%(job)d was refused; nothing was changed: "
                                 "%(reason)s"),
            params={"job": job.pk, "reason": error.english},
        )


class _Progress:
    """Writes the bytes extracted to the job at most every PROGRESS_SECONDS."""

    def __init__(self, job: RestoreJob, listener: Callable[[RestoreJob], None] | None) -> None:
        self.job = job
        self.listener = listener
        self.last = 0.0

    def phase(self, phase: str) -> None:
        self.job.set_phase(phase)
        self._tell()

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_SECONDS:
            self.last = now
            self.job.report_progress(done)
        else:
            self.job.bytes_done = done
        self._tell()

    def _tell(self) -> None:
        if self.listener is not None:
            self.listener(self.job)


class _CrashingReader:
    """The archive, passed through to the extractor; "restore.extracting" is reached mid-way."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.halfway = max(1, os.fstat(source.fileno()).st_size // 2)
        self.read_so_far = 0
        self.reached = False

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.read_so_far += len(data)
        if not self.reached and self.read_so_far >= self.halfway:
            self.reached = True
            crashpoints.reached("restore.extracting")
        return data


class Restore:
    def __init__(self, job: RestoreJob, workload: Workload, snapshot: Snapshot, limits: Limits,
                 listener: Callable[[RestoreJob], None] | None) -> None:
        self.job = job
        self.workload = workload
        self.snapshot = snapshot
        self.limits = limits
        self.progress = _Progress(job, listener)

    def run(self) -> None:
        try:
            plan = preflight.check(workload=self.workload, snapshot=self.snapshot,
                                   limits=self.limits,
                                   rollback_reference=self.job.rollback_reference)
            if self.job.rollback_configuration:
                # Looked up anew: the row may have been pruned since the job was read.
                target = DeployRecord.objects.filter(pk=self.job.rollback_to_id).first()
                preflight.check_rollback_configuration(self.workload, target)
            source = preflight.open_verified(self.snapshot)
        except PreflightError as exc:
            refuse(self.job, self.workload, exc)
            return
        except Exception:  # noqa: BLE001 - every failure must end in a finished job
            logger.exception("pre-flight of restore %s failed", self.job.pk)
            refuse(self.job, self.workload, _internal())
            return
        crashpoints.reached("restore.checked")
        with source:
            try:
                record = self._prepare(plan)
            except Exception as exc:  # noqa: BLE001 - nothing is journaled, nothing touched
                refuse(self.job, self.workload, _as_restore_error(exc, self.job))
                return
            committing = False
            try:
                self._extract(record, source)
                self._quiesce(record)
                self._swap(record)
                crashpoints.reached("restore.swapped")
                _check_lock(self.workload)
                committing = True
                record.record(journal.COMMIT)
            except BaseException as exc:
                self._undo(record, exc, commit_unknown=committing)
                if not isinstance(exc, Exception):
                    raise  # Ctrl-C in the command: put back, then stop
                return
        crashpoints.reached("restore.committed")
        try:
            self.progress.phase(Phase.STARTING)
            recovery.finish_forward(record, job=self.job, workload=self.workload)
        except (recovery.LockLost, journal.JournalTaken):
            logger.critical("restore %s lost the workload's lock after the commit; it stopped "
                            "and leaves the rest to the next holder of the lock", self.job.pk)
        except Exception:  # noqa: BLE001 - the journal keeps the rest for the recovery
            logger.exception("restore %s could not be finished; its journal is kept and the "
                             "recovery sweep (or the next deploy) will finish it", self.job.pk)
            self._bring_back(record)

    def _undo(self, record: Journal, exc: BaseException, *, commit_unknown: bool) -> None:
        try:
            recovery.roll_back(record, job=self.job, workload=self.workload,
                               error=_as_restore_error(exc, self.job),
                               commit_unknown=commit_unknown)
        except (recovery.LockLost, journal.JournalTaken):
            logger.critical("restore %s lost the workload's lock; it stopped without putting "
                            "anything back and leaves that to the next holder of the lock",
                            self.job.pk)
        except Exception:  # noqa: BLE001 - the journal keeps what is needed to try again
            logger.critical("restore %s failed and could not be undone; its journal is kept "
                            "for the recovery sweep (every minute in the task worker, and "
                            "`manage.py recover`)", self.job.pk, exc_info=True)

    def _bring_back(self, record: Journal) -> None:
        """After the commit, whatever else failed: the workload must not stay down.

        Only if no redeploy ran yet: one that ran (and perhaps failed) is in
        the ledger, and a second attempt would only restart what runs.
        """
        if RestoreJob.objects.filter(pk=self.job.pk, deploy__isnull=False).exists():
            return
        if not locks.still_held(self.workload.pk):
            return  # the next holder of the lock redeploys
        try:
            recovery.redeploy(record, self.job, self.workload, committed=True)
        except Exception:  # noqa: BLE001 - logged; the sweep redeploys again
            logger.exception("restore %s: the emergency redeploy failed", self.job.pk)

    def _prepare(self, plan: preflight.Plan) -> Journal:
        """Make any missing volume directory, choose the names beside each, journal them."""
        targets = []
        for index, live in enumerate(plan.targets):
            created = not os.path.lexists(live)
            if created:
                # A volume never deployed has no directory yet: it gets an empty
                # one now, which becomes its (empty) pre-restore copy.
                _make_durable_dirs(live)
            if os.path.islink(live) or not os.path.isdir(live):
                raise RestoreError(gettext_noop("The host path %(path)s changed during the "
                                                "checks."), path=live)
            mode = journal.EXCHANGE if exchange.supported(os.path.dirname(live)) \
                else journal.RENAME
            staging, aside = journal.beside(live, self.job.pk, index)
            targets.append(Target(
                index=index, live=live, staging=staging, aside=aside, mode=mode,
                live_id=journal.identity(live), created_live=created,
                volume=plan.describe(index),
            ))
        record = Journal(job=self.job.pk, workload=self.workload.pk, snapshot=self.snapshot.pk,
                         reference=plan.reference, targets=targets)
        if self.job.rollback_reference:
            # A rollback with data: the target's code after the commit, the running code
            # with the old data before it (docs/restore-protocol.md, "Rollback with data").
            record.reference, record.previous = self.job.rollback_reference, plan.reference
            record.rollback_to = self.job.rollback_to_id
        _check_lock(self.workload)
        record.record(journal.PREPARE)
        crashpoints.reached("restore.prepared")
        return record

    def _extract(self, record: Journal, source: BinaryIO) -> None:
        self.progress.phase(Phase.EXTRACTING)
        self.job.start_progress(self.snapshot.data_bytes)
        before = preflight.file_status(source)
        extracted = archive.extract(
            _CrashingReader(source), [t.staging for t in record.targets], limits=self.limits,
            durable=True, progress=self.progress,
        )
        self.job.report_progress(extracted.total_bytes)
        crashpoints.reached("restore.extracted")
        if preflight.file_status(source) != before:
            raise RestoreError(gettext_noop("The archive file changed while it was being "
                                            "unpacked."))
        if len(extracted.manifest["volumes"]) != len(record.targets):
            raise ArchiveError(
                gettext_noop("The archive holds %(found)d volume(s); the workload has "
                             "%(count)d."),
                found=len(extracted.manifest["volumes"]), count=len(record.targets),
            )
        for target in record.targets:
            target.staging_id = journal.identity(target.staging)
        record.record(journal.EXTRACTED)
        crashpoints.reached("restore.journaled")

    def _quiesce(self, record: Journal) -> None:
        self.progress.phase(Phase.STOPPING)
        _check_lock(self.workload)
        record.record(journal.QUIESCE)
        try:
            containers = runtime.list_containers(self.workload.pk)
            for container in containers:
                if container.running:
                    runtime.stop(container.id)
            for container in containers:
                runtime.remove(container.id)
        except runtime.EngineError as exc:
            logger.error("stopping workload %s for restore %s failed: %s", self.workload.pk,
                         self.job.pk, exc.raw)
            raise RestoreError(gettext_noop("The containers could not be stopped and removed "
                                            "(Docker: %(error)s)."), error=str(exc)) from None
        Container.objects.filter(workload=self.workload, removed__isnull=True).update(
            removed=timezone.now()
        )
        crashpoints.reached("restore.quiesced")

    def _swap(self, record: Journal) -> None:
        self.progress.phase(Phase.SWAPPING)
        for target in record.targets:
            _check_lock(self.workload)
            if not journal.same(journal.identity(target.live), target.live_id) or \
                    not journal.same(journal.identity(target.staging), target.staging_id):
                raise RestoreError(gettext_noop("The host path %(path)s changed while the "
                                                "snapshot was unpacked."), path=target.live)
            if target.mode == journal.EXCHANGE:
                record.record(journal.SWAP, index=target.index)
                exchange.exchange(target.staging, target.live)
            else:
                record.record(journal.ASIDE, index=target.index)
                os.rename(target.live, target.aside)
                crashpoints.reached("restore.aside")
                record.record(journal.PLACE, index=target.index)
                os.rename(target.staging, target.live)
            crashpoints.reached(f"restore.swapped-{target.index}")
        for parent in sorted({t.parent for t in record.targets}):
            fsync_dir(parent)


def _make_durable_dirs(path: str) -> None:
    """os.makedirs(path), with every directory it made fsynced into its parent."""
    missing = []
    probe = path
    while not os.path.lexists(probe):
        missing.append(probe)
        probe = os.path.dirname(probe)
    os.makedirs(path)
    for made in missing:  # deepest first; each one's entry lives in its parent
        fsync_dir(os.path.dirname(made))


def _check_lock(workload: Workload) -> None:
    """Before stopping the workload and before committing: the lock must really be ours.

    (A PostgreSQL advisory lock dies with its connection; another process
    could then take it and recover this restore's journal at the same time.)
    """
    if not locks.still_held(workload.pk):
        raise RestoreError(gettext_noop("The workload's lock was lost (the database connection "
                                        "dropped); the restore was stopped."))


def _internal() -> RestoreError:
    return RestoreError(gettext_noop("Berth hit an internal error; the server log has the "
                                     "details."))


def _as_restore_error(exc: BaseException, job: RestoreJob) -> SnapshotError:
    """The reason a restore stopped, for the job and the operator."""
    if isinstance(exc, SnapshotError):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return RestoreError(gettext_noop("The restore was interrupted."))
    if isinstance(exc, OSError):
        logger.error("restore %s: %s", job.pk, exc)
        return RestoreError(gettext_noop("A volume could not be prepared or swapped "
                                         "(%(error)s)."), error=exc.strerror or str(exc))
    logger.error("restore %s failed", job.pk, exc_info=exc)
    return _internal()
