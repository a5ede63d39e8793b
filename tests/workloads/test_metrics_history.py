"""The history query: per-tick totals across a workload's containers, downsampled in SQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.workloads.stats_data import (
    MIB,
    NOW,
    container,
    deploy,
    expected_buckets,
    sample,
    ticks,
)
from workloads import metrics_history
from workloads.metrics_history import MAX_POINTS, WINDOWS, history, latest, step_for
from workloads.models import DeployRecord

pytestmark = pytest.mark.django_db


def test_it_sums_each_tick_across_the_workloads_containers_and_no_other(make_workload):
    web, other = make_workload(), make_workload()
    a, b = container(web, replica=1), container(web, replica=2)
    stranger = container(other)
    at = ticks(NOW, every=15, count=4)
    sample(a, at, cpu=10.0, memory=100 * MIB)
    sample(b, at, cpu=2.5, memory=28 * MIB)
    sample(stranger, at, cpu=90.0, memory=900 * MIB)

    found = history(workload=web, window="15m", now=NOW)

    assert found.step_seconds == 15
    assert [p.t for p in found.points] == at
    assert {(p.cpu_percent, p.memory_bytes, p.containers) for p in found.points} == {
        (12.5, 128 * MIB, 2)
    }


def test_containers_replaced_by_a_redeploy_still_count_within_the_window(make_workload):
    web = make_workload()
    at = ticks(NOW, every=15, count=8)
    replaced_at = at[4] - timedelta(seconds=7)
    gone_long_ago = container(web, removed=NOW - timedelta(hours=2))
    old = container(web, removed=replaced_at)
    new = container(web, created=replaced_at)
    sample(gone_long_ago, ticks(NOW - timedelta(hours=2), every=15, count=4), cpu=99.0, memory=1)
    sample(old, at[:4], cpu=40.0, memory=64 * MIB)
    sample(new, at[4:], cpu=4.0, memory=8 * MIB)

    points = history(workload=web, window="15m", now=NOW).points

    assert [(p.t, p.cpu_percent, p.memory_bytes, p.containers) for p in points] == [
        (t, 40.0, 64 * MIB, 1) for t in at[:4]
    ] + [(t, 4.0, 8 * MIB, 1) for t in at[4:]]


def test_the_window_bounds_leave_out_older_samples(make_workload):
    web = make_workload()
    c = container(web)
    inside = ticks(NOW, every=15, count=60)  # 15 minutes of ticks
    sample(c, ticks(inside[0] - timedelta(seconds=15), every=15, count=20), cpu=50.0, memory=1)
    sample(c, inside, cpu=1.0, memory=2)

    found = history(workload=web, window="15m", now=NOW)

    assert found.start == inside[0] and found.start >= NOW - timedelta(minutes=15)
    assert found.end == NOW
    assert len(found.points) == 60
    assert {(p.cpu_percent, p.memory_bytes) for p in found.points} == {(1.0, 2)}


def test_a_seven_day_series_of_ten_containers_is_downsampled_to_bucket_averages(
    make_workload, settings
):
    # One tick a minute keeps the series (100,800 samples) quick to write; the
    # buckets are 15 minutes either way, so each averages 15 ticks here.
    settings.BERTH_STATS_INTERVAL = 60
    web = make_workload()
    at = ticks(NOW, every=60, count=7 * 24 * 60 + 30)  # a little older than the window too

    def values(c, t):
        minute = int(t.timestamp()) // 60
        return (c.replica * 1.5 + minute % 7, (c.replica * 10 + minute % 5) * MIB)

    rows = []
    for replica in range(1, 11):
        rows += sample(container(web, replica=replica), at, values=values)

    found = history(workload=web, window="7d", now=NOW)

    assert found.step_seconds == 900
    assert len(found.points) <= MAX_POINTS
    # Whole buckets from the first one inside the window, up to the one now falls in.
    assert len(found.points) == 7 * 24 * 4
    in_window = [r for r in rows if found.start <= r.timestamp <= NOW]
    expected = expected_buckets(in_window, 900)
    assert [p.t for p in found.points] == list(expected)
    for point in found.points:
        cpu, memory, containers = expected[point.t]
        assert point.cpu_percent == pytest.approx(cpu, abs=0.01)
        assert point.memory_bytes == pytest.approx(memory, abs=1)
        assert point.containers == containers == 10
    # Not a flat line: the averages differ from bucket to bucket.
    assert len({p.cpu_percent for p in found.points}) > 1


@pytest.mark.parametrize("interval", [1, 5, 15, 60, 3600])
@pytest.mark.parametrize("window", list(WINDOWS))
def test_no_window_is_cut_into_more_than_about_a_thousand_points(window, interval):
    step = step_for(WINDOWS[window], interval)
    assert step >= interval
    assert WINDOWS[window] / step + 1 <= MAX_POINTS + 1


def test_the_default_interval_gives_round_steps():
    assert {w: step_for(s, 15) for w, s in WINDOWS.items()} == {
        "15m": 15, "1h": 15, "6h": 30, "24h": 120, "7d": 900,
    }


def test_it_refuses_an_unknown_window(workload):
    with pytest.raises(metrics_history.UnknownWindow):
        history(workload=workload, window="2h")


def test_it_lists_deploys_rollbacks_and_restores_in_the_window_as_markers(make_workload):
    web, other = make_workload(), make_workload()
    deploy(web, at=NOW - timedelta(hours=2))  # before the window
    first = deploy(web, at=NOW - timedelta(minutes=50))
    failed = deploy(web, at=NOW - timedelta(minutes=40), outcome=DeployRecord.Outcome.FAILED)
    rollback = deploy(web, at=NOW - timedelta(minutes=30), reason=DeployRecord.Reason.ROLLBACK)
    restore = deploy(web, at=NOW - timedelta(minutes=20), reason=DeployRecord.Reason.RESTORE)
    deploy(other, at=NOW - timedelta(minutes=10))

    markers = history(workload=web, window="1h", now=NOW).markers

    assert [(m.deploy, m.kind, m.outcome) for m in markers] == [
        (first.pk, "deploy", "succeeded"),
        (failed.pk, "deploy", "failed"),
        (rollback.pk, "rollback", "succeeded"),
        (restore.pk, "restore", "succeeded"),
    ]
    assert markers[0].t == first.finished


def test_the_query_count_does_not_depend_on_containers_or_samples(
    make_workload, django_assert_num_queries
):
    web = make_workload()
    # 1 the samples aggregated per bucket, 2 the deploy markers.
    with django_assert_num_queries(2):
        assert history(workload=web, window="1h", now=NOW).points == []
    for replica in range(10):
        sample(container(web, replica=replica + 1), ticks(NOW, every=15, count=240), cpu=1.0,
               memory=MIB)
        deploy(web, at=NOW - timedelta(minutes=replica))
    with django_assert_num_queries(2):
        found = history(workload=web, window="1h", now=NOW)
    assert len(found.points) == 240 and len(found.markers) == 10


def test_latest_is_the_newest_ticks_total_while_the_sampler_runs(make_workload, settings):
    settings.BERTH_STATS_INTERVAL = 15
    web = make_workload()
    a, b = container(web), container(web, replica=2)
    at = ticks(NOW, every=15, count=3)
    sample(a, at, cpu=3.0, memory=10 * MIB)
    sample(b, at[-1:], cpu=4.0, memory=20 * MIB)

    now = latest(workload=web, now=NOW)
    assert (now.t, now.cpu_percent, now.memory_bytes, now.containers) == (at[-1], 7.0, 30 * MIB, 2)
    # Three intervals without a tick: the sampler is not running, there is no current value.
    assert latest(workload=web, now=at[-1] + timedelta(seconds=46)) is None
