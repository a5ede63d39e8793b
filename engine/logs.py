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
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
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
# How long one read waits for the engine, every replica together (at most
# BERTH_DOCKER_TIMEOUT): a stalled engine holds a web worker that long, no longer.
DEADLINE_SECONDS = 10.0
# The cursor stays this far behind the clock: a line the engine has stamped is in
# its log file a moment later.
SETTLE_NS = 200_000_000

_RELATIVE = re.compile(r"^(\d{1,6})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_SINCE = timedelta(days=3653)


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
    """`30s`, `15m`, `2h`, `7d` (that long ago) or an ISO 8601 time; LogsRefused otherwise.

    A duration is at most MAX_SINCE; a time before the epoch is the epoch.
    """
    value = value.strip()
    match = _RELATIVE.match(value)
    if match:
        ago = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        if ago > MAX_SINCE:
            raise LogsRefused(gettext_noop("Give “since” as a duration of at most ten years."))
        return (now or timezone.now()) - ago
    try:
        found = datetime.fromisoformat(value)
        if timezone.is_naive(found):
            found = timezone.make_aware(found)
        return max(found, _EPOCH)
    except ValueError:
        raise LogsRefused(gettext_noop(
            "Give “since” as a duration (30s, 15m, 2h, 7d) or a date and time "
            "(2026-12-06T10:00:00Z).")) from None
    except OverflowError:
        raise LogsRefused(gettext_noop("This “since” is out of range.")) from None


def read(*, workload: Workload, tail: int = DEFAULT_TAIL, since: datetime | None = None,
         after: int | None = None, replica: int | None = None, previous: bool = False,
         search: str = "", max_bytes: int = ANSWER_BYTES) -> WorkloadLog:
    """The last `tail` lines of the workload's live replicas (or of one), oldest first.

    `since` and `after` (a cursor: nanoseconds since the epoch) keep only the
    lines received later; `previous` reads each replica's runs that have
    ended (the lines received before its container's last run ended: after a
    crash, the crashed run and those before it); `search` keeps the lines that contain it,
    case-insensitively, among each replica's SEARCH_SCAN newest lines.
    The whole read waits for the engine DEADLINE_SECONDS at most.
    LogsRefused for an unknown replica; the engine's errors as they are.
    """
    containers = list(workload.containers.live().order_by("replica"))
    if replica is not None:
        containers = [c for c in containers if c.replica == replica]
        if not containers:
            raise LogsRefused(gettext_noop("This workload has no replica %(replica)s."),
                              replica=replica)
    # One instant for every replica, taken before the reads: each is read up to
    # it, and it is the cursor, so a follow misses no replica's lines.
    instant = time.time_ns() - SETTLE_NS
    since_ns = max(_ns(since) if since else 0, after or 0) or None
    found = WorkloadLog(cursor=max(after or 0, 0))
    if since_ns and since_ns >= instant:
        return found  # a time or cursor not reached yet: no lines
    deadline = time.monotonic() + min(DEADLINE_SECONDS, settings.BERTH_DOCKER_TIMEOUT)
    masks = _Masks(workload, deadline)
    per_replica: list[list[LogLine]] = []
    complete_to = None
    for container in containers:
        read_ = _read_one(container, tail=tail, since_ns=since_ns, until_ns=instant,
                          previous=previous, search=search, masks=masks, deadline=deadline)
        if read_ is None:
            found.gone.append(container.replica)
            continue
        found.cut |= read_.cut
        if read_.stalled:
            # Lines of this replica after its last one read may be missing: the
            # cursor stays before them (a follow may show some lines of the others
            # again, rather than miss this one's).
            last = read_.lines[-1].time_ns if read_.lines else since_ns or 0
            complete_to = last if complete_to is None else min(complete_to, last)
        per_replica.append([LogLine(time_ns=line.time_ns, replica=container.replica,
                                    text=line.text) for line in read_.lines])
    merged = list(heapq.merge(*per_replica, key=lambda line: (line.time_ns, line.replica)))
    if len(merged) > tail:
        found.cut = True
        merged = merged[-tail:]
    found.lines = _within(merged, max_bytes)
    found.cut |= len(found.lines) < len(merged)
    if complete_to is None:
        # A previous run's lines may end after the instant (its end is their bound).
        complete_to = max(instant, found.lines[-1].time_ns if found.lines else 0)
    found.cursor = max(found.cursor, complete_to)
    return found


def container_tail(*, workload: Workload, docker_id: str, tail: int) -> runtime.LogRead | None:
    """The last `tail` lines of one container of the workload's that is not a live replica
    (a failed start's, kept for its deploy page), masked as the panel masks; None if gone."""
    deadline = time.monotonic() + min(DEADLINE_SECONDS, settings.BERTH_DOCKER_TIMEOUT)
    source = runtime.log_source(docker_id, deadline=deadline)
    if source is None:
        return None
    masks = _Masks(workload, deadline)
    return runtime.read_log(docker_id, tail=tail, deadline=deadline,
                            secrets=masks.for_container(source), tty=source.tty)


def as_text(log: WorkloadLog) -> str:
    """The lines as a download has them: `time replica text`, one a line."""
    return "".join(f"{line.time.isoformat()} [{line.replica}] {line.text}\n"
                   for line in log.lines)


def _read_one(container: Container, *, tail: int, since_ns: int | None, until_ns: int,
              previous: bool, search: str, masks: _Masks, deadline: float
              ) -> runtime.LogRead | None:
    """One replica's lines, its secrets masked; None if its container is gone.

    Past the deadline the replica is not read (its answer is `stalled`).
    """
    if time.monotonic() >= deadline:
        return runtime.LogRead(cut=True, stalled=True)
    source = runtime.log_source(container.docker_id, deadline=deadline)
    if source is None:
        return None
    if previous:
        # Not "before it last started": the engine records a start after the new
        # run may have printed its first lines.
        if source.finished_at is None:
            return runtime.LogRead()
        # The engine's time has nanoseconds; ours microseconds. Every line of
        # that run is in the log by then: no need to wait for it to settle.
        until_ns = _ns(source.finished_at) + 1000
    reading = {"since_ns": since_ns, "until_ns": until_ns, "deadline": deadline,
               "secrets": masks.for_container(source), "tty": source.tty}
    if search:
        needle = search.casefold()
        # The lines come masked: a search for a secret's value finds nothing.
        return runtime.read_log(container.docker_id, tail=SEARCH_SCAN, max_lines=tail,
                                keep=lambda text: needle in text.casefold(), **reading)
    return runtime.read_log(container.docker_id, tail=tail, **reading)


class _Masks:
    """What one request masks in each container's lines (docs/logs.md), worked out once.

    The workload's secrets as they are now, and the values the container
    itself was given for every name that was secret when it was made (its
    SECRET_ENV_LABEL) or is secret now: a secret rotated, deleted or made
    plain since the deploy is still masked in the lines of the containers
    that have it. A container made before that label: the names secret now,
    and those the workload no longer has (and its image does not set).
    """

    def __init__(self, workload: Workload, deadline: float) -> None:
        env_vars = list(workload.env_vars.all())
        self.names = {env.name for env in env_vars}
        self.secret_names = {env.name for env in env_vars if env.is_secret}
        self.current = workload.secret_values()
        self.deadline = deadline
        self.forms: dict[frozenset[str], list[str]] = {}
        self.images: dict[str, dict[str, str]] = {}

    def for_container(self, source: runtime.LogSource) -> list[str]:
        names = self._secret_names(source)
        values = frozenset(
            [source.environment[name] for name in names if name in source.environment]
            + self.current)
        if values not in self.forms:
            self.forms[values] = redact.log_forms(values)
        return self.forms[values]

    def _secret_names(self, source: runtime.LogSource) -> set[str]:
        label = source.labels.get(runtime.SECRET_ENV_LABEL)
        if label is not None:
            return {name for name in label.split(",") if name} | self.secret_names
        if source.image not in self.images:
            self.images[source.image] = runtime.image_environment(source.image,
                                                                  deadline=self.deadline)
        image = self.images[source.image]
        gone = {name for name, value in source.environment.items()
                if name not in self.names and image.get(name) != value}
        return gone | self.secret_names


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
