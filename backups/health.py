"""Backup health: is a workload's data being backed up as its policy says?

One answer per workload, read from the rows the tick, the captures and the
copies leave (docs/schedules.md, "Health"): the last scheduled run, the last
successful backup, the last offsite copy, the next run, and whether something
needs a person. `health_of` answers for many workloads in a fixed number of
queries (the dashboard); `health` for one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import F, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from backups.models import SnapshotCopy
from backups.schedules import BackupPolicy, BackupRun, RestoreDrill
from snapshots.models import Snapshot
from workloads.models import Workload

# Newest finished first; a row without its time (none should lack it) last, on every database.
BY_FINISHED = (F("finished").desc(nulls_last=True), "-pk")
# A copy's last word: what it ended as (a removed copy was verified before retention took it).
FINISHED_COPY_STATES = (SnapshotCopy.State.VERIFIED, SnapshotCopy.State.FAILED,
                        SnapshotCopy.State.REMOVED)


@dataclass(frozen=True)
class Health:
    """What the pages and the API show about one workload's backups.

    `stale`: the workload has an enabled policy and no successful scheduled
    snapshot within twice the schedule's interval (once the policy has been
    active that long), or its last finished offsite copy failed. `failing`:
    the last scheduled run was not taken, or its snapshot failed.
    """

    policy: BackupPolicy | None
    last_run: BackupRun | None
    last_backup: Snapshot | None  # the newest ready snapshot of any kind
    last_copy: SnapshotCopy | None  # the newest finished copy, to any target
    last_verified_copy: SnapshotCopy | None
    next_run: datetime | None
    expected_within: timedelta | None  # twice the schedule's interval, with a policy enabled
    overdue: bool
    stale: bool
    checked: datetime  # the clock the answer was read at
    failing: bool
    last_drill: RestoreDrill | None = None  # the newest finished restore drill
    last_scheduled: datetime | None = None  # when the newest ready scheduled snapshot was taken
    # The newest drill failed, or none passed within twice the policy's drill interval.
    drill_stale: bool = False

    @property
    def follows(self) -> str:
        """Whose policy the workload follows: `workload`, `stage`, `project`, or ""."""
        return self.policy.owner_kind if self.policy is not None else ""

    @property
    def copy_failed(self) -> bool:
        return self.last_copy is not None and self.last_copy.state == SnapshotCopy.State.FAILED

    @property
    def needs_attention(self) -> bool:
        return self.stale or self.failing or self.drill_stale

    @property
    def expected_since(self) -> datetime | None:
        """The start of the window a successful scheduled snapshot is expected in."""
        return self.checked - self.expected_within if self.expected_within else None

    @property
    def mark(self) -> str:
        """One word for the pages' badge: `failing`, `stale`, `ok`, or `none` (no policy)."""
        if self.failing:
            return "failing"
        if self.stale or self.drill_stale:
            return "stale"
        return "ok" if self.policy is not None and self.policy.enabled else "none"


def health(workload: Workload, *, now: datetime | None = None) -> Health:
    return health_of([workload], now=now)[workload.pk]


