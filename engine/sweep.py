"""The sweep: finish or undo whatever killed processes left, one workload at a time.

An entry point: for every workload with a journal (a restore's, or a deploy's
or capture's container journal) or a job whose process is gone, it takes the
workload's lock (try-lock: a held lock means the work is still running) and
runs the recovery body (engine/locked/recovery.py); it fails the queued jobs
of dead processes and removes the temporary files and free-space reservations
they left (snapshots/reservations.py), and queues
again the failed snapshot copies and notifications whose backoff is over
(engine/copy_upkeep.py, engine/alerts.py). `manage.py
recover` runs it at start-up and every minute beside the server;
docs/restore-protocol.md and docs/deploys.md have the why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from engine import alerts, copies, copy_upkeep, disaster, drills, lost, schedules
from engine.locked import swap_recovery
from engine.locked.recovery import RecoveryError, recover_reporting
from lib import locks, redact, runtime
from snapshots import journal, reservations, storage
from snapshots.models import RestoreJob
from workloads import container_journal
from workloads.models import Workload

logger = logging.getLogger(__name__)


@dataclass
class SweepReport:
    recovered: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # Journals left for the next sweep because the Docker engine does not answer.
    waiting: list[str] = field(default_factory=list)


def recover_all(*, say: Callable[[str], None] = logger.info,
                now: datetime | None = None) -> SweepReport:
    """The sweep: every unfinished journal, every job whose process is gone, their files,
    and the failed copies due to be tried again (`now`: the clock their backoff is read on).

    A journal whose workload's lock is held belongs to work still running and
    is left alone. Problems (an unreadable journal, a state no restore could
    leave, a stranger in the journal directory) are collected and reported;
    they concern only their own workload, and the others are still recovered.
    """
    report = SweepReport()
    try:
        found = journal.scan()
        with_journals = found.workloads() | container_journal.workloads()
    except OSError as exc:
        report.problems.append(f"a journal directory cannot be read ({exc})")
        return report
    for path in found.strangers:
        report.problems.append(f"{path} is not a restore journal; move it away")
    with_journals |= _adopt_legacy(found.legacy, report)
    for workload_id in sorted(with_journals):
        _sweep_one(workload_id, report, say)
    abandoned = lost.fail_lost()
    if abandoned:
        say(f"{abandoned} queued job(s) whose worker had stopped are marked failed.")
    lost_copies = copies.fail_lost()
    if lost_copies:
        say(f"{lost_copies} snapshot copy(ies) whose worker had stopped are marked failed; "
            "what they left on their targets is removed.")
    try:
        silent = schedules.missed(now=now)
    except Exception as exc:  # noqa: BLE001 - the alarm's trouble must not stop the recovery
        logger.exception("checking for missed backups failed")
        report.problems.append(f"missed backups could not be checked ({exc!r})")
    else:
        if silent:
            say(f"{len(silent)} workload(s) have had no successful scheduled backup for twice "
                "their interval.")
    lost_drills = drills.fail_lost()
    if lost_drills:
        say(f"{lost_drills} restore drill(s) whose worker had stopped are marked failed.")
    lost_recoveries = disaster.fail_lost()
    if lost_recoveries:
        say(f"{lost_recoveries} recovery(ies) from backup whose worker had stopped are marked "
            "failed.")
    try:
        retried = copy_upkeep.retry_due(now=now)
    except Exception as exc:  # noqa: BLE001 - the copies' trouble must not stop the recovery
        logger.exception("retrying failed copies failed")
        report.problems.append(f"failed copies could not be retried ({exc!r})")
    else:
        if retried:
            say(f"{retried} failed snapshot copy(ies) are tried again.")
    try:
        strays = copy_upkeep.abort_strays(now=now)
    except Exception as exc:  # noqa: BLE001 - the targets' trouble must not stop the recovery
        logger.exception("aborting stray uploads failed")
        report.problems.append(f"stray uploads could not be aborted ({exc!r})")
    else:
        if strays:
            say(f"{strays} unfinished upload(s) no copy owned are aborted on their targets.")
    _notifications(report, say, now)
    for workload_id in sorted(lost.workloads_with_started_jobs() - with_journals):
        try:
            with locks.try_workload_lock(workload_id):
                workload = Workload.objects.with_parents().filter(pk=workload_id).first()
                if workload is not None and (RestoreJob.fail_dead(workload=workload,
                                                                  lock_held=True)
                                             + swap_recovery.fail_dead_rows(workload)):
                    say(f"Workload {workload_id}: a job whose process had stopped before it "
                        "changed anything is marked failed.")
        except locks.LockTimeout:
            pass  # the job holds its lock: it is running
        except Exception as exc:  # noqa: BLE001 - one workload's trouble must not stop the others
            logger.exception("workload %s: the sweep failed", workload_id)
            report.problems.append(f"workload {workload_id}: the sweep failed ({exc!r})")
    try:
        removed = storage.sweep_abandoned()
    except OSError as exc:
        report.problems.append(f"the snapshot directory cannot be swept ({exc})")
    else:
        if removed:
            say(f"Removed {removed} temporary file(s) that stopped processes left.")
    try:
        released = reservations.sweep_dead()
    except OSError as exc:
        report.problems.append(f"the reservations directory cannot be swept ({exc})")
    else:
        if released:
            say(f"Released {released} free-space reservation(s) of stopped processes.")
    return report


def _notifications(report: SweepReport, say: Callable[[str], None],
                   now: datetime | None) -> None:
    """Notifications whose worker stopped are failed, and those due are tried again."""
    try:
        lost_ones = alerts.fail_lost()
        retried = alerts.retry_due(now=now)
    except Exception as exc:  # noqa: BLE001 - the channels' trouble must not stop the recovery
        logger.exception("retrying failed notifications failed")
        report.problems.append(f"failed notifications could not be retried ({exc!r})")
        return
    if lost_ones:
        say(f"{lost_ones} notification(s) whose worker had stopped are marked failed.")
    if retried:
        say(f"{retried} failed notification(s) are tried again.")


def _adopt_legacy(paths: list, report: SweepReport) -> set[int]:
    """Journals an older Berth named `job-<id>.json`: renamed (under their workload's lock) to
    today's names, so they are recovered like the others. Returns their workloads."""
    adopted = set()
    for path in paths:
        try:
            workload_id = journal.legacy_workload(path)
            with locks.try_workload_lock(workload_id):
                journal.adopt_legacy(path, workload_id)
            adopted.add(workload_id)
        except journal.JournalError as exc:
            report.problems.append(str(exc))
        except locks.LockTimeout:
            report.busy.append(f"{path} (its workload is locked)")
        except OSError as exc:
            report.problems.append(f"{path} cannot be renamed ({exc})")
    return adopted


def _sweep_one(workload_id: int, report: SweepReport, say: Callable[[str], None]) -> None:
    """Recover one workload's journals, under its lock if it is free.

    Container journals first: a killed restore's own redeploy may be one, and
    its swap is settled before the restore's recovery redeploys again.
    """
    workload = None
    try:
        with locks.try_workload_lock(workload_id):
            workload = Workload.objects.with_parents().filter(pk=workload_id).first()
            if workload is None:
                swap_recovery.forget(workload_id)
            elif swap_recovery.recover(workload, say=say):
                report.recovered.append(f"the containers of workload {workload_id}")
            journal.remove_temps(workload_id)
            for _workload, _job, path in journal.scan(workload_id).journals:
                try:
                    record = journal.load(path)
                except journal.JournalError as exc:
                    report.problems.append(str(exc))
                    return  # this workload's later journals wait for this one
                direction = "finishing" if record.committed else "undoing"
                say(f"Restore #{record.job} of workload {record.workload}: {direction} it.")
                recover_reporting(record)
                report.recovered.append(f"restore #{record.job}")
            if workload is not None:
                RestoreJob.fail_dead(workload=workload, lock_held=True)
                swap_recovery.fail_dead_rows(workload)
    except locks.LockTimeout:
        report.busy.append(f"workload {workload_id} (a deploy, capture or restore is still "
                           "running)")
    except runtime.EngineUnreachable:
        report.waiting.append(f"workload {workload_id} (the Docker engine does not answer)")
    except (RecoveryError, swap_recovery.SwapRecoveryError) as exc:
        logger.error("workload %s: cannot be recovered: %s", workload_id, exc)
        report.problems.append(f"workload {workload_id}: {exc}")
    except runtime.EngineError as exc:
        # The engine's own words go to the log only, without credentials or secrets.
        logger.error("workload %s: the sweep failed: %s (the engine said: %s)", workload_id, exc,
                     redact.for_log(exc.raw, workload.secret_values() if workload else ()))
        report.problems.append(f"workload {workload_id}: the sweep failed ({exc})")
    except Exception as exc:  # noqa: BLE001 - one workload's trouble must not stop the others
        logger.exception("workload %s: the sweep failed", workload_id)
        report.problems.append(f"workload {workload_id}: the sweep failed ({exc!r})")
