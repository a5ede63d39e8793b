"""Finishing or undoing a restore from its journal: after a failure, and after a crash.

A journal with a COMMIT record is finished forward (redeploy, archive the
previous data, remove it); one without is rolled back (every volume put
back). What to do for each volume is decided by the inodes found on disk,
never by the journal's last step, so every step can run again. Runs under
the workload's lock; docs/restore-protocol.md ("Recovery") has the why.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from django.core.exceptions import ValidationError
from django.db import DatabaseError
from django.utils import translation
from django.utils.translation import gettext_noop

from alerts import outbox
from alerts.models import Event
from engine.locked import capture, swap_recovery
from engine.locked.deploy import dispatch_locked
from lib import crashpoints, exchange, locks, runtime
from lib.fsutil import fsync_dir, remove_tree
from snapshots import journal
from snapshots.errors import RestoreError, SnapshotError
from snapshots.journal import Journal, Target
from snapshots.models import RestoreJob
from workloads import configuration
from workloads.models import DeployRecord, EventLog, Workload

logger = logging.getLogger(__name__)

Phase, Outcome = RestoreJob.Phase, RestoreJob.Outcome


class RecoveryError(Exception):
    """What is on disk is not a state a restore can leave; nothing more was changed."""


class LockLost(RecoveryError):
    """The workload's lock is gone (its database connection dropped): change nothing more.

    Another process may hold the lock now and be recovering the same journal;
    whoever holds it next finishes or undoes the restore from the journal.
    """


def ensure_lock(record: Journal) -> None:
    """Before each step that changes volumes, containers or the journal: the lock is still ours.

    (A PostgreSQL advisory lock dies with its connection, and Django
    reconnects without it after an error; locks.still_held asks PostgreSQL.)
    """
    if not locks.still_held(record.workload):
        raise LockLost(f"restore #{record.job}: the lock of workload {record.workload} was "
                       "lost; nothing more was changed, the next holder of the lock recovers it")


# --- entry points -------------------------------------------------------------------


def recover_reporting(record: Journal) -> None:
    """recover(), with the file system's and the database's errors as RecoveryError."""
    try:
        recover(record)
    except journal.JournalTaken as exc:
        raise LockLost(f"restore #{record.job}: {exc}; nothing more was changed") from exc
    except (OSError, DatabaseError) as exc:
        logger.exception("restore %s: recovery stopped", record.job)
        raise RecoveryError(f"restore #{record.job}: recovery stopped ({exc}); it is tried "
                            "again by the next sweep") from exc


def recover_workload(workload: Workload, *, keep: DeployRecord | None = None) -> int:
    """Under the workload's lock: recover what killed processes left, then close their jobs.

    First a killed deploy's swap or capture's stop (engine/locked/swap_recovery.py:
    a restore's own redeploy may be one), then killed restores, then the jobs
    of processes that died before they journaled anything. Called by whatever
    takes the lock to change the workload (a deploy, a restore, a capture,
    the sweep) — never in a web request. Raises RecoveryError (and closes
    nothing more) if one cannot be recovered; other workloads' journals are
    never read. Returns how many journals it recovered. `keep`: the caller's
    own row, already claimed (a deploy), which is alive.
    """
    locks.assert_held(workload.pk)
    try:
        swaps = swap_recovery.recover(workload)
    except (swap_recovery.SwapRecoveryError, runtime.EngineError, OSError) as exc:
        raise RecoveryError(f"workload {workload.pk}: a killed deploy or capture cannot be "
                            f"recovered ({exc})") from exc
    try:
        journal.remove_temps(workload.pk)
        records = journal.for_workload(workload.pk)
    except (journal.JournalError, OSError) as exc:
        raise RecoveryError(str(exc)) from exc
    for record in records:
        recover_reporting(record)
    RestoreJob.fail_dead(workload=workload, lock_held=True)
    swap_recovery.fail_dead_rows(workload, keep=keep)
    return swaps + len(records)


def recover(record: Journal) -> None:
    """Finish forward or roll back one journal, by its COMMIT record. Holds the lock."""
    locks.assert_held(record.workload)
    workload = Workload.objects.with_parents().filter(pk=record.workload).first()
    job = RestoreJob.objects.select_related("user").filter(pk=record.job).first()
    logger.warning("recovering restore %s of workload %s (%s; last step %s)", record.job,
                   record.workload, "committed" if record.committed else "not committed",
                   record.steps[-1]["step"] if record.steps else "none")
    try:
        if not record.steps or record.steps[-1]["step"] != journal.RECOVER:
            # (Once: a journal the sweep keeps refusing is not rewritten every minute.)
            record.record(journal.RECOVER)
    except OSError:
        # Only a note for people; the direction and every action are decided
        # by what is on disk, so a full disk must not stop the recovery.
        logger.warning("restore %s: the recovery could not be journaled", record.job,
                       exc_info=True)
    crashpoints.reached("sweep.started")
    if record.committed:
        # Idempotent at every step, so also right for a job that is already
        # marked (only the journal's removal was cut short).
        finish_forward(record, job=job, workload=workload, recovered=True)
    elif job is not None and not job.is_active:
        _forget_finished(record)
    else:
        roll_back(record, job=job, workload=workload, error=RestoreError(gettext_noop(
            "The restore was interrupted (its process stopped, or lost the workload's lock) "
            "before its volumes were all swapped; every volume was put back as it was.")))


def _forget_finished(record: Journal) -> None:
    """The job was marked after a rollback, so only the journal's removal was cut short."""
    for target in record.targets:
        _put_back(target)
        _remove_staging(target)
    journal.remove(record)


# --- rolling back ---------------------------------------------------------------------

def roll_back(record: Journal, *, job: RestoreJob | None, workload: Workload | None,
              error: SnapshotError, commit_unknown: bool = False) -> None:
    """Before COMMIT: every volume back as it was, staging removed, the old data running again.

    `commit_unknown`: the COMMIT record's write failed, so the disk may hold
    it after all. Then the ROLLBACK record must reach the disk before any
    volume is put back — otherwise a later recovery could read COMMIT and
    finish forward over volumes that were put back. If it cannot be written,
    RecoveryError, and nothing is moved: the journal on disk, whichever
    record it holds, matches the volumes (all swapped), and the sweep goes
    the way it says.
    """
    ensure_lock(record)
    if job is not None:
        try:
            job.set_phase(Phase.ROLLING_BACK)
        except DatabaseError:
            # The files come first: a database that went away must not keep the old data away.
            logger.exception("restore %s: could not show the rollback's phase", record.job)
    if not record.has(journal.ROLLBACK):
        try:
            record.record(journal.ROLLBACK, reason=error.english)
        except OSError as exc:
            if commit_unknown:
                raise RecoveryError(f"restore #{record.job}: neither the commit nor the "
                                    f"rollback could be journaled ({exc})") from exc
            # Before any COMMIT write, putting back is decided by inodes, not
            # by this record, so a full disk must not keep the old data away.
            logger.exception("restore %s: the rollback could not be journaled", record.job)
    for target in record.targets:
        _put_back(target)
        crashpoints.reached(f"rollback.put-back-{target.index}")
    _fsync_parents(record)
    for target in record.targets:
        _remove_staging(target)
    crashpoints.reached("rollback.cleaned")
    deploy = None
    if workload is not None and record.has(journal.QUIESCE):
        # The containers were stopped (and perhaps removed): bring the old data back up.
        ensure_lock(record)
        deploy = redeploy(record, job, workload, committed=False)
    crashpoints.reached("rollback.redeployed")
    if job is not None and workload is not None and job.finish(Outcome.FAILED, error.message,
                                                               error.params):
        tell_outcome(job, workload)
        logger.warning("restore %s of workload %s failed and was undone: %s", record.job,
                       record.workload, error.english)
        EventLog.objects.create(
            workload=workload, user=job.user, level=EventLog.Level.WARNING,
            message=gettext_noop("Restore #%(job)d failed; every volume was left as it was: "
                                 "%(reason)s"),
            params={"job": record.job, "reason": error.english},
        )
        if deploy is not None and deploy.outcome != DeployRecord.Outcome.SUCCEEDED:
            _not_running_event(workload, job)
    crashpoints.reached("rollback.marked")
    journal.remove(record)


OLD, NEW, NOTHING, OTHER = "the old data", "the snapshot", "nothing", "something else"


def _what(target: Target, path: str) -> str:
    """What `path` holds now, going by the inode the journal recorded."""
    found = journal.identity(path)
    if found is None:
        return NOTHING
    if journal.same(found, target.live_id):
        return OLD
    if journal.same(found, target.staging_id):
        return NEW
    return OTHER


def _put_back(target: Target) -> None:
    """Make the live path name the old data again, whichever swap step was reached."""
    live, staging, aside = (_what(target, p) for p in (target.live, target.staging,
                                                        target.aside))
    if live == OLD:
        return  # never swapped, or already put back
    if live == NEW and staging == OLD:
        exchange.exchange(target.staging, target.live)
    elif live == NEW and aside == OLD and staging == NOTHING:
        os.rename(target.live, target.staging)
        crashpoints.reached("rollback.half-put-back")
        os.rename(target.aside, target.live)
    elif live == NOTHING and aside == OLD:
        os.rename(target.aside, target.live)
    else:
        raise RecoveryError(_found(target))
    if _what(target, target.live) != OLD:
        raise RecoveryError(_found(target))


def _remove_staging(target: Target) -> None:
    """Remove the unpacked snapshot: the staging path once the old data is back live."""
    found = _what(target, target.staging)
    if found == NOTHING:
        return
    # Without a recorded inode (killed while unpacking) the path is still one
    # only this restore makes (journal.py checks the name), so it holds a
    # partial extraction.
    if found == NEW or (found == OTHER and target.staging_id is None):
        _remove(target.staging)
    else:
        raise RecoveryError(_found(target))


# --- finishing forward ------------------------------------------------------------------

def finish_forward(record: Journal, *, job: RestoreJob | None, workload: Workload | None,
                   recovered: bool = False) -> None:
    """After COMMIT: redeploy, keep the previous data as a snapshot, remove it, close the job.

    In the restore's own process a journal write that fails stops this (the
    restore then brings the workload back and leaves the rest to the sweep).
    In a recovery (`recovered`) the records are notes: every action is
    decided by the inodes on disk and by what the database links to the job,
    so a full disk must not keep the sweep from finishing.
    """
    note = _note if recovered else _record
    ensure_lock(record)
    for target in record.targets:
        if _what(target, target.live) != NEW:
            raise RecoveryError(_found(target))
    if workload is None:
        # Deleted meanwhile: nothing to start or archive; the old data is left for people.
        logger.error("restore %s: workload %s is gone; the previous data is left in %s",
                     record.job, record.workload, [_old_copy(t) for t in record.targets])
        journal.remove(record)
        return
    started = _started(record, job)
    if started is None:
        if job is not None:
            job.set_phase(Phase.STARTING)
        note(record, journal.REDEPLOY)
        deploy = redeploy(record, job, workload, committed=True)
        started = deploy is None or deploy.outcome == DeployRecord.Outcome.SUCCEEDED
        note(record, journal.REDEPLOYED, deploy=deploy.pk if deploy else None,
             succeeded=started)
    crashpoints.reached("forward.redeployed")
    ensure_lock(record)
    _tidy(record, note)
    ensure_lock(record)
    kept, archive_error = _archive(record, job, workload, note)
    crashpoints.reached("forward.archived")
    if not kept and not record.has(journal.CLEANED):
        ensure_lock(record)
        copies = [c for c in (_old_copy(t) for t in record.targets) if c is not None]
        for copy in copies:
            _refuse_mounts(copy)
        note(record, journal.CLEANUP)
        for copy in copies:
            _remove(copy)
        note(record, journal.CLEANED)
    crashpoints.reached("forward.cleaned")
    ensure_lock(record)
    _close_forward(record, job, workload, kept, archive_error, recovered, started)
    crashpoints.reached("forward.marked")
    journal.remove(record)


def _record(record: Journal, step: str, **details: object) -> None:
    record.record(step, **details)


def _note(record: Journal, step: str, **details: object) -> None:
    """Journal `step` if the disk takes it; the recovery does not depend on it."""
    try:
        record.record(step, **details)
    except OSError:
        logger.warning("restore %s: could not journal %r; going on", record.job, step,
                       exc_info=True)


def _started(record: Journal, job: RestoreJob | None) -> bool | None:
    """Whether the redeploy after the commit brought the workload back; None if none ran."""
    done = record.last(journal.REDEPLOYED)
    if done is not None:
        return bool(done.get("succeeded"))
    if job is not None and job.deploy_id is not None:
        # It ran, but its record did not reach the journal (a full disk) — unless
        # it was itself killed mid-swap and undone: then it is run again.
        outcome, failure = DeployRecord.objects.filter(pk=job.deploy_id).values_list(
            "outcome", "failure_code").first() or (None, None)
        if failure == DeployRecord.Failure.INTERRUPTED:
            return None
        if outcome in (DeployRecord.Outcome.SUCCEEDED, DeployRecord.Outcome.FAILED):
            return outcome == DeployRecord.Outcome.SUCCEEDED
    return None


def _tidy(record: Journal, note: Callable[..., None]) -> None:
    """After an exchange the old data sits under the staging name: give it the .old name."""
    moves = [t for t in record.targets
             if t.mode == journal.EXCHANGE and _what(t, t.staging) == OLD]
    if not moves:
        return
    for target in moves:  # all checked before the note: a refusal leaves no trace
        if _what(target, target.aside) != NOTHING:
            raise RecoveryError(_found(target))
    note(record, journal.TIDY)
    for target in moves:
        os.rename(target.staging, target.aside)
    _fsync_parents(record)


def _archive(record: Journal, job: RestoreJob | None, workload: Workload,
             note: Callable[..., None]) -> tuple[list[str], str]:
    """Archive the previous data as a `pre_restore` snapshot, once.

    Returns the directories to keep (those of a failed archive) and why.
    """
    done = record.last(journal.ARCHIVED)
    if done is not None:
        return list(done.get("kept", [])), done.get("error", "")
    if job is not None:
        job.set_phase(Phase.ARCHIVING)
    snapshot = job.pre_restore_snapshot if job is not None else None
    if snapshot is not None and snapshot.is_ready:
        # Archived already; only the record of it did not reach the journal.
        note(record, journal.ARCHIVED, snapshot=snapshot.pk)
        return [], ""
    copies = [_old_copy(target) for target in record.targets]
    if None in copies:
        raise RecoveryError(f"restore #{record.job}: a copy of the previous data is missing "
                            "although it was never archived")
    note(record, journal.ARCHIVE)
    snapshot = capture.capture_copies_locked(
        workload=workload, roots=copies, volumes=[t.volume for t in record.targets],
        user=job.user if job is not None else None,
    )
    if snapshot.is_ready:
        if job is not None:
            job.link(pre_restore_snapshot=snapshot)
        note(record, journal.ARCHIVED, snapshot=snapshot.pk)
        return [], ""
    logger.error("restore %s: the previous data could not be archived (%s); kept in %s",
                 record.job, snapshot.failure, copies)
    reason = snapshot.failure_text
    note(record, journal.ARCHIVED, snapshot=None, kept=copies, error=reason)
    return copies, reason


def _close_forward(record: Journal, job: RestoreJob | None, workload: Workload,
                   kept: list[str], archive_error: str, recovered: bool,
                   started: bool) -> None:
    job = RestoreJob.objects.filter(pk=job.pk).first() if job is not None else None
    if job is None:
        return
    outcome = Outcome.SUCCEEDED if started else Outcome.NOT_STARTED
    reason, params = "", {}
    if kept:
        reason = gettext_noop("The previous data could not be archived (%(error)s); it is kept "
                              "in %(paths)s.")
        params = {"error": archive_error, "paths": ", ".join(kept)}
    elif not started:
        reason = gettext_noop("The volumes hold the snapshot, but the workload did not start "
                              "again; its previous data is snapshot #%(kept)d. Deploy it, or "
                              "restore that snapshot to go back.")
        params = {"kept": job.pre_restore_snapshot_id or 0}
    elif recovered:
        reason = gettext_noop("The restore was interrupted (its process stopped) after its "
                              "volumes were swapped; Berth finished it afterwards.")
    if not job.finish(outcome, reason, params, kept_paths=kept):
        return
    tell_outcome(job, workload)
    EventLog.objects.create(
        workload=workload, user=job.user,
        level=EventLog.Level.INFO if started and not kept else EventLog.Level.WARNING,
        message=gettext_noop("Restored snapshot #%(snapshot)d (restore #%(job)d)."),
        params={"snapshot": record.snapshot, "job": record.job},
    )
    if not started:
        _not_running_event(workload, job)


def tell_outcome(job: RestoreJob, workload: Workload) -> None:
    """Notify the channels that the restore ended (once per restore, docs/notifications.md):
    its outcome's fixed label and code, never the reason's details (paths, archive names)."""
    event = Event.RESTORE_FINISHED if job.outcome == Outcome.SUCCEEDED else Event.RESTORE_FAILED
    with translation.override(None):
        label = str(Outcome(job.outcome).label)
    outbox.notify(event, workload=workload, code=job.outcome,
                  message=gettext_noop("Restore #%(job)d of snapshot #%(snapshot)d: "
                                       "%(outcome)s."),
                  params={"job": job.pk, "snapshot": job.snapshot_id or 0, "outcome": label},
                  key=f"restore-{job.pk}")


def _not_running_event(workload: Workload, job: RestoreJob) -> None:
    EventLog.objects.create(
        workload=workload, user=job.user, level=EventLog.Level.ERROR,
        message=gettext_noop("The workload did not start again after restore #%(job)d; the "
                             "deploy history says why."),
        params={"job": job.pk},
    )


# --- shared ------------------------------------------------------------------------------

def redeploy(record: Journal, job: RestoreJob | None, workload: Workload, *,
             committed: bool) -> DeployRecord | None:
    """Bring the workload back on a pinned digest (never a newer tag); None if there is none.

    `committed`: on the snapshot's data, after the COMMIT — the journal's `reference`, and
    for a rollback with data a rollback to its target deploy. Before the commit (a
    rollback of the journal) the digest the workload ran, on its old data.
    """
    reference = record.reference if committed else record.reference_before_commit
    if not reference:
        return None
    # Linked as soon as it exists: a recovery after a kill mid-redeploy then knows it ran.
    link = (lambda deploy: job.link(deploy=deploy)) if job is not None else None
    user = job.user if job is not None else None
    if committed and record.previous is not None:
        target = DeployRecord.objects.filter(pk=record.rollback_to,
                                             workload=workload).first()
        restored = DeployRecord.RollbackRestored.CODE_DATA
        if job is not None and job.rollback_configuration and _set_configuration_back(
                workload, target, job):
            restored = DeployRecord.RollbackRestored.CODE_CONFIGURATION_DATA
        return dispatch_locked(
            workload=workload, reason=DeployRecord.Reason.ROLLBACK, reference=reference,
            user=user, backup=False, opened=link, rolled_back_from=target,
            rollback_restored=restored,
        )
    return dispatch_locked(
        workload=workload, reason=DeployRecord.Reason.RESTORE, reference=reference,
        user=user, backup=False, opened=link,
    )


def _set_configuration_back(workload: Workload, target: DeployRecord | None,
                            job: RestoreJob) -> bool:
    """A rollback with data and configuration: the configuration `target` ran, set back
    after the swap and before the redeploy (again, the same, if a crash comes between).

    The pre-flight under the lock checked that it can be; False if it still cannot
    (the deploy row gone, a port another workload took since): the data is swapped
    by now, so the redeploy goes on with the configuration as it is, a warning event
    says why, and the ledger row says code+data only.
    """
    # As it is now: an edit saved while the data was unpacked is not undone by fields
    # the set-back does not touch.
    workload.refresh_from_db()
    if target is None or target.configuration is None:
        reason = "the deploy to roll back to is no longer in the history"
    else:
        try:
            configuration.apply(workload, target.configuration,
                                reference=target.pinned_reference)
            return True
        except ValidationError as exc:
            reason = "; ".join(exc.messages)
    logger.error("workload %s: restore %s did not set the configuration back: %s",
                 workload.pk, job.pk, reason)
    EventLog.objects.create(
        workload=workload, user=job.user, level=EventLog.Level.WARNING,
        message=gettext_noop("Rollback with data (restore #%(job)d): the configuration was "
                             "not set back (%(reason)s); the code and the data were."),
        params={"job": job.pk, "reason": reason},
    )
    return False


def _old_copy(target: Target) -> str | None:
    """Where the volume's previous data is now (after the swap), or None once removed."""
    for path in (target.aside, target.staging):
        if _what(target, path) == OLD:
            return path
    return None


def _refuse_mounts(path: str) -> None:
    mounts = exchange.mounts_at_or_below(path)
    if mounts:
        raise RecoveryError(f"{path} holds a mount point ({mounts[0]}); it is left alone")


def _remove(path: str) -> None:
    """Remove a tree this restore made or swapped out, never crossing into a mounted filesystem."""
    _refuse_mounts(path)
    remove_tree(path)
    fsync_dir(os.path.dirname(path))


def _fsync_parents(record: Journal) -> None:
    for parent in sorted({t.parent for t in record.targets}):
        if os.path.isdir(parent):
            fsync_dir(parent)


def _found(target: Target) -> str:
    found = ", ".join(f"{name} {path}: {_what(target, path)} {journal.identity(path)}"
                      for name, path in (("live", target.live), ("staging", target.staging),
                                         ("aside", target.aside)))
    return (f"volume {target.index}: the old data is inode {target.live_id}, the snapshot "
            f"{target.staging_id}; found {found}. Nothing more was changed.")
