"""A workload's CPU and memory history, aggregated and downsampled in the database.

Samples join through the Container index, so a window covers every container
the workload had in it — replicas side by side, and generations replaced by a
redeploy. The database sums each tick's samples across the containers (a
tick's samples share one timestamp), then averages those totals per time
bucket: a point is the mean of its bucket's per-tick totals. At a step of one
interval a bucket holds one tick, so a point is that tick's total. Each call
runs a fixed number of queries, whatever the number of containers or samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connections
from django.db.models import BigIntegerField, Count, F, FloatField, Func, Q, Sum
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from workloads.models import ContainerStatsSample, DeployRecord, Workload

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


class EpochBucket(Func):
    """The start of the `step`-second bucket a datetime falls in, in seconds since the epoch."""

    output_field = BigIntegerField()

    def __init__(self, expression, step: int) -> None:
        super().__init__(expression)
        self.step = int(step)  # an int, inlined: a parameter would break GROUP BY on PostgreSQL

    def as_sqlite(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        # '%%s': the backend turns '%%' into '%' when it converts the placeholders.
        return f"((CAST(strftime('%%s', {sql}) AS INTEGER) / {self.step}) * {self.step})", params

    def as_postgresql(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        # date_part() is double precision; EXTRACT() is numeric (PostgreSQL 14+), far slower.
        return f"(FLOOR(date_part('epoch', {sql}) / {self.step}) * {self.step})::bigint", params

    def as_sql(self, compiler, connection, **extra):
        raise NotImplementedError(f"EpochBucket does not support {connection.vendor}")


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

    Two queries. Buckets start on multiples of the step (UTC), the first one
    at or after now − window, so every bucket but the newest is complete.
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
    """One query in two levels: each tick's totals (the ORM), then their mean per bucket.

    The outer level is the only SQL text here: the ORM cannot select FROM a
    subquery. The single-level alternative (SUM(x) / COUNT(DISTINCT
    timestamp) per bucket) gives the same numbers, but DISTINCT makes
    PostgreSQL sort every sample instead of hashing them, which on a day of
    ten containers (57,600 samples) took it from about 20 ms to 50 ms.
    """
    per_tick = (
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
        )
        .order_by()
    )
    inner, params = per_tick.query.sql_with_params()
    sql = (
        "SELECT bucket, AVG(cpu), AVG(memory), AVG(containers) "  # noqa: S608 - no input in it
        f"FROM ({inner}) per_tick GROUP BY bucket ORDER BY bucket"
    )
    with connections[per_tick.db].cursor() as cursor:
        cursor.execute(sql, params)
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
