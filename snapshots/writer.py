"""Reading volumes into an archive: a scan of each tree, then one streaming write.

The scan comes first because the manifest, which leads the archive, carries
each volume's file and byte counts. It walks each volume relative to open
directory fds without following symlinks, keeps regular files and
directories, and lists everything else in `skipped` — symlinks, sockets,
FIFOs, devices, and names the format cannot hold (not UTF-8, control
characters, backslashes, too long or too deep) — so nothing is lost silently.
Hard links are read through each of their names and stored as separate files.
"""

from __future__ import annotations

import hashlib
import os
import queue
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import zstandard
from django.utils.translation import gettext_noop

from lib.fsutil import DIR_FLAGS, DirChain
from snapshots import tarfmt
from snapshots.archive_format import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    MAX_SKIPPED_LISTED,
    Limits,
    manifest_bytes,
    name_problem,
)
from snapshots.errors import CaptureError, OverBudget

COMPRESSION_LEVEL = 3
_CHUNK = 1 << 20
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

_SKIPPED_TYPES = {
    stat.S_IFLNK: "symlink",
    stat.S_IFSOCK: "socket",
    stat.S_IFIFO: "fifo",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


OVER_BYTES = gettext_noop(
    "The snapshot would hold more than its budget of %(limit)d bytes "
    "(BERTH_PRE_DEPLOY_BACKUP_MAX_BYTES); it was abandoned."
)
OVER_TIME = gettext_noop(
    "The snapshot took longer than its budget of %(seconds)d s "
    "(BERTH_PRE_DEPLOY_BACKUP_TIMEOUT); it was abandoned."
)


@dataclass(frozen=True)
class Budget:
    """What a capture may take: `max_bytes` of data, and until `deadline` on `clock`.

    Data is counted by apparent size, as the archive holds it: a sparse
    file's holes take no disk but as many bytes of the archive (before
    compression) and of reading. The scan checks it entry by entry, so a
    volume over the budget is given up before a byte of it is read; the
    write checks both between members and between chunks.
    """

    max_bytes: int
    seconds: int
    deadline: float
    clock: Callable[[], float]

    @classmethod
    def starting_now(cls, *, max_bytes: int, seconds: int,
                     clock: Callable[[], float] = time.monotonic) -> Budget:
        return cls(max_bytes=max_bytes, seconds=seconds, deadline=clock() + seconds, clock=clock)

    def check(self, data_bytes: int) -> None:
        """Raise OverBudget once `data_bytes` is over the bytes or the deadline has passed."""
        if data_bytes > self.max_bytes:
            raise OverBudget(OVER_BYTES, limit=self.max_bytes)
        if self.clock() > self.deadline:
            raise OverBudget(OVER_TIME, seconds=self.seconds)


@dataclass(slots=True)
class Entry:
    parts: tuple[str, ...]  # components below the volume root; () is the root
    is_dir: bool
    size: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int


@dataclass
class VolumeScan:
    index: int
    root: str
    entries: list[Entry] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    files: int = 0
    directories: int = 0
    bytes: int = 0
    missing: bool = False
    identity: tuple[int, int] | None = None  # the root's (st_dev, st_ino) when scanned

    def describe(self) -> dict:
        return {
            "index": self.index, "files": self.files, "directories": self.directories,
            "bytes": self.bytes, "missing": self.missing,
        }


def _shown(parts: tuple[str, ...]) -> str:
    return os.fsencode("/".join(parts)).decode("utf-8", "backslashreplace")


class _Scanner:
    def __init__(self, scan: VolumeScan, limits: Limits, counted: list[int],
                 budget: Budget | None = None) -> None:
        self.scan = scan
        self.limits = limits
        # [entries, bytes] over every volume of the archive, against the caps.
        self.counted = counted
        self.budget = budget
        self.prefix = len(f"volumes/{scan.index}/".encode())

    def _count_entry(self, size: int) -> None:
        """One more entry seen, stored or skipped: against the entry cap and the budget (a
        volume of a million symlinks costs the scan as much as a million files)."""
        self.counted[0] += 1
        if self.counted[0] > self.limits.max_entries:
            raise CaptureError(
                gettext_noop("The volumes hold more than %(limit)d entries, the most a snapshot "
                             "may hold (BERTH_SNAPSHOT_MAX_ENTRIES)."),
                limit=self.limits.max_entries,
            )
        if self.budget is not None:
            self.budget.check(self.counted[1] + size)

    def add(self, entry: Entry) -> None:
        self.scan.entries.append(entry)
        self._count_entry(entry.size)
        if entry.is_dir:
            self.scan.directories += 1
            return
        if entry.size > self.limits.max_file_bytes:
            raise CaptureError(
                gettext_noop("%(path)s is larger than the per-file limit "
                             "(BERTH_SNAPSHOT_MAX_FILE_BYTES)."),
                path=_shown(entry.parts),
            )
        self.scan.files += 1
        self.scan.bytes += entry.size
        self.counted[1] += entry.size
        if self.counted[1] > self.limits.max_bytes:
            raise CaptureError(
                gettext_noop("The volumes hold more data than a snapshot may hold "
                             "(BERTH_SNAPSHOT_MAX_BYTES)."),
            )

    def skip(self, parts: tuple[str, ...], kind: str, reason: str) -> None:
        self._count_entry(0)
        self.scan.skipped.append(
            {"volume": self.scan.index, "path": _shown(parts), "type": kind, "reason": reason}
        )

    def problem(self, parts: tuple[str, ...]) -> str | None:
        problem = name_problem(os.fsencode(parts[-1]), self.limits)
        if problem:
            return problem
        if len(parts) > self.limits.max_depth:
            return gettext_noop("nested too deeply")
        if self.prefix + len(os.fsencode("/".join(parts))) > self.limits.max_path_bytes:
            return gettext_noop("a path that is too long")
        return None

    def walk(self, dir_fd: int, parts: tuple[str, ...]) -> None:
        with os.scandir(dir_fd) as listing:
            children = sorted(listing, key=lambda e: os.fsencode(e.name))
        for child in children:
            path = parts + (child.name,)
            info = child.stat(follow_symlinks=False)
            kind = stat.S_IFMT(info.st_mode)
            if kind not in (stat.S_IFREG, stat.S_IFDIR):
                self.skip(path, _SKIPPED_TYPES.get(kind, "other"),
                          gettext_noop("only regular files and directories are stored"))
                continue
            is_dir = kind == stat.S_IFDIR
            problem = self.problem(path)
            if problem:
                self.skip(path, "directory" if is_dir else "file", problem)
                continue
            self.add(_entry(path, info, is_dir))
            if is_dir:
                fd = _open_dir(path[-1], dir_fd, path)
                try:
                    self.walk(fd, path)
                finally:
                    os.close(fd)


def _entry(parts: tuple[str, ...], info: os.stat_result, is_dir: bool) -> Entry:
    return Entry(
        parts=parts, is_dir=is_dir, size=0 if is_dir else info.st_size,
        mode=stat.S_IMODE(info.st_mode) & 0o777, uid=info.st_uid, gid=info.st_gid,
        mtime_ns=info.st_mtime_ns,
    )


def _open_dir(name: str, dir_fd: int, parts: tuple[str, ...]) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError, OSError) as exc:
        raise CaptureError(
            gettext_noop("%(path)s changed while it was being captured (%(error)s)."),
            path=_shown(parts), error=exc.strerror or str(exc),
        ) from None


