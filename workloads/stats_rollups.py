"""The per-minute and per-hour rollups of the stats samples (StatsRollup rows).

The history of a long window is read from them (workloads/metrics_history.py):
a day of 100 containers is 576,000 samples but 1,440 minute rows. A rollup row
holds, for one workload and one period, the sums over the period's ticks of
each tick's totals and the number of those ticks, so a bucket of whole periods
averages to the same numbers as the raw samples.

The sampler rolls a minute up once it is over: every sample of it is written
by then, since a tick writes its samples (stamped with its slot time) before
the next tick starts. An hour is rolled up from its minutes once its last
minute is. Each call runs a fixed number of queries per day rolled up.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.db.models import BigIntegerField, Count, F, FloatField, Func, Sum
from django.db.models.functions import Cast

from workloads.models import ContainerStatsSample, StatsRollup

MINUTE = StatsRollup.Resolution.MINUTE
HOUR = StatsRollup.Resolution.HOUR
CHUNK = 86400  # seconds of samples per statement: a long backlog is rolled up a day at a time


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


def floor_to(moment: datetime, seconds: int) -> datetime:
    """The start of the `seconds`-long period (on the epoch's grid) that `moment` falls in."""
    return datetime.fromtimestamp(math.floor(moment.timestamp() / seconds) * seconds, UTC)


def rolled_until(resolution: int) -> datetime | None:
    """The end of the newest period rolled up at `resolution`, for any workload.

    Periods after it are not rolled up yet (or had no samples at all).
    """
    newest = (
        StatsRollup.objects.filter(resolution=resolution)
        .order_by("-start").values_list("start", flat=True).first()
    )
    return newest + timedelta(seconds=resolution) if newest else None


def roll_up(*, now: datetime, minute_retention: int, hour_retention: int) -> tuple[int, int]:
    """Roll up every minute and hour over before `now` not rolled up yet.

    Nothing older than the table's retention is rolled up (pruning would
    delete it). Returns the minute and hour rows written.
    """
    minutes_end = floor_to(now, MINUTE)
    since = rolled_until(MINUTE) or _oldest(ContainerStatsSample.objects, "timestamp")
    minutes = _in_chunks(
        _roll_minutes, MINUTE, since, floor_to(now - timedelta(seconds=minute_retention), MINUTE),
        minutes_end,
    )
    since = rolled_until(HOUR) or _oldest(
        StatsRollup.objects.filter(resolution=MINUTE), "start")
    hours = _in_chunks(
        _roll_hours, HOUR, since, floor_to(now - timedelta(seconds=hour_retention), HOUR),
        floor_to(minutes_end, HOUR),
    )
    return minutes, hours


def _oldest(rows, field: str) -> datetime | None:
    return rows.order_by(field).values_list(field, flat=True).first()


def _in_chunks(
    roll, resolution: int, since: datetime | None, floor: datetime, end: datetime,
) -> int:
    if since is None:
        return 0
    start, written = max(floor_to(since, resolution), floor), 0
    while start < end:
        chunk_end = min(start + timedelta(seconds=CHUNK), end)
        written += roll(start, chunk_end)
        start = chunk_end
    return written


def _roll_minutes(start: datetime, end: datetime) -> int:
    """One row per workload and minute of the samples in [start, end)."""
    periods = (
        ContainerStatsSample.objects.filter(timestamp__gte=start, timestamp__lt=end)
        .values(workload=F("container__workload_id"), period=EpochBucket("timestamp", MINUTE))
        .annotate(
            # Each tick's samples share its timestamp: the distinct timestamps are the ticks.
            ticks=Count("timestamp", distinct=True), cpu=Sum("cpu_percent"),
            memory=Sum(Cast("memory_bytes", FloatField())), samples=Count("pk"),
        )
        .order_by()
    )
    return _write(MINUTE, periods)


def _roll_hours(start: datetime, end: datetime) -> int:
    """One row per workload and hour of the minute rows in [start, end)."""
    periods = (
        StatsRollup.objects.filter(resolution=MINUTE, start__gte=start, start__lt=end)
        .values("workload", period=EpochBucket("start", HOUR))
        .annotate(
            ticks=Sum("ticks"), cpu=Sum("cpu_percent"), memory=Sum("memory_bytes"),
            samples=Sum("samples"),
        )
        .order_by()
    )
    return _write(HOUR, periods)


def _write(resolution: int, periods) -> int:
    rows = [
        StatsRollup(
            workload_id=p["workload"], resolution=resolution,
            start=datetime.fromtimestamp(p["period"], UTC), ticks=p["ticks"],
            cpu_percent=p["cpu"], memory_bytes=p["memory"], samples=p["samples"],
        )
        for p in periods
    ]
    # One chunk at a time, whole: the newest period rolled up is where the next call resumes.
    # ignore_conflicts: a period rolled up already keeps its row.
    with transaction.atomic():
        StatsRollup.objects.bulk_create(rows, batch_size=2000, ignore_conflicts=True)
    return len(rows)
