"""A workload's CPU and memory history, aggregated and downsampled in the database.

Samples join through the Container index, so a window covers every container
the workload had in it — replicas side by side, and generations replaced by a
redeploy. The database sums each tick's samples across the containers (a
tick's samples share one timestamp), then averages those totals per time
bucket: a point is the mean of its bucket's per-tick totals. At a step of one
interval a bucket holds one tick, so a point is that tick's total. Windows cut
into whole minutes read the periods already rolled up from the per-minute (or
per-hour) rollups instead (workloads/stats_rollups.py). Each call runs a fixed
number of queries, whatever the number of containers or samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connections
from django.db.models import Count, F, FloatField, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from workloads.models import ContainerStatsSample, DeployRecord, StatsRollup, Workload
from workloads.stats_rollups import HOUR, MINUTE, EpochBucket, floor_to

WINDOWS: dict[str, int] = {
    "15m": 15 * 60,
    "1h": 3600,
    "6h": 6 * 3600,
    "24h": 24 * 3600,
    "7d": 7 * 86400,
}
WINDOW_LABELS = {
    "15m": _("15 minutes"),
    "1h": _("1 hour"),
    "6h": _("6 hours"),
    "24h": _("24 hours"),
    "7d": _("7 days"),
}
DEFAULT_WINDOW = "1h"
MAX_POINTS = 1000
# Steps a window may be cut into: round numbers, so buckets start on the minute or hour.
STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
MARKER_KINDS = {
    DeployRecord.Reason.ROLLBACK: "rollback",
    DeployRecord.Reason.RESTORE: "restore",
}


class UnknownWindow(ValueError):
    pass


@dataclass(frozen=True)
class Point:
    t: datetime
    cpu_percent: float
    memory_bytes: int
    containers: int

    @property
    def memory_mib(self) -> float:
        return self.memory_bytes / (1024 * 1024)


@dataclass(frozen=True)
class Marker:
    t: datetime
    kind: str  # deploy | rollback | restore
    outcome: str
    deploy: int


@dataclass(frozen=True)
class History:
    window: str
    step_seconds: int
    start: datetime
    end: datetime
    points: list[Point]
    markers: list[Marker]


def step_for(window_seconds: int, interval: int) -> int:
    """The smallest round step, no finer than the sampling interval, giving ≤ MAX_POINTS."""
    for step in STEPS:
        if step >= interval and window_seconds / step <= MAX_POINTS:
            return step
    return max(interval, math.ceil(window_seconds / MAX_POINTS))


def history(*, workload: Workload, window: str, now: datetime | None = None) -> History:
    """The workload's usage over `window` (a WINDOWS key), with its deploy markers.

    Two queries (three for a window cut into whole minutes). Buckets start
    on multiples of the step (UTC), the first one at or after now − window,
    so every bucket but the newest is complete.
    """
    if window not in WINDOWS:
        raise UnknownWindow(window)
    end = now or timezone.now()
    step = step_for(WINDOWS[window], settings.BERTH_STATS_INTERVAL)
    first = math.ceil((end.timestamp() - WINDOWS[window]) / step) * step
    start = datetime.fromtimestamp(first, UTC)
    return History(
        window=window, step_seconds=step, start=start, end=end,
        points=_points(workload, start, end, step), markers=_markers(workload, start, end),
    )


def _points(workload: Workload, start: datetime, end: datetime, step: int) -> list[Point]:
    """One query: per bucket, the sum of its ticks' totals ÷ its number of ticks.

    When the step is a whole number of minutes (or hours), the periods the
    sampler has rolled up come from StatsRollup and only the newest ones from
    the raw samples, so a long window reads thousands of rows, not a million;
    the numbers are the same either way (a rollup row holds the sums and the
    tick count of its period). The outer level is the only SQL text here: the
    ORM cannot select FROM a union of subqueries.
    """
    parts, lower = [], start
    for resolution, until in _rolled_until(workload, step).items():
        upper = min(until, floor_to(end, resolution))
        if upper > lower:
            parts.append(_rollup_part(workload, resolution, lower, upper, step))
            lower = upper
    parts.append(_sample_part(workload, lower, end, step))
    sql, params = [], []
    for n, part in enumerate(parts):
        inner, inner_params = part.query.sql_with_params()
        sql.append(
            f"SELECT bucket, cpu, memory, containers, tick_count FROM ({inner}) part{n}"  # noqa: S608
        )
        params.extend(inner_params)
    union = " UNION ALL ".join(sql)
    query = (
        "SELECT bucket, SUM(cpu) / SUM(tick_count), SUM(memory) / SUM(tick_count), "  # noqa: S608
        f"SUM(containers) / SUM(tick_count) FROM ({union}) parts GROUP BY bucket ORDER BY bucket"
    )
    with connections[parts[0].db].cursor() as cursor:
        cursor.execute(query, params)
        rows = cursor.fetchall()
    return [
        Point(
            t=datetime.fromtimestamp(bucket, UTC),
            cpu_percent=round(cpu, 2),
            memory_bytes=round(memory),
            containers=round(containers),
        )
        for bucket, cpu, memory, containers in rows
    ]


def _rolled_until(workload: Workload, step: int) -> dict[int, datetime]:
    """Where the workload's rollups that fit `step` end, coarsest first; one query, or none.

    Past the end of its newest rollup row, a workload's samples are not rolled
    up yet: the sampler rolls every workload's minutes up together, in order.
    """
    fitting = [r for r in (HOUR, MINUTE) if step % r == 0]
    if not fitting:
        return {}
    rows = StatsRollup.objects.filter(workload=workload).order_by("-start").values("start")
    newest = (
        Workload.objects.filter(pk=workload.pk)
        .values_list(*(Subquery(rows.filter(resolution=r)[:1]) for r in fitting))
        .first()
    ) or ()
    return {
        r: at + timedelta(seconds=r) for r, at in zip(fitting, newest, strict=False) if at
    }


def _rollup_part(
    workload: Workload, resolution: int, start: datetime, end: datetime, step: int,
) -> QuerySet:
    """The rollup rows of [start, end), one per period, with the bucket each falls in."""
    return StatsRollup.objects.filter(
        workload=workload, resolution=resolution, start__gte=start, start__lt=end,
    ).order_by().values(
        bucket=EpochBucket("start", step), cpu=F("cpu_percent"), memory=F("memory_bytes"),
        containers=Cast("samples", FloatField()), tick_count=Cast("ticks", FloatField()),
    )


def _sample_part(workload: Workload, start: datetime, end: datetime, step: int) -> QuerySet:
    """Each tick's totals over [start, end], from the raw samples, as a rollup row of one tick.

    Two levels (the tick's totals, then their mean per bucket) rather than
    SUM(x) / COUNT(DISTINCT timestamp) per bucket: DISTINCT makes PostgreSQL
    sort every sample instead of hashing them, which on a day of ten
    containers (57,600 samples) took it from about 20 ms to 50 ms.
    """
    return (
        ContainerStatsSample.objects.filter(
            container__workload=workload, timestamp__gte=start, timestamp__lte=end
        )
        # A container removed before the window has no samples in it: leave it
        # out before the samples index is even looked at.
        .filter(Q(container__removed__isnull=True) | Q(container__removed__gte=start))
        .values("timestamp")
        .annotate(
            bucket=EpochBucket("timestamp", step),
            cpu=Sum("cpu_percent"),
            memory=Sum(Cast("memory_bytes", FloatField())),
            containers=Cast(Count("pk"), FloatField()),
            tick_count=Value(1.0, FloatField()),
        )
        .order_by()
    )


def _markers(workload: Workload, start: datetime, end: datetime) -> list[Marker]:
    """Deploys, rollbacks and restores whose containers changed (or failed to) in the window."""
    rows = (
        DeployRecord.objects.filter(workload=workload, created__lte=end)
        .annotate(t=Coalesce(F("finished"), F("started"), F("created")))
        .filter(t__gte=start, t__lte=end)
        .order_by("t", "pk")
        .values_list("pk", "t", "reason", "outcome")
    )
    return [
        Marker(t=t, kind=MARKER_KINDS.get(reason, "deploy"), outcome=outcome, deploy=pk)
        for pk, t, reason, outcome in rows
    ]


def latest(*, workload: Workload, now: datetime | None = None) -> Point | None:
    """The newest tick's totals, if the sampler wrote one in the last three intervals.

    Older than that, the sampler (or the workload) is not running: there is
    no current value to show.
    """
    now = now or timezone.now()
    since = now - timedelta(seconds=3 * settings.BERTH_STATS_INTERVAL)
    row = (
        ContainerStatsSample.objects.filter(container__workload=workload, timestamp__gte=since)
        .values("timestamp")
        .annotate(cpu=Sum("cpu_percent"), memory=Sum("memory_bytes"), containers=Count("pk"))
        .order_by("-timestamp")
        .first()
    )
    if row is None:
        return None
    return Point(
        t=row["timestamp"], cpu_percent=round(row["cpu"], 2),
        memory_bytes=int(row["memory"]), containers=row["containers"],
    )
