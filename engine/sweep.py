"""The restore sweep: finish or undo every restore a crash interrupted, one workload at a time.

An entry point: it takes each workload's lock (try-lock: a workload whose
lock is held has a restore still running) and runs the recovery body
(engine/locked/recovery.py). `manage.py recover_restores` runs it at start-up
and every minute beside the server; docs/restore-protocol.md has the why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.locked.recovery import RecoveryError, recover_reporting
from lib import locks
from snapshots import journal
from snapshots.models import RestoreJob
from workloads.models import Workload

logger = logging.getLogger(__name__)


@dataclass
class SweepReport:
    recovered: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def recover_all(*, say: Callable[[str], None] = logger.info) -> SweepReport:
    """The sweep: every unfinished journal, then every job left running without one.

    Run at start-up (`manage.py recover_restores`) and every minute by the
    task worker (snapshots.tasks.sweep_restores). A journal whose workload's
    lock is held belongs to a restore that is still running and is left
    alone. Problems (an unreadable journal, a state no restore could leave, a
    stranger in the journal directory) are collected and reported; they
    concern only their own workload, and the other journals are still
    recovered.
    """
    report = SweepReport()
    try:
        found = journal.scan()
    except OSError as exc:
        report.problems.append(f"the restore journal directory cannot be read ({exc})")
        return report
    for path in found.strangers:
        report.problems.append(f"{path} is not a restore journal; move it away")
    adopted = _adopt_legacy(found.legacy, report)
    for workload_id in sorted(found.workloads() | adopted):
        _sweep_one(workload_id, report, say)
    running = set(RestoreJob.objects.filter(state=RestoreJob.State.RUNNING)
                  .values_list("workload_id", flat=True))
    for workload_id in sorted(running - found.workloads() - adopted):
        try:
            with locks.try_workload_lock(workload_id):
                workload = Workload.objects.get(pk=workload_id)
                if RestoreJob.fail_dead(workload=workload, lock_held=True):
                    say(f"Workload {workload_id}: an interrupted restore had changed nothing; "
                        "its job is marked failed.")
        except locks.LockTimeout:
            report.busy.append(f"workload {workload_id}")
        except Exception as exc:  # noqa: BLE001 - one workload's trouble must not stop the others
            logger.exception("workload %s: the restore sweep failed", workload_id)
            report.problems.append(f"workload {workload_id}: the sweep failed ({exc!r})")
    return report


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
    """Recover one workload's journals, under its lock if it is free."""
    try:
        with locks.try_workload_lock(workload_id):
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
    except locks.LockTimeout:
        report.busy.append(f"workload {workload_id} (a restore is still running)")
    except RecoveryError as exc:
        logger.error("workload %s: a restore cannot be recovered: %s", workload_id, exc)
        report.problems.append(f"workload {workload_id}: {exc}")
    except Exception as exc:  # noqa: BLE001 - one workload's trouble must not stop the others
        logger.exception("workload %s: the restore sweep failed", workload_id)
        report.problems.append(f"workload {workload_id}: the sweep failed ({exc!r})")
