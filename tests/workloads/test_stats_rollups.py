"""The per-minute and per-hour rollups: kept by the sampler, read by the long windows.

Every test compares against the raw samples: the history of a window read
before the rollups exist (raw samples only) and after (rollups plus the raw
samples not rolled up yet) must be the same, and so must the chart drawn
from it.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from engine.sampler import Sampler
from tests.workloads.stats_data import MIB, NOW, container, sample, ticks
from web.pages.charts import build_chart
from workloads import metrics_history
from workloads.metrics_history import WINDOWS, history
from workloads.models import StatsRollup
from workloads.stats_rollups import HOUR, MINUTE

pytestmark = pytest.mark.django_db

DAY = 86400
# A window of hour-sized steps (none of the shipped windows has one yet): 720 points.
LONG_WINDOW = "30d"


def values(c, t):
    """Values that differ from tick to tick and container to container (non-round numbers)."""
    n = int(t.timestamp()) // 15
    return (c.replica * 3.7 + (n * 7 % 13) / 3, (c.replica * 40 + n % 9) * MIB + n % 1000)


def uneven_series(workload, *, days: int) -> None:
    """Samples over `days` days the way a real sampler leaves them, unevenly.

    Every 15 s for the last day, every 2 minutes before (minutes of zero and
    one tick); one container replaced by another three days ago; a container
    missing from some ticks; the sampler down for 17 minutes.
    """
    recent = ticks(NOW, every=15, count=DAY // 15)
    older = [t for t in ticks(NOW, every=120, count=days * DAY // 120) if t < recent[0]]
    down = (NOW - timedelta(hours=5), NOW - timedelta(hours=5) + timedelta(minutes=17))
    every = [t for t in older + recent if not down[0] <= t < down[1]]
    swap = NOW - timedelta(days=3, minutes=7, seconds=30)
    steady = container(workload, replica=1)
    old = container(workload, replica=2, removed=swap)
    new = container(workload, replica=2, created=swap)
    flaky = container(workload, replica=3)
    sample(steady, every, values=values)
    sample(old, [t for t in every if t < swap], values=values)
    sample(new, [t for t in every if t >= swap], values=values)
    sample(flaky, [t for t in every if int(t.timestamp()) // 15 % 5], values=values)


def assert_same_points(raw, rolled) -> None:
    assert [p.t for p in rolled.points] == [p.t for p in raw.points]
    for a, b in zip(raw.points, rolled.points, strict=True):
        assert b.cpu_percent == pytest.approx(a.cpu_percent, abs=0.011)  # rounded to 0.01
        assert b.memory_bytes == pytest.approx(a.memory_bytes, abs=1)
        assert b.containers == a.containers


@pytest.fixture
def long_window(monkeypatch, settings):
    monkeypatch.setitem(metrics_history.WINDOWS, LONG_WINDOW, 30 * DAY)
    # Minutes kept long enough to roll a month of test data up into hours at once.
    settings.BERTH_STATS_MINUTE_RETENTION = 40 * DAY
    settings.BERTH_STATS_INTERVAL = 15


def test_the_rollups_agree_with_the_raw_samples_for_every_window(make_workload, long_window):
    web = make_workload()
    uneven_series(web, days=31)
    raw = {w: history(workload=web, window=w, now=NOW) for w in WINDOWS}

    minutes, hours = Sampler().roll_up(now=NOW)

    assert minutes and hours
    for window in WINDOWS:
        with CaptureQueriesContext(connection) as queries:
            rolled = history(workload=web, window=window, now=NOW)
        assert_same_points(raw[window], rolled)
        assert rolled.points, window
        read_rollups = any(StatsRollup._meta.db_table in q["sql"] for q in queries)
        # Whole minutes (24 h, 7 d) and whole hours (30 d) come from the rollups.
        assert read_rollups == (rolled.step_seconds % MINUTE == 0), window


def assert_same_path(raw: str, rolled: str) -> None:
    """The same moves and gaps (M starts a line after a gap), each point within 0.1 px.

    0.1 px is one unit of the path's single decimal: two sums of the same
    numbers in another order may round a coordinate the other way.
    """
    assert re.sub(r"[\d.]+", "", rolled) == re.sub(r"[\d.]+", "", raw)
    numbers = [(float(a), float(b)) for a, b in zip(
        re.findall(r"[\d.]+", raw), re.findall(r"[\d.]+", rolled), strict=True)]
    assert all(abs(a - b) <= 0.1 + 1e-9 for a, b in numbers)


def test_the_chart_is_the_same_drawn_from_raw_samples_or_rollups(make_workload, long_window):
    web = make_workload()
    uneven_series(web, days=31)
    raw = {w: build_chart(history(workload=web, window=w, now=NOW)) for w in WINDOWS}
    Sampler().roll_up(now=NOW)
    for window in WINDOWS:
        rolled = build_chart(history(workload=web, window=window, now=NOW))
        assert_same_path(raw[window].cpu_path, rolled.cpu_path)
        assert_same_path(raw[window].memory_path, rolled.memory_path)
        # The scales, the axes and the markers are the very same.
        same = {"cpu_path": "", "memory_path": "", "cpu_last": (), "memory_last": ()}
        assert replace(rolled, **same) == replace(raw[window], **same), window


def rollup_rows() -> set[tuple]:
    """The rollup rows, their sums of floats to 9 places: PostgreSQL adds a float column in
    no set order, so two sums of the same values may differ in the last bits."""
    return {(resolution, start, ticks_, round(cpu, 9), round(memory), samples)
            for resolution, start, ticks_, cpu, memory, samples in
            StatsRollup.objects.values_list("resolution", "start", "ticks", "cpu_percent",
                                            "memory_bytes", "samples")}


def test_rolling_up_tick_by_tick_gives_the_rows_of_rolling_up_at_once(make_workload, settings):
    settings.BERTH_STATS_MINUTE_RETENTION = 8 * DAY
    web = make_workload()
    a, b = container(web), container(web, replica=2)
    at = ticks(NOW, every=15, count=3 * 3600 // 15)
    sample(a, at, values=values)
    sample(b, at[::3], values=values)
    sampler = Sampler()

    # The sampler's loop: a tick, then what is over is rolled up.
    for t in at:
        sampler.roll_up(now=t)
    stepwise = rollup_rows()
    StatsRollup.objects.all().delete()
    sampler.roll_up(now=at[-1])

    assert stepwise == rollup_rows()
    hour_rows = StatsRollup.objects.filter(resolution=HOUR)
    # Only hours over: the hour `at[-1]` falls in is still going.
    assert {r.start.timestamp() % 3600 for r in hour_rows} == {0}
    assert max(r.start for r in hour_rows) + timedelta(hours=1) <= at[-1]
    first_hour = hour_rows.order_by("start").first()
    minutes = StatsRollup.objects.filter(
        resolution=MINUTE, start__gte=first_hour.start,
        start__lt=first_hour.start + timedelta(hours=1),
    )
    assert first_hour.ticks == sum(m.ticks for m in minutes)
    assert first_hour.samples == sum(m.samples for m in minutes)


def test_a_minute_row_holds_its_ticks_sums(make_workload):
    web = make_workload()
    a, b = container(web), container(web, replica=2)
    minute = datetime(2026, 11, 26, 11, 58, tzinfo=UTC)
    at = [minute + timedelta(seconds=s) for s in (0, 15, 30, 45)]
    sample(a, at, cpu=10.0, memory=100 * MIB)
    sample(b, at[:3], cpu=2.5, memory=50 * MIB)

    Sampler().roll_up(now=NOW)

    row = StatsRollup.objects.get(workload=web, resolution=MINUTE, start=minute)
    assert (row.ticks, row.samples) == (4, 7)
    assert row.cpu_percent == pytest.approx(4 * 10.0 + 3 * 2.5)
    assert row.memory_bytes == 4 * 100 * MIB + 3 * 50 * MIB


def test_pruning_keeps_each_table_within_its_retention(make_workload, settings):
    settings.BERTH_STATS_MINUTE_RETENTION = 8 * DAY
    settings.BERTH_STATS_HOUR_RETENTION = 30 * DAY
    web = make_workload()
    ages = [timedelta(days=d, minutes=1) for d in (0, 1, 6, 7, 8, 9, 29, 30, 31, 60)]
    for age in ages:
        start = datetime.fromtimestamp((NOW - age).timestamp() // 3600 * 3600, UTC)
        for resolution in (MINUTE, HOUR):
            StatsRollup.objects.create(
                workload=web, resolution=resolution, start=start, ticks=4,
                cpu_percent=1.0, memory_bytes=MIB, samples=4,
            )
    c = container(web)
    sample(c, [NOW - age for age in ages], cpu=1.0, memory=MIB)
    sampler = Sampler(retention=7 * DAY, prune_batch=3)

    sampler.prune(now=NOW)

    retention = {MINUTE: 8 * DAY, HOUR: 30 * DAY}
    for resolution, kept in retention.items():
        starts = StatsRollup.objects.filter(resolution=resolution).values_list("start", flat=True)
        assert starts and all(NOW - s <= timedelta(seconds=kept) for s in starts)
        expected = sum(1 for age in ages if age.total_seconds() + 3600 <= kept)
        # Rounded down to the hour, a row may be up to an hour older than its age.
        assert expected <= len(starts) <= expected + 1
    samples = c.stats.values_list("timestamp", flat=True)
    assert sorted(NOW - s for s in samples) == [a for a in ages if a <= timedelta(days=7)]


def test_the_query_count_is_the_same_with_rollups(make_workload, django_assert_num_queries):
    web = make_workload()
    for replica in range(1, 6):
        sample(container(web, replica=replica), ticks(NOW, every=15, count=4 * 240), cpu=1.0,
               memory=MIB)
    # 1 where the workload's rollups end, 2 the points, 3 the deploy markers.
    with django_assert_num_queries(3):
        before = history(workload=web, window="24h", now=NOW)
    Sampler().roll_up(now=NOW)
    with django_assert_num_queries(3):
        after = history(workload=web, window="24h", now=NOW)
    assert_same_points(before, after)
    assert len(after.points) == 4 * 60 // 2 + 1
