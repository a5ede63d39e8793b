"""The metrics panel's chart: a History laid out as server-rendered SVG geometry.

Everything here is plain arithmetic; the template only places the strings.
Coordinates are formatted here, with a dot, so the template's number
localization (a comma in Russian) can never reach an SVG attribute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from django.utils import formats, timezone
from django.utils.translation import gettext as _

from workloads.metrics_history import History, Marker, Point
from workloads.models import DeployRecord

MIB = 1024 * 1024
WIDTH, HEIGHT = 760, 270
LEFT, RIGHT, TOP, BOTTOM = 58, WIDTH - 66, 14, HEIGHT - 46
GRID_LINES = 4
TIME_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
MAX_TIME_TICKS = 7


@dataclass(frozen=True)
class AxisTick:
    pos: str  # y for a value axis, x for the time axis
    label: str


@dataclass(frozen=True)
class ChartMarker:
    x: str
    kind: str
    outcome: str
    title: str


@dataclass(frozen=True)
class Chart:
    cpu_path: str
    memory_path: str
    cpu_last: tuple[str, str]
    memory_last: tuple[str, str]
    cpu_ticks: list[AxisTick]
    memory_ticks: list[AxisTick]
    time_ticks: list[AxisTick]
    markers: list[ChartMarker]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = RIGHT
    top: int = TOP
    bottom: int = BOTTOM

    @property
    def middle_x(self) -> str:
        return _num((LEFT + RIGHT) / 2)

    @property
    def middle_y(self) -> str:
        return _num((TOP + BOTTOM) / 2)


def _num(value: float) -> str:
    return f"{value:.1f}"


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10ⁿ at or above `value`."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for mantissa in (1, 2, 2.5, 5, 10):
        if mantissa * power >= value * (1 - 1e-9):
            return mantissa * power
    return 10 * power


def _value_label(value: float) -> str:
    decimals = 0 if value == int(value) else (1 if value * 10 == int(value * 10) else 2)
    return formats.number_format(value, decimals)


def build_chart(found: History) -> Chart | None:
    """The chart of `found`, or None when it has no points (the panel shows its empty state)."""
    if not found.points:
        return None
    span = max((found.end - found.start).total_seconds(), 1.0)

    def x(t: datetime) -> float:
        return LEFT + (t - found.start).total_seconds() / span * (RIGHT - LEFT)

    cpu_max = nice_ceiling(max(max(p.cpu_percent for p in found.points) * 1.1, 1.0))
    memory_max = nice_ceiling(max(max(p.memory_bytes for p in found.points) / MIB * 1.1, 1.0))
    cpu = [(x(p.t), _y(p.cpu_percent, cpu_max)) for p in found.points]
    memory = [(x(p.t), _y(p.memory_bytes / MIB, memory_max)) for p in found.points]
    gaps = _gaps(found.points, found.step_seconds)
    return Chart(
        cpu_path=_path(cpu, gaps),
        memory_path=_path(memory, gaps),
        cpu_last=(_num(cpu[-1][0]), _num(cpu[-1][1])),
        memory_last=(_num(memory[-1][0]), _num(memory[-1][1])),
        cpu_ticks=_value_ticks(cpu_max),
        memory_ticks=_value_ticks(memory_max),
        time_ticks=_time_ticks(found, x),
        markers=[_marker(m, x) for m in found.markers],
    )


def _y(value: float, maximum: float) -> float:
    return BOTTOM - min(value / maximum, 1.0) * (BOTTOM - TOP)


def _gaps(points: list[Point], step: int) -> set[int]:
    """Indexes of points that follow a gap (no sampler, or no containers): the line breaks."""
    return {
        i for i in range(1, len(points))
        if (points[i].t - points[i - 1].t).total_seconds() > 1.5 * step
    }


def _path(xy: list[tuple[float, float]], gaps: set[int]) -> str:
    parts = []
    for i, (px, py) in enumerate(xy):
        parts.append(f"{'M' if i == 0 or i in gaps else 'L'}{px:.1f},{py:.1f}")
    return " ".join(parts)


def _value_ticks(maximum: float) -> list[AxisTick]:
    ticks = []
    for n in range(GRID_LINES + 1):
        value = maximum * n / GRID_LINES
        ticks.append(AxisTick(pos=_num(_y(value, maximum)), label=_value_label(value)))
    return ticks


def _time_ticks(found: History, x) -> list[AxisTick]:
    span = (found.end - found.start).total_seconds()
    step = next((s for s in TIME_STEPS if span / s <= MAX_TIME_TICKS), TIME_STEPS[-1])
    offset = timezone.localtime(found.end).utcoffset().total_seconds()
    first = math.ceil((found.start.timestamp() + offset) / step) * step - offset
    label_format = "j M" if step >= 86400 else "H:i"
    ticks = []
    t = first
    while t <= found.end.timestamp():
        moment = datetime.fromtimestamp(t, UTC)
        label = formats.date_format(timezone.localtime(moment), label_format)
        ticks.append(AxisTick(pos=_num(x(moment)), label=label))
        t += step
    return ticks


def marker_kind_label(kind: str) -> str:
    return {"deploy": _("Deploy"), "rollback": _("Rollback"), "restore": _("Restore")}[kind]


def _marker(marker: Marker, x) -> ChartMarker:
    when = formats.date_format(timezone.localtime(marker.t), "Y-m-d H:i:s")
    title = _("%(kind)s #%(id)d: %(outcome)s (%(when)s)") % {
        "kind": marker_kind_label(marker.kind), "id": marker.deploy,
        "outcome": DeployRecord.Outcome(marker.outcome).label, "when": when,
    }
    position = min(max(x(marker.t), LEFT), RIGHT)
    return ChartMarker(x=_num(position), kind=marker.kind, outcome=marker.outcome, title=title)
