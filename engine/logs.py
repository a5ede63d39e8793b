"""A workload's logs: its replicas' lines, merged by time, read in bounded chunks.

Read-only, so no lock: the lines come from the engine (lib/runtime.read_log),
for the live containers of the Container index. Every answer is bounded in
lines and bytes whatever the containers printed; "follow" is the caller
asking again with the cursor of its last answer, never a stream held open.
The workload's known secrets are masked before the text search sees a line,
so a search cannot probe for them. docs/logs.md.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.utils import timezone
from django.utils.translation import gettext, gettext_noop

from lib import redact, runtime
from workloads.models import Container, Workload

DEFAULT_TAIL = 200
MAX_TAIL = 1000
DOWNLOAD_TAIL = 10_000
# How many of a replica's newest lines a text search looks through.
SEARCH_SCAN = 20_000
MAX_SEARCH = 200
# The lines' text one answer carries at most (the oldest lines go first).
ANSWER_BYTES = 512 * 1024
DOWNLOAD_BYTES = 8 * 1024 * 1024

_RELATIVE = re.compile(r"^(\d{1,6})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LogsRefused(Exception):
    """The logs cannot be read as asked; the message says why."""

    def __init__(self, message: str, **params: object) -> None:
        super().__init__(message)
        self.message = message
        self.params = params

    def __str__(self) -> str:
        return gettext(self.message) % self.params if self.params else gettext(self.message)


@dataclass(frozen=True)
class LogLine:
    time_ns: int
    replica: int
    text: str

    @property
    def time(self) -> datetime:
        return _EPOCH + timedelta(microseconds=self.time_ns // 1000)


@dataclass
class WorkloadLog:
    """What read() found. `cursor` is what a follow passes back as `after`.

    `cut` when a bound (lines, bytes, a line's length) left lines out;
    `gone` lists the replicas whose container the engine no longer has.
    """

    lines: list[LogLine] = field(default_factory=list)
    cursor: int = 0
    cut: bool = False
    gone: list[int] = field(default_factory=list)


def parse_since(value: str, *, now: datetime | None = None) -> datetime:
    """`30s`, `15m`, `2h`, `7d` (that long ago) or an ISO 8601 time; LogsRefused otherwise."""
    value = value.strip()
    match = _RELATIVE.match(value)
    if match:
        ago = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return (now or timezone.now()) - ago
    try:
        found = datetime.fromisoformat(value)
    except ValueError:
        raise LogsRefused(gettext_noop(
            "Give “since” as a duration (30s, 15m, 2h, 7d) or a date and time "
            "(2026-12-06T10:00:00Z).")) from None
    if timezone.is_naive(found):
        found = timezone.make_aware(found)
    return found


def read(*, workload: Workload, tail: int = DEFAULT_TAIL, since: datetime | None = None,
         after: int | None = None, replica: int | None = None, previous: bool = False,
         search: str = "", max_bytes: int = ANSWER_BYTES) -> WorkloadLog:
    """The last `tail` lines of the workload's live replicas (or of one), oldest first.

    `since` and `after` (a cursor: nanoseconds since the epoch) keep only the
    lines received later; `previous` reads each replica's runs that have
    ended (the lines received before its container's last run ended: after a
    crash, the crashed run and those before it); `search` keeps the lines that contain it,
    case-insensitively, among each replica's SEARCH_SCAN newest lines.
    LogsRefused for an unknown replica; the engine's errors as they are.
    """
    containers = list(workload.containers.live().order_by("replica"))
    if replica is not None:
        containers = [c for c in containers if c.replica == replica]
        if not containers:
            raise LogsRefused(gettext_noop("This workload has no replica %(replica)s."),
                              replica=replica)
    since_ns = max(_ns(since) if since else 0, after or 0) or None
    secrets = workload.secret_values()
    found = WorkloadLog(cursor=after or 0)
    per_replica: list[list[LogLine]] = []
    for container in containers:
        read_ = _read_one(container, tail=tail, since_ns=since_ns, previous=previous,
                          search=search, secrets=secrets)
        if read_ is None:
            found.gone.append(container.replica)
            continue
        found.cut |= read_.cut
        per_replica.append([LogLine(time_ns=line.time_ns, replica=container.replica,
                                    text=line.text) for line in read_.lines])
    merged = list(heapq.merge(*per_replica, key=lambda line: (line.time_ns, line.replica)))
    if len(merged) > tail:
        found.cut = True
        merged = merged[-tail:]
    found.lines = _within(merged, max_bytes)
    found.cut |= len(found.lines) < len(merged)
    if found.lines:
        found.cursor = max(found.cursor, found.lines[-1].time_ns)
    return found


def as_text(log: WorkloadLog) -> str:
    """The lines as a download has them: `time replica text`, one a line."""
    return "".join(f"{line.time.isoformat()} [{line.replica}] {line.text}\n"
                   for line in log.lines)


def _read_one(container: Container, *, tail: int, since_ns: int | None, previous: bool,
              search: str, secrets: list[str]) -> runtime.LogRead | None:
    """One replica's lines, its secrets masked; None if its container is gone."""
    until_ns = None
    if previous:
        # Not "before it last started": the engine records a start after the new
        # run may have printed its first lines.
        ended = runtime.finished_at(container.docker_id)
        if ended is None:
            return runtime.LogRead()
        until_ns = _ns(ended) + 1000  # the engine's time has nanoseconds; ours microseconds
    if search:
        needle = search.casefold()
        # Masked first: a search for a secret's value finds nothing.
        found = runtime.read_log(
            container.docker_id, tail=SEARCH_SCAN, since_ns=since_ns, until_ns=until_ns,
            keep=lambda text: needle in redact.for_log(text, secrets).casefold(),
            max_lines=tail)
    else:
        found = runtime.read_log(container.docker_id, tail=tail, since_ns=since_ns,
                                 until_ns=until_ns)
    if found is not None:
        found.lines = [runtime.LogLine(line.time_ns, redact.for_log(line.text, secrets))
                       for line in found.lines]
    return found


def _within(lines: list[LogLine], max_bytes: int) -> list[LogLine]:
    """The newest of `lines` whose text fits in `max_bytes`."""
    total = 0
    for index in range(len(lines) - 1, -1, -1):
        total += len(lines[index].text.encode()) + 1
        if total > max_bytes:
            return lines[index + 1:]
    return lines


def _ns(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000