def scan_volumes(roots: list[str], limits: Limits,
                 budget: Budget | None = None) -> list[VolumeScan]:
    """Scan each volume root (its index is its position) within the caps of `limits`, and of
    `budget` when given (OverBudget past it).

    A root that does not exist yet (a volume never deployed) is captured as an
    empty directory and marked `missing` in the manifest.
    """
    counted = [0, 0]
    scans = []
    for index, root in enumerate(roots):
        scan = VolumeScan(index=index, root=root)
        scanner = _Scanner(scan, limits, counted, budget)
        try:
            # O_NOFOLLOW: a volume root replaced by a symlink is refused, not followed.
            fd = os.open(root, DIR_FLAGS)
        except FileNotFoundError:
            scan.missing = True
            scanner.add(Entry((), True, 0, 0o755, 0, 0, time.time_ns()))
            scans.append(scan)
            continue
        except OSError as exc:
            raise CaptureError(gettext_noop("The volume %(path)s cannot be read (%(error)s)."),
                               path=root, error=exc.strerror or str(exc)) from None
        try:
            info = os.fstat(fd)
            scan.identity = (info.st_dev, info.st_ino)
            scanner.add(_entry((), info, True))
            scanner.walk(fd, ())
        finally:
            os.close(fd)
        scans.append(scan)
    return scans


