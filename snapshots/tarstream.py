"""Reading an archive's bytes: one zstd frame, then tar members with their overrides applied.

The extractor (snapshots/archive.py) takes members from here one at a time
and decides what to do with them; this module only knows the stream: where
the zstd frame ends, how decompressed output stays bounded, which header types
exist and how pax and GNU long-name headers change the member that follows.
Headers themselves are parsed by snapshots/tarfmt.py.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import zstandard
from django.utils.translation import gettext_noop

from snapshots import tarfmt
from snapshots.errors import ArchiveError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# Larger windows than this are refused before the decompressor allocates them.
MAX_WINDOW_BYTES = 1 << 27
MAX_META_BYTES = 64 * 1024
# Extended headers cost parsing time far beyond their compressed size. Each
# may use META_ALLOWANCE_BYTES for free (a longest path and the numeric
# records the writer emits); what any uses beyond that comes out of one budget
# per archive, and an extended header holds at most MAX_PAX_RECORDS records.
META_ALLOWANCE_BYTES = 4 * 1024
MAX_META_EXCESS_BYTES = 16 << 20
MAX_PAX_RECORDS = 32
# GNU tar pads the stream to its 10 KiB record size; more zeros than this after
# the end-of-archive marker are not padding.
MAX_TRAILING_ZEROS = 1 << 20
_CHUNK = 1 << 20


# --- the compressed stream --------------------------------------------------------

class _OneFrame:
    """The bytes of exactly one zstd frame of `source`, for the decompressor to read.

    The block headers are walked as the bytes pass, so the end of the frame is
    known without trusting the decompressor: the stream must end exactly
    there (no trailing data, no second or skippable frame), and a stream that
    ends early is reported as truncated rather than read as a short archive.
    """

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self._pieces = self._walk()
        self._pending = b""
        self.finished = False

    def _exact(self, n: int) -> bytes:
        data = self.source.read(n)
        while len(data) < n:
            more = self.source.read(n - len(data))
            if not more:
                raise ArchiveError(gettext_noop("The archive is truncated."))
            data += more
        return data

    def _walk(self) -> Iterator[bytes]:
        head = self.source.read(5)
        if len(head) < 5 or head[:4] != ZSTD_MAGIC:
            raise ArchiveError(gettext_noop("The file is not a zstd-compressed archive."))
        descriptor = head[4]
        fcs_flag, single = descriptor >> 6, (descriptor >> 5) & 1
        if descriptor & 0b1000:
            raise ArchiveError(gettext_noop("The archive's compressed stream is corrupt."))
        if not descriptor & 0b100:
            raise ArchiveError(gettext_noop("The archive's compressed stream has no checksum."))
        if descriptor & 0b11:
            raise ArchiveError(gettext_noop("The archive needs a zstd dictionary, which is "
                                            "not supported."))
        rest = (0 if single else 1) + ((1 if single else 0), 2, 4, 8)[fcs_flag]
        yield head + self._exact(rest)
        last = False
        while not last:
            block = self._exact(3)
            yield block
            value = int.from_bytes(block, "little")
            last, kind, size = bool(value & 1), (value >> 1) & 3, value >> 3
            if kind == 3:
                raise ArchiveError(gettext_noop("The archive's compressed stream is corrupt."))
            remaining = 1 if kind == 1 else size
            while remaining:
                data = self.source.read(min(remaining, _CHUNK))
                if not data:
                    raise ArchiveError(gettext_noop("The archive is truncated."))
                remaining -= len(data)
                yield data
        yield self._exact(4)  # the content checksum
        self.finished = True

    def read(self, size: int = -1) -> bytes:
        while not self._pending:
            piece = next(self._pieces, None)
            if piece is None:
                return b""
            self._pending = piece
        if size < 0 or size >= len(self._pending):
            data, self._pending = self._pending, b""
        else:
            data, self._pending = self._pending[:size], self._pending[size:]
        return data

    def check_end(self) -> None:
        if self._pending or next(self._pieces, None) is not None or not self.finished:
            raise ArchiveError(gettext_noop("The archive's compressed stream is corrupt."))
        if self.source.read(1):
            raise ArchiveError(gettext_noop("The archive has data after its end."))


class _Inflater:
    """The decompressed stream, produced on its own thread a few chunks ahead of the parser.

    Decompression releases the GIL, so it overlaps with parsing and writing.
    `read()` returns the next chunk (at most 1 MiB, so a decompression bomb
    never sits in memory), b"" at the end, or raises what the thread met.
    """

    def __init__(self, frame: _OneFrame) -> None:
        decompressor = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW_BYTES)
        self._reader = decompressor.stream_reader(
            frame, read_size=1 << 17, read_across_frames=False, closefd=False
        )
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=8)
        self._stopping = False
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="snapshot-inflater", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopping:
                data = self._reader.read(_CHUNK)
                self._put(data)
                if not data:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            self._put(exc)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stopping:
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self) -> bytes:
        if self._ended:
            return b""
        item = self._queue.get()
        if isinstance(item, zstandard.ZstdError):
            self._ended = True
            raise ArchiveError(
                gettext_noop("The archive's compressed stream is corrupt: %(error)s"),
                error=str(item)[:200],
            )
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        if not item:
            self._ended = True
            self._thread.join()
        return item

    def close(self) -> None:
        self._stopping = True
        self._thread.join()


class TarStream:
    """The decompressed tar stream, read in whole blocks and bounded chunks."""

    def __init__(self, source: BinaryIO) -> None:
        self.frame = _OneFrame(source)
        self._inflater = _Inflater(self.frame)
        self._buffer = memoryview(b"")
        self.meta_excess = 0  # extended-header bytes beyond each header's allowance

    def close(self) -> None:
        self._inflater.close()

    def read_some(self, limit: int) -> memoryview:
        """Between 1 and `limit` bytes; ArchiveError if the stream ends first."""
        if not self._buffer:
            self._buffer = memoryview(self._inflater.read())
            if not self._buffer:
                raise ArchiveError(gettext_noop("The archive is truncated."))
        data, self._buffer = self._buffer[:limit], self._buffer[limit:]
        return data

    def read_exact(self, n: int) -> bytes:
        parts, wanted = [], n
        while wanted:
            piece = self.read_some(wanted)
            parts.append(piece)
            wanted -= len(piece)
        return b"".join(parts)

    def skip(self, n: int) -> None:
        while n:
            n -= len(self.read_some(n))

    def finish(self) -> None:
        """After the end-of-archive marker: only zero padding, then the frame's end."""
        seen = 0
        while True:
            data = self._buffer if self._buffer else memoryview(self._inflater.read())
            self._buffer = memoryview(b"")
            if not data:
                break
            seen += len(data)
            if seen > MAX_TRAILING_ZEROS or bytes(data).strip(b"\x00"):
                raise ArchiveError(gettext_noop("The archive has data after its end."))
        self.frame.check_end()


