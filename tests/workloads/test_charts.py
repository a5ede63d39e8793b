"""The chart's geometry: scales, gaps, time ticks and markers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.workloads.stats_data import MIB, NOW
from web.pages import charts
from workloads.metrics_history import History, Marker, Point


def history(points: list[Point], markers=(), *, minutes: int = 15, step: int = 15) -> History:
    return History(window="15m", step_seconds=step, start=NOW - timedelta(minutes=minutes),
                   end=NOW, points=points, markers=list(markers))


def point(seconds_ago: int, cpu: float = 10.0, memory: int = 100 * MIB) -> Point:
    return Point(t=NOW - timedelta(seconds=seconds_ago), cpu_percent=cpu, memory_bytes=memory,
                 containers=1)


@pytest.mark.parametrize(
    ("value", "ceiling"),
    [(0, 1), (0.7, 1), (1, 1), (1.2, 2), (2.2, 2.5), (3, 5), (69, 100), (101, 200), (240, 250)],
)
def test_value_axes_end_on_a_round_number(value, ceiling):
    assert charts.nice_ceiling(value) == pytest.approx(ceiling)


def test_no_points_is_no_chart():
    assert charts.build_chart(history([])) is None


def test_the_line_breaks_where_ticks_are_missing():
    chart = charts.build_chart(history([point(600), point(585), point(300), point(285)]))
    assert [part[0] for part in chart.cpu_path.split()] == ["M", "L", "M", "L"]
    assert [part[0] for part in chart.memory_path.split()] == ["M", "L", "M", "L"]


def test_values_scale_to_the_plot_and_the_axes_label_them():
    chart = charts.build_chart(history([point(60, cpu=45.0, memory=200 * MIB)]))
    assert [t.label for t in chart.cpu_ticks] == ["0", "12.5", "25", "37.5", "50"]
    assert [t.label for t in chart.memory_ticks] == ["0", "62.5", "125", "187.5", "250"]
    _x, y = chart.cpu_path[1:].split(",")
    assert float(y) == pytest.approx(charts.BOTTOM - 0.9 * (charts.BOTTOM - charts.TOP), abs=0.1)


def test_time_ticks_fall_on_round_minutes_inside_the_window():
    chart = charts.build_chart(history([point(60)]))
    labels = [t.label for t in chart.time_ticks]
    assert labels == ["11:50", "11:55", "12:00"]
    positions = [float(t.pos) for t in chart.time_ticks]
    assert all(charts.LEFT <= x <= charts.RIGHT for x in positions)


def test_a_week_is_labelled_by_day():
    week = History(window="7d", step_seconds=900, start=NOW - timedelta(days=7), end=NOW,
                   points=[point(60)], markers=[])
    labels = [t.label for t in charts.build_chart(week).time_ticks]
    assert labels == ["20 Nov", "21 Nov", "22 Nov", "23 Nov", "24 Nov", "25 Nov", "26 Nov"]


def test_markers_sit_on_the_time_axis_with_a_title():
    markers = [Marker(t=NOW - timedelta(minutes=5), kind="rollback", outcome="failed", deploy=7)]
    [marker] = charts.build_chart(history([point(60)], markers)).markers
    assert (marker.kind, marker.outcome) == ("rollback", "failed")
    assert marker.title == "Rollback #7: Failed (2026-11-26 11:55:07)"
    middle = charts.LEFT + (10 / 15) * (charts.RIGHT - charts.LEFT)
    assert float(marker.x) == pytest.approx(middle, abs=0.1)