def build_manifest(*, created: str, workload: dict, consistency: str, volumes: list[dict],
                   scans: list[VolumeScan]) -> dict:
    """The manifest: `volumes` (scope, source, target per index) completed by the scans."""
    skipped = [item for scan in scans for item in scan.skipped]
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "created": created,
        "workload": workload,
        "consistency": consistency,
        "volumes": [volume | scan.describe() for volume, scan in zip(volumes, scans, strict=True)],
        "skipped": skipped[:MAX_SKIPPED_LISTED],
        "skipped_count": len(skipped),
    }


class HashingWriter:
    """Where the compressed stream goes: hashed, counted and written to `fd` on a thread.

    Hashing and writing release the GIL, so on their own thread they overlap
    with reading the volumes and compressing; `close()` waits for the last
    write and re-raises its error, if any.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="snapshot-writer", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is not None:
                continue  # keep draining so that write() never blocks forever
            try:
                self.sha256.update(data)
                view = memoryview(data)
                while view:
                    view = view[os.write(self.fd, view):]
            except BaseException as exc:  # noqa: BLE001 - handed to the writing thread
                self._error = exc

    def write(self, data) -> int:
        if self._error is not None:
            raise self._error
        chunk = bytes(data)
        self.size += len(chunk)
        self._queue.put(chunk)
        return len(chunk)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error


class _Batch:
    """Small writes (headers, small files) gathered into large ones for the compressor."""

    def __init__(self, sink) -> None:
        self.sink = sink
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)
        if self.size >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            self.sink.write(b"".join(self.parts))
            self.parts, self.size = [], 0


@dataclass
class WriteReport:
    changed: list[str] = field(default_factory=list)  # files whose size changed while read


class _Writer:
    def __init__(self, sink, progress: Callable[[int], None] | None,
                 budget: Budget | None = None) -> None:
        self.batch = _Batch(sink)
        self.sink = sink
        self.progress = progress
        self.budget = budget
        self.buffer = bytearray(_CHUNK)
        self.done = 0
        self.report = WriteReport()

    def volume(self, scan: VolumeScan) -> None:
        base = f"volumes/{scan.index}"
        if scan.missing:
            root = scan.entries[0]
            self.batch.add(self._header(base, root))
            return
        root_fd = _reopen_root(scan)
        chain = DirChain(root_fd)
        try:
            for entry in scan.entries:
                self._check(self.done + entry.size)
                name = "/".join((base, *entry.parts))
                if entry.is_dir:
                    self.batch.add(self._header(name, entry))
                else:
                    self._file(chain, name, entry)
        except OSError as exc:
            raise CaptureError(
                gettext_noop("%(path)s changed while it was being captured (%(error)s)."),
                path=_shown(entry.parts), error=exc.strerror or str(exc),
            ) from None
        finally:
            chain.close()
            os.close(root_fd)

    def _check(self, data_bytes: int) -> None:
        if self.budget is not None:
            self.budget.check(data_bytes)

    @staticmethod
    def _header(name: str, entry: Entry) -> bytes:
        return tarfmt.member_header(
            name, is_dir=entry.is_dir, size=entry.size, mode=entry.mode, uid=entry.uid,
            gid=entry.gid, mtime_ns=entry.mtime_ns,
        )

    def _file(self, chain: DirChain, name: str, entry: Entry) -> None:
        fd = os.open(entry.parts[-1], _READ_FLAGS, dir_fd=chain.fd(entry.parts[:-1]))
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise CaptureError(
                    gettext_noop("%(path)s is no longer a regular file."), path=_shown(entry.parts)
                )
            self.batch.add(self._header(name, entry))
            copied = self._copy(fd, entry.size)
            if copied < entry.size or info.st_size != entry.size:
                self.report.changed.append(_shown(entry.parts))
            if copied < entry.size:
                # It shrank while being read: the member keeps its announced size.
                self.batch.add(bytes(entry.size - copied))
        finally:
            os.close(fd)
        self.batch.add(tarfmt.pad(entry.size))
        self.done += entry.size
        if self.progress:
            self.progress(self.done)

    def _copy(self, fd: int, size: int) -> int:
        if size < _CHUNK:
            data = os.read(fd, size)
            while data and len(data) < size:
                more = os.read(fd, size - len(data))
                if not more:
                    break
                data += more
            self.batch.add(data)
            return len(data)
        self.batch.flush()
        view = memoryview(self.buffer)
        copied = 0
        while copied < size:
            n = os.readv(fd, [view[:min(_CHUNK, size - copied)]])
            if not n:
                break
            self.sink.write(view[:n])
            copied += n
            self._check(self.done + copied)
            if self.progress and copied % (64 * _CHUNK) < _CHUNK:
                self.progress(self.done + copied)
        return copied


def _reopen_root(scan: VolumeScan) -> int:
    """The scanned volume root again: never through a symlink, and the same directory."""
    try:
        fd = os.open(scan.root, DIR_FLAGS)
    except OSError as exc:
        raise CaptureError(gettext_noop("The volume %(path)s cannot be read (%(error)s)."),
                           path=scan.root, error=exc.strerror or str(exc)) from None
    info = os.fstat(fd)
    if (info.st_dev, info.st_ino) != scan.identity:
        os.close(fd)
        raise CaptureError(gettext_noop("The volume %(path)s was replaced while it was being "
                                        "captured."), path=scan.root)
    return fd


def write_archive(out: BinaryIO, manifest: dict, scans: list[VolumeScan], *,
                  threads: int = -1, progress: Callable[[int], None] | None = None,
                  budget: Budget | None = None) -> WriteReport:
    """Write the archive of `scans` (with `manifest` first) to `out`.

    With a `budget`, OverBudget stops the write between members or chunks
    once it is spent; what was written to `out` is then the caller's to
    discard. The size of each file is the one the scan saw: a file that grew while it
    was read is cut there, one that shrank is padded with zeros, and both are
    named in the report (only possible in the `live` consistency mode).
    """
    compressor = zstandard.ZstdCompressor(
        level=COMPRESSION_LEVEL, threads=threads, write_checksum=True
    )
    with compressor.stream_writer(out, closefd=False, write_size=_CHUNK) as sink:
        writer = _Writer(sink, progress, budget)
        data = manifest_bytes(manifest)
        writer.batch.add(tarfmt.member_header(
            MANIFEST_NAME, is_dir=False, size=len(data), mode=0o644, uid=0, gid=0,
            mtime_ns=time.time_ns(),
        ))
        writer.batch.add(data + tarfmt.pad(len(data)))
        for scan in scans:
            writer.volume(scan)
        writer.batch.add(tarfmt.END_OF_ARCHIVE)
        writer.batch.flush()
    return writer.report
