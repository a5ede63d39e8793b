"""A workload's CPU and memory history, aggregated and downsampled in the database.

Samples join through the Container index, so a window covers every container
the workload had in it — replicas side by side, and generations replaced by a
redeploy. Per time bucket the database sums each tick's samples across the
containers and averages those sums over the bucket's ticks:

    value(bucket) = SUM(sample value) / COUNT(DISTINCT timestamp)

which is the mean of the per-tick totals (a tick's samples share one
timestamp). At a step of one interval a bucket holds one tick, so a point is
that tick's total. Each call runs a fixed number of queries, whatever the
number of containers or samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
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
        return f"(FLOOR(EXTRACT(EPOCH FROM {sql}) / {self.step}) * {self.step})::bigint", params

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


def _per_tick(expression) -> Cast:
    return Cast(expression, FloatField()) / Cast(Count("timestamp", distinct=True), FloatField())


def _points(workload: Workload, start: datetime, end: datetime, step: int) -> list[Point]:
    rows = (
        ContainerStatsSample.objects.filter(
            container__workload=workload, timestamp__gte=start, timestamp__lte=end
        )
        # A container removed before the window has no samples in it: leave it
        # out before the samples index is even looked at.
        .filter(Q(container__removed__isnull=True) | Q(container__removed__gte=start))
        .values(bucket=EpochBucket("timestamp", step))
        .annotate(
            cpu=_per_tick(Sum("cpu_percent")),
            memory=_per_tick(Sum("memory_bytes")),
            containers=_per_tick(Count("pk")),
        )
        .order_by("bucket")
    )
    return [
        Point(
            t=datetime.fromtimestamp(row["bucket"], UTC),
            cpu_percent=round(row["cpu"], 2),
            memory_bytes=round(row["memory"]),
            containers=round(row["containers"]),
        )
        for row in rows
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