# --- members --------------------------------------------------------------------

@dataclass(frozen=True)
class Member:
    name: bytes
    is_dir: bool
    size: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int


def _apply_pax(header: tarfmt.RawHeader, records: dict[str, bytes]) -> dict:
    values = {
        "name": header.name, "size": header.size, "uid": header.uid,
        "gid": header.gid, "mtime_ns": header.mtime,
    }
    for key, value in records.items():
        if key == "path":
            values["name"] = value
        elif key == "size":
            values["size"] = tarfmt.pax_decimal(value, key, (1 << 63) - 1)
        elif key in ("uid", "gid"):
            values[key] = tarfmt.pax_decimal(value, key, (1 << 32) - 2)
        elif key == "mtime":
            values["mtime_ns"] = tarfmt.pax_mtime(value)
        elif key.startswith("GNU.sparse."):
            raise ArchiveError(gettext_noop("The archive holds %(what)s."),
                               what=gettext_noop("a GNU sparse file"))
        elif key not in tarfmt.PAX_IGNORED and not key.startswith(tarfmt.PAX_IGNORED_PREFIXES):
            raise ArchiveError(gettext_noop("A PAX header uses the unsupported keyword %(key)s."),
                               key=key[:100])
    return values


def next_member(stream: TarStream) -> Member | None:
    """The next member with its overrides applied, or None at the end-of-archive marker.

    At most one extended header (PAX `x` or GNU `L`) may precede a member.
    """
    records: dict[str, bytes] | None = None
    long_name: bytes | None = None
    while True:
        header = tarfmt.parse_header(stream.read_exact(tarfmt.BLOCK))
        if header is None:
            if records is not None or long_name is not None:
                raise ArchiveError(gettext_noop("An extended header is not followed by a member."))
            if stream.read_exact(tarfmt.BLOCK) != tarfmt.ZERO_BLOCK:
                raise ArchiveError(gettext_noop("The archive has a lone zero block."))
            return None
        kind = header.typeflag
        if kind in (tarfmt.PAX_HEADER, tarfmt.GNU_LONGNAME):
            if records is not None or long_name is not None:
                raise ArchiveError(gettext_noop("A member has more than one extended header."))
            if header.size > MAX_META_BYTES:
                raise ArchiveError(gettext_noop("An extended header is too large."))
            stream.meta_excess += max(0, header.size - META_ALLOWANCE_BYTES)
            if stream.meta_excess > MAX_META_EXCESS_BYTES:
                raise ArchiveError(gettext_noop("The archive's extended headers are too large "
                                                "in all."))
            data = stream.read_exact(header.size)
            stream.skip(-header.size % tarfmt.BLOCK)
            if kind == tarfmt.PAX_HEADER:
                records = tarfmt.parse_pax(data, max_records=MAX_PAX_RECORDS)
            else:
                long_name = data[:-1] if data.endswith(b"\x00") else data
            continue
        if kind in tarfmt.REFUSED_TYPES:
            raise ArchiveError(
                gettext_noop("The archive holds %(what)s (%(name)s); only regular files and "
                             "directories are allowed."),
                what=tarfmt.REFUSED_TYPES[kind],
                name=(long_name or header.name).decode("utf-8", "backslashreplace")[:200],
            )
        if kind not in (tarfmt.REGULAR, tarfmt.REGULAR_OLD, tarfmt.DIRECTORY):
            raise ArchiveError(gettext_noop("The archive holds a member of unknown type %(type)s."),
                               type=repr(kind))
        values = _apply_pax(header, records or {})
        if long_name is not None:
            values["name"] = long_name
        return Member(is_dir=kind == tarfmt.DIRECTORY, mode=header.mode & 0o777, **values)
