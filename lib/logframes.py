"""A container's log as the engine sends it, made into masked and bounded lines.

No Docker here: lib/runtime.read_log reads the engine's stream and feeds its
frames to LogLines. One frame is one message, `stamp text\n`; the engine
splits a line longer than ENGINE_SPLIT_BYTES into several messages, each
piece but the last without its newline. The pieces are joined (up to
LOG_JOIN_BYTES of one line) and every line is masked whole
(lib/redact.for_log) before the search sees it and before it is cut at
LOG_LINE_CHARS, so no secret is cut in two.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from lib.redact import for_log, reach

LOG_LINE_CHARS = 2000
# The engine splits a line longer than 16 KiB into several messages; their pieces
# are joined (up to this much of one line) so that a secret across a split is
# masked whole.
LOG_JOIN_BYTES = 64 * 1024
ENGINE_SPLIT_BYTES = 16 * 1024
STAMP = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z ?")


@dataclass(frozen=True)
class LogLine:
    """One line of a container's log: when the engine received it (ns since the epoch), its text."""

    time_ns: int
    text: str


@dataclass
class LogRead:
    """What lib/runtime.read_log() found.

    `cut` when a bound (bytes read, a line's length) cut it short.

    `stalled` when the deadline ended the read before the engine's answer
    did: lines older than `until_ns` may be missing after the last one.
    """

    lines: list[LogLine] = field(default_factory=list)
    cut: bool = False
    stalled: bool = False
    scanned: int = 0  # messages read from the engine
    over_bytes: bool = False  # lib/runtime.LOG_READ_BYTES ended the read



class LogLines:
    """The engine's messages made into masked, filtered, bounded lines, in `kept`.

    Only lines received after `since_ns` and before `until_ns` (a joined line
    takes the time of its last piece); with `keep`, only those it accepts.
    """

    def __init__(self, read: LogRead, since_ns: int | None, until_ns: int | None,
                 keep: Callable[[str], bool] | None, kept: deque[LogLine],
                 secrets: list[str]) -> None:
        self.read, self.since_ns, self.until_ns, self.keep = read, since_ns, until_ns, keep
        self.kept, self.secrets = kept, secrets
        self.hold = reach(secrets)
        self.pending = bytearray()
        self.pending_ns: int | None = None
        self.overflow = False
        # The line the first message began: whole, and without its first characters
        # (close() picks one), or None where the filters left it out.
        self.head: tuple[LogLine | None, LogLine | None] | None = None
        self.started = False

    def feed(self, chunk: bytes) -> None:
        ends = chunk.endswith(b"\n")
        # A bare \r inside a message is part of its line.
        pieces = (chunk[:-1] if ends else chunk).split(b"\n")
        for index, raw in enumerate(pieces):
            self.read.scanned += 1
            match = STAMP.match(raw)
            if match is None:
                continue
            data = raw[match.end():]
            self._add(_stamp_ns(match), data)
            # Only a piece as long as the engine's split waits for the rest of its
            # line; a shorter one without its newline ended a run's output.
            if ends or index < len(pieces) - 1 or len(data) < ENGINE_SPLIT_BYTES:
                self._emit(whole=not self.overflow)

    def close(self, *, began_inside: bool) -> None:
        """The stream ended (or was cut): keep what came of a line cut short.

        `began_inside`: the engine had older messages than the first it sent,
        which may then be the end of a line it split, masked without its start
        (a secret's end unmasked): that line loses its first characters too.
        """
        if self.pending_ns is not None:
            self._emit(whole=False)
        if self.head is None:
            return
        line = self.head[1] if began_inside else self.head[0]
        if line is not None and len(self.kept) < (self.kept.maxlen or 0):
            self.kept.appendleft(line)
            self.read.cut |= began_inside

    def _add(self, time_ns: int, data: bytes) -> None:
        room = LOG_JOIN_BYTES - len(self.pending)
        self.overflow |= len(data) > room
        self.pending += data[:max(0, room)]
        self.pending_ns = time_ns

    def _emit(self, *, whole: bool) -> None:
        time_ns, data = self.pending_ns, bytes(self.pending)
        self.pending.clear()
        self.pending_ns, self.overflow = None, False
        first, self.started = not self.started, True
        if (self.since_ns and time_ns <= self.since_ns) or (
                self.until_ns and time_ns >= self.until_ns):
            return
        text = for_log(data.decode("utf-8", "replace").rstrip("\r"), self.secrets)
        if not whole:
            # The rest of the line never came: the start of a secret cut there is
            # not masked, so the characters where it may be go too.
            text = text[:max(0, len(text) - self.hold)] + "…"
            self.read.cut = True
        if first:
            self.head = (self._line(time_ns, text), self._line(time_ns, "…" + text[self.hold:]))
        elif line := self._line(time_ns, text):
            self.kept.append(line)

    def _line(self, time_ns: int, text: str) -> LogLine | None:
        """The line, if the search keeps it, cut at LOG_LINE_CHARS."""
        if self.keep is not None and not self.keep(text):
            return None
        if len(text) > LOG_LINE_CHARS:
            text = text[:LOG_LINE_CHARS] + "…"
            self.read.cut = True
        return LogLine(time_ns, text)


def _stamp_ns(match: re.Match) -> int:
    """The time of `2026-12-06T23:00:00.123456789Z`, in nanoseconds since the epoch."""
    seconds = datetime.fromisoformat(match.group(1).decode() + "+00:00").timestamp()
    return int(seconds) * 1_000_000_000 + int((match.group(2) or b"0").ljust(9, b"0"))
