"""lib/logframes: the engine's log messages made into lines, without an engine: split lines
joined before masking, lines cut short and reads begun inside a line hiding where a secret's
cut-off part may be, and the search seeing only masked text."""

from __future__ import annotations

from collections import deque

from lib.logframes import ENGINE_SPLIT_BYTES, LOG_LINE_CHARS, LogLines, LogRead
from lib.redact import MASK, reach

SECRET = "hunter2-very-secret-value-XYZ"  # noqa: S105
STAMP = b"2026-12-06T23:00:00.%09dZ "


def message(text: bytes, n: int, *, newline: bool = True) -> bytes:
    return STAMP % n + text + (b"\n" if newline else b"")


def split(text: bytes, first: int) -> list[bytes]:
    """`text` as the engine sends it: pieces of ENGINE_SPLIT_BYTES, the last with its newline."""
    pieces = [text[i:i + ENGINE_SPLIT_BYTES] for i in range(0, len(text), ENGINE_SPLIT_BYTES)]
    return [message(piece, first + i, newline=i == len(pieces) - 1)
            for i, piece in enumerate(pieces)]


def lines_of(frames: list[bytes], *, keep=None, began_inside: bool = False, tail: int = 10):
    read = LogRead()
    lines = LogLines(read, None, None, keep, deque(maxlen=tail), [SECRET])
    for frame in frames:
        lines.feed(frame)
    lines.close(began_inside=began_inside)
    return read, list(lines.kept)


def test_it_joins_a_split_line_and_masks_it_before_the_cut():
    line = b"A" * (ENGINE_SPLIT_BYTES - 10) + SECRET.encode() + b" tail"
    read, lines = lines_of([*split(line, 1), message(b"done", 9)])
    assert [len(line.text) for line in lines] == [LOG_LINE_CHARS + 1, 4]
    assert lines[0].time_ns % 10**9 == 2  # the time of its last piece
    assert read.cut and SECRET[:8] not in lines[0].text and read.scanned == 3

    _read, found = lines_of(split(line, 1), keep=lambda text: f"{MASK} tail" in text)
    assert len(found) == 1


def test_a_line_whose_end_never_came_loses_where_a_secret_may_start():
    line = b"A" * (ENGINE_SPLIT_BYTES - 10) + SECRET[:10].encode()
    read, lines = lines_of([message(line, 1, newline=False)])
    assert lines[0].text == "A" * LOG_LINE_CHARS + "…" and read.cut
    assert SECRET[:10] not in lines[0].text


def test_a_short_message_without_its_newline_is_a_whole_line():
    _read, lines = lines_of([message(b"no newline at exit", 1, newline=False),
                             message(b"next run", 2)])
    assert [line.text for line in lines] == ["no newline at exit", "next run"]


def test_a_read_begun_inside_a_split_line_hides_the_start_of_its_first_line():
    tail_piece = message(SECRET[10:].encode() + b"B" * 800, 1)
    read, lines = lines_of([tail_piece, message(b"done", 2)], began_inside=True)
    assert lines[0].text == "…" + ("B" * 800)[reach([SECRET]) - 19:]
    assert SECRET[10:18] not in lines[0].text and read.cut
    _read, found = lines_of([tail_piece], keep=lambda t: "XYZB" in t, began_inside=True)
    assert found == []
    # From the log's start, the first line is whole (and a search finds it).
    _read, lines = lines_of([message(b"first", 1)], keep=lambda t: "first" in t)
    assert [line.text for line in lines] == ["first"]
