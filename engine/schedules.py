"""Scheduled backups: the tick that finds each workload's due run and takes its snapshot.

django-q2 fires tick() every minute (a CRON schedule the backups migrations
create), in the worker `make run` already starts. A workload is due when
its policy's newest scheduled time is after both the policy's
`active_since` and the workload's last run; a run is recorded once per
workload and scheduled time (a unique constraint), is late when it starts
more than BERTH_SCHEDULE_LATE_AFTER after its time, and stands for the runs
missed while Berth was down (counted, not made up). The snapshot is a
`scheduled` one, taken like any other (the workload's consistency setting),
and its copies follow the copy rules and the policy's targets.
docs/schedules.md describes it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext_noop

from alerts.outbox import notify
from backups import health
from backups.schedules import BackupPolicy, BackupRun
from engine import captures
from engine.locked import retention
from snapshots.models import Snapshot
from workloads.models import Workload

logger = logging.getLogger(__name__)

# Scheduled times counted as missed between two runs, at most (a cron of every minute
# over a month's outage would otherwise be counted one by one).
MAX_COUNTED = 10_000


def tick(*, now: datetime | None = None) -> list[BackupRun]:
    """Start every due run; returns the runs recorded. `now` is the clock (tests move it)."""
    now = now or timezone.now()
    runs = []
    for workload in Workload.objects.with_parents().order_by("pk"):
        policy = BackupPolicy.objects.for_workload(workload)
        if policy is None or not policy.enabled:
            continue
        try:
            run = _run_if_due(workload, policy, now)
        except Exception:  # noqa: BLE001 - one workload's trouble never stops the others
            logger.exception("the scheduled backup of workload %s could not start", workload.pk)
            continue
        if run is not None:
            runs.append(run)
    return runs


def next_run(workload: Workload, *, now: datetime | None = None) -> datetime | None:
    """When the workload's next scheduled snapshot is due, or None without a policy."""
    policy = BackupPolicy.objects.for_workload(workload)
    if policy is None or not policy.enabled:
        return None
    return policy.upcoming(now)


@dataclass(frozen=True)
class KeepPreview:
    """One workload's ready scheduled snapshots that a policy's keep rules would delete."""

    workload: Workload
    deleted: list[Snapshot]  # newest first


def preview_keep(*, policy: BackupPolicy) -> list[KeepPreview]:
    """What retention would delete under `policy` (an edit, saved or not), for each workload
    that follows it: the same choice as retention's, the protected snapshots spared, in the
    policy's time zone. Reads only; nothing is deleted."""
    found = []
    for workload in policy.followers():
        ids = retention.scheduled_stale_ids(workload, policy, retention.protected_ids(workload))
        by_id = Snapshot.objects.in_bulk(ids)
        found.append(KeepPreview(workload, [by_id[pk] for pk in ids if pk in by_id]))
    return found


def _run_if_due(workload: Workload, policy: BackupPolicy, now: datetime) -> BackupRun | None:
    due = policy.previous(now)
    since = max(policy.active_since, workload.created)
    if due <= since:
        return None
    last = (workload.backup_runs.order_by("-scheduled_for")
            .values_list("scheduled_for", flat=True).first())
    if last is not None and (due <= last or _wall(policy, due) == _wall(policy, last)):
        # The second time is the same wall-clock time when the clocks went back: one run.
        return None
    late = now - due > timedelta(seconds=settings.BERTH_SCHEDULE_LATE_AFTER)
    try:
        with transaction.atomic():
            run = BackupRun.objects.create(
                workload=workload, policy=policy, scheduled_for=due, started=now, late=late,
                missed=_missed(policy, max(last or since, since), due))
    except IntegrityError:
        return None  # another tick took this run
    try:
        run.snapshot = captures.request_snapshot(workload=workload,
                                                 kind=Snapshot.Kind.SCHEDULED)
    except captures.SnapshotBusy as exc:
        run.outcome, run.reason = BackupRun.Outcome.REFUSED, exc.message[:200]
    run.save(update_fields=["snapshot", "outcome", "reason"])
    log = logger.warning if late or run.outcome != BackupRun.Outcome.STARTED else logger.info
    log("scheduled backup of workload %s for %s: %s%s", workload.pk, due.isoformat(),
        run.outcome, " (late)" if late else "")
    return run


def _wall(policy: BackupPolicy, moment: datetime) -> datetime:
    """The wall-clock time `moment` is in the policy's zone (without the zone)."""
    return moment.astimezone(policy.zone).replace(tzinfo=None)


def _missed(policy: BackupPolicy, after: datetime, due: datetime) -> int:
    """The scheduled times strictly between `after` and `due`: runs that never happened."""
    count, moment = 0, after
    while count < MAX_COUNTED:
        moment = policy.following(moment)
        if moment >= due:
            return count
        count += 1
    return count


def missed(*, now: datetime | None = None) -> list[Workload]:
    """The dead man's switch, run by the sweep: every workload that is overdue by its backup
    health (no successful scheduled snapshot for twice its policy's interval, once the policy
    has been active that long) is told about (backup_missed), once per stretch of silence.
    It fires even when the tick itself never ran."""
    now = now or timezone.now()
    workloads = list(Workload.objects.with_parents().order_by("pk"))
    silent = []
    states = health.health_of(workloads, now=now)
    for workload in workloads:
        state = states[workload.pk]
        if not state.overdue:
            continue
        silent.append(workload)
        # One notification per stretch: the key names the last good snapshot's time.
        since = state.last_scheduled or max(state.policy.active_since, workload.created)
        notify("backup_missed", workload=workload, code="backup_missed",
               message=gettext_noop("No scheduled snapshot has succeeded for %(hours)d "
                                    "hours (the policy runs every %(every)s)."),
               params={"hours": int((now - since).total_seconds() // 3600),
                       "every": state.policy.describe()},
               key=f"missed-{workload.pk}-{since.isoformat()}")
    return silent