def health_of(workloads: Sequence[Workload], *, now: datetime | None = None
              ) -> dict[int, Health]:
    """Each workload's health by its id, in seven queries whatever their number.

    The workloads need their stage loaded (`Workload.objects.with_parents()`).
    `now` is the clock (tests set it).
    """
    now = now or timezone.now()
    ids = [w.pk for w in workloads]
    policies = _policies(workloads)
    runs = {r.workload_id: r for r in _newest(
        BackupRun.objects.select_related("snapshot"), ids, "-scheduled_for", "-pk")}
    ready = Snapshot.objects.filter(state=Snapshot.State.READY).only(
        "pk", "workload_id", "kind", "imported", "created", "finished")
    backups = {s.workload_id: s for s in _newest(ready, ids, "-created", "-pk")}
    scheduled = {s.workload_id: s.created for s in _newest(
        ready.filter(kind=Snapshot.Kind.SCHEDULED, imported=False), ids, "-created", "-pk")}
    copies = SnapshotCopy.objects.select_related("target").only(
        "pk", "workload_id", "snapshot_id", "state", "failure_code", "created", "finished",
        "target__name")
    last_copies = {c.workload_id: c for c in _newest(
        copies.filter(state__in=FINISHED_COPY_STATES), ids, *BY_FINISHED)}
    verified = {c.workload_id: c for c in _newest(
        copies.filter(state__in=[SnapshotCopy.State.VERIFIED, SnapshotCopy.State.REMOVED]),
        ids, *BY_FINISHED)}
    finished_drills = RestoreDrill.objects.filter(
        state__in=[RestoreDrill.State.PASSED, RestoreDrill.State.FAILED]).only(
        "pk", "workload_id", "state", "finished", "failure_code", "remote_key")
    drills = {d.workload_id: d for d in _newest(finished_drills, ids, "-finished", "-pk")}
    found = {}
    for workload in workloads:
        policy = policies(workload)
        run = runs.get(workload.pk)
        last_copy = last_copies.get(workload.pk)
        enabled = policy is not None and policy.enabled
        interval = policy.readable_interval(now) if enabled else None
        window = 2 * interval if interval is not None else None
        overdue = _overdue(workload, policy, window, scheduled.get(workload.pk), now)
        found[workload.pk] = Health(
            policy=policy, last_run=run, last_backup=backups.get(workload.pk),
            last_copy=last_copy, last_verified_copy=verified.get(workload.pk),
            next_run=policy.upcoming(now) if enabled else None, expected_within=window,
            overdue=overdue, checked=now, last_scheduled=scheduled.get(workload.pk),
            stale=overdue or (last_copy is not None
                              and last_copy.state == SnapshotCopy.State.FAILED),
            failing=_run_failed(run) or _drill_failed(drills.get(workload.pk)),
            last_drill=drills.get(workload.pk),
            drill_stale=_drill_stale(workload, policy, drills.get(workload.pk), now))
    return found


def _drill_failed(drill: RestoreDrill | None) -> bool:
    return drill is not None and drill.state == RestoreDrill.State.FAILED


def _drill_stale(workload: Workload, policy: BackupPolicy | None, drill: RestoreDrill | None,
                 now: datetime) -> bool:
    """The policy wants drills, and the last one failed or is older than twice its
    interval (once the policy has been active that long)."""
    if policy is None or not policy.enabled or not policy.drill_every_days:
        return False
    if _drill_failed(drill):
        return True
    allowed = 2 * timedelta(days=policy.drill_every_days)
    if now - max(policy.active_since, workload.created) <= allowed:
        return False
    return drill is None or now - drill.finished > allowed


def _newest(rows: QuerySet, ids: list[int], *order) -> QuerySet:
    """The newest of `rows` per workload of `ids` (one query: a correlated subquery)."""
    newest = rows.filter(workload=OuterRef("workload")).order_by(*order).values("pk")[:1]
    return rows.filter(workload__in=ids, pk=Subquery(newest))


def _policies(workloads: Sequence[Workload]):
    """A lookup of the policy each workload follows, from one query (the same order as
    BackupPolicy.objects.for_workload: its own, its stage's, its project's)."""
    rows = BackupPolicy.objects.filter(
        Q(workload__in=[w.pk for w in workloads])
        | Q(stage__in={w.stage_id for w in workloads})
        | Q(project__in={w.stage.project_id for w in workloads}))
    by_owner = {(p.owner_kind, p.workload_id or p.stage_id or p.project_id): p for p in rows}

    def lookup(workload: Workload) -> BackupPolicy | None:
        for key in (("workload", workload.pk), ("stage", workload.stage_id),
                    ("project", workload.stage.project_id)):
            if key in by_owner:
                return by_owner[key]
        return None

    return lookup


def _overdue(workload: Workload, policy: BackupPolicy | None, window: timedelta | None,
             last_success: datetime | None, now: datetime) -> bool:
    """No successful scheduled snapshot within `window`, though the policy has been active
    (and the workload there) that long. A disabled policy (window None) expects nothing."""
    if policy is None or window is None:
        return False
    if now - max(policy.active_since, workload.created) <= window:
        return False
    return last_success is None or now - last_success > window


def _run_failed(run: BackupRun | None) -> bool:
    if run is None:
        return False
    if run.outcome == BackupRun.Outcome.REFUSED:
        return True
    return run.snapshot is not None and run.snapshot.state == Snapshot.State.FAILED
