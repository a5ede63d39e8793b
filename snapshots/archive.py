"""The safe extractor that restore and import trust: a Berth snapshot archive into staging.

`extract()` streams an archive into staging directories, validating every
member in the same pass, and either returns what it wrote or raises
ArchiveError after removing every staging directory it made. It never uses
tarfile (snapshots/tarfmt.py says why); snapshots/tarstream.py reads the
stream, snapshots/archive_format.py holds the names and manifest rules, and
docs/archive-format.md lists every rule this module enforces.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from django.utils.translation import gettext_noop

from lib.fsutil import DIR_FLAGS, DirChain, remove_tree, syncfs
from snapshots import reservations, tarfmt, tarstream
from snapshots.archive_format import (
    MANIFEST_NAME,
    Limits,
    member_parts,
    parse_manifest,
)
from snapshots.errors import ArchiveError, InsufficientSpace

_CHUNK = 1 << 20
_INDEX = re.compile(r"0|[1-9][0-9]{0,5}")
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

# --- the extractor ----------------------------------------------------------------

@dataclass
class Extracted:
    """What an extraction wrote: the manifest, and per volume the counts actually found."""

    manifest: dict
    files: list[int] = field(default_factory=list)
    directories: list[int] = field(default_factory=list)
    bytes: list[int] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes)


class _Space:
    """Free space and inodes on one staging filesystem, kept above the reserve.

    `fstatvfs` is read afresh every 64 MiB or 1000 entries (others write to
    the filesystem too), and whenever what the last reading left would not
    hold the next entry; in between, each entry is subtracted from it. A
    write that still meets a full disk fails with ENOSPC, reported the same way.
    """

    RECHECK_BYTES = 64 << 20
    RECHECK_ENTRIES = 1000

    def __init__(self, fd: int, limits: Limits) -> None:
        self.fd = fd
        self.limits = limits
        self.bytes_left = self.inodes_left = 0
        self.since_bytes = self.since_entries = 0
        self.block = 4096
        self.stale = True

    def _read(self) -> None:
        stat = os.fstatvfs(self.fd)
        self.block = stat.f_frsize or 4096
        self.bytes_left = stat.f_bavail * stat.f_frsize - self.limits.reserve_bytes
        # Some filesystems (btrfs) have no inode limit and report f_files = 0.
        self.inodes_left = (
            stat.f_favail - self.limits.reserve_inodes if stat.f_files else 1 << 62
        )
        self.since_bytes = self.since_entries = 0
        self.stale = False

    def claim(self, size: int) -> None:
        allocated = -(-size // self.block) * self.block
        if (self.stale or allocated > self.bytes_left or self.inodes_left < 1
                or self.since_bytes + size > self.RECHECK_BYTES
                or self.since_entries >= self.RECHECK_ENTRIES):
            self._read()
            allocated = -(-size // self.block) * self.block
            if allocated > self.bytes_left:
                raise InsufficientSpace(
                    gettext_noop("The staging filesystem is out of free space."))
            if self.inodes_left < 1:
                raise InsufficientSpace(
                    gettext_noop("The staging filesystem is out of free inodes."))
        self.bytes_left -= allocated
        self.inodes_left -= 1
        self.since_bytes += size
        self.since_entries += 1


class _Extractor:
    def __init__(self, roots: list[int], limits: Limits,
                 progress: Callable[[int], None] | None) -> None:
        self.roots = roots
        self.chains = [DirChain(fd) for fd in roots]
        self.space = [_Space(fd, limits) for fd in roots]
        self.blocks: dict[int, int] = {}
        self.limits = limits
        self.progress = progress
        self.is_root = os.geteuid() == 0
        # Compact bookkeeping (1M entries with long paths must not take gigabytes):
        # every directory gets an id; per id the names of its children so far,
        # its parent id and name (a volume root: parent -1 - index, name "") and
        # its metadata, applied at the end. No full path is kept anywhere, and a
        # file's name not at all.
        self.volume_roots: dict[int, int] = {}  # volume index → directory id
        self.subdirs: dict[tuple[int, str], int] = {}  # (parent id, name) → directory id
        # directory id → hash() of its members' names: a 64-bit hash rather than the
        # name (up to 255 bytes). Two names with one hash could only make a good
        # archive be refused as holding a name twice, never let a duplicate through.
        self.children: list[set[int]] = []
        self.dirs: list[tuple[int, str, int, int, int, int]] = []
        # directory id → (parent id, name, mode, uid, gid, mtime_ns)
        self._last_parent: tuple[int, tuple[str, ...], int | None] = (-1, (), None)
        self.entries = 0
        self.written = 0
        self.reported = 0
        self.devices = [os.fstat(fd).st_dev for fd in roots]
        self.declared: list[dict] = []
        self.reservation: reservations.Reservation | None = None

    def close(self) -> None:
        for chain in self.chains:
            chain.close()
        if self.reservation is not None:
            self.reservation.release()

    def run(self, stream: tarstream.TarStream, volume_count: int) -> Extracted:
        manifest = self._read_manifest(stream, volume_count)
        count = len(manifest["volumes"])
        result = Extracted(manifest, [0] * count, [0] * count, [0] * count)
        declared = self.declared = manifest["volumes"]
        while (member := tarstream.next_member(stream)) is not None:
            self.entries += 1
            if self.entries > self.limits.max_entries:
                raise ArchiveError(gettext_noop("The archive has more entries than the limit "
                                                "of %(limit)d."), limit=self.limits.max_entries)
            index, parts = self._place(member, count)
            # The manifest's counts are upper bounds, checked before anything is written:
            # a small archive cannot fill the disk with more than it declared.
            if member.is_dir:
                result.directories[index] += 1
                over = result.directories[index] > declared[index]["directories"]
            else:
                result.files[index] += 1
                result.bytes[index] += member.size
                over = (result.files[index] > declared[index]["files"]
                        or result.bytes[index] > declared[index]["bytes"])
            if over:
                raise ArchiveError(gettext_noop(
                    "The archive holds more than its manifest declares (volume %(index)d)."),
                    index=index)
            if member.is_dir:
                self._make_dir(index, parts, member)
            else:
                self._write_file(stream, index, parts, member)
        stream.finish()
        self._check_counts(manifest, result)
        self._apply_directory_metadata()
        return result

    def _reserve(self) -> None:
        """Reserve what the manifest declares, above the reserve and beside every other
        extraction in progress (snapshots/reservations.py), or InsufficientSpace.

        Taken when the first member that needs room arrives, not with the manifest:
        by then that member has passed every per-member check, so an archive whose
        first file breaks a cap (a 300 GiB file) is refused as invalid, not as too big
        for the disk.
        """
        needs: dict[int, reservations.Need] = {}
        for volume in self.declared:
            index = volume["index"]
            device = self.devices[index]
            need = needs.setdefault(device, reservations.Need(device))
            entries = volume["files"] + volume["directories"]
            # On disk, not in the manifest's terms: every entry takes at least a block
            # (150,000 tiny files are 600 MB on a 4 KiB filesystem, not 100 kB).
            need.bytes += volume["bytes"] + entries * self._block(index)
            need.entries += entries
        self.reservation = reservations.reserve(
            {device: self.roots[self.devices.index(device)] for device in needs},
            list(needs.values()), reserve_bytes=self.limits.reserve_bytes,
            reserve_inodes=self.limits.reserve_inodes,
        )

    def _read_manifest(self, stream: tarstream.TarStream, volume_count: int) -> dict:
        member = tarstream.next_member(stream)
        if member is None or member.name != MANIFEST_NAME.encode() or member.is_dir:
            raise ArchiveError(gettext_noop("The archive does not start with its manifest."))
        if member.size > self.limits.max_manifest_bytes:
            raise ArchiveError(gettext_noop("The manifest is larger than the limit."))
        data = stream.read_exact(member.size)
        stream.skip(-member.size % tarfmt.BLOCK)
        return parse_manifest(data, volume_count, self.limits)

    def _place(self, member: tarstream.Member, volume_count: int) -> tuple[int, tuple[str, ...]]:
        """The member's volume and path inside it, checked against everything seen so far."""
        parts = member_parts(member.name, member.is_dir, self.limits)
        shown = "/".join(parts)
        if len(parts) < 2 or parts[0] != "volumes" or not _INDEX.fullmatch(parts[1]):
            raise ArchiveError(gettext_noop("The name %(name)s is not under volumes/<index>/."),
                               name=shown)
        index, inner = int(parts[1]), parts[2:]
        if index >= volume_count:
            raise ArchiveError(
                gettext_noop("The name %(name)s is in volume %(index)d, which the manifest "
                             "does not list."), name=shown, index=index,
            )
        if len(inner) > self.limits.max_depth:
            raise ArchiveError(gettext_noop("The name %(name)s is nested too deeply."), name=shown)
        parent = self._parent_id(index, inner) if inner else None
        if (parent is not None and hash(inner[-1]) in self.children[parent]) or (
                not inner and index in self.volume_roots):
            raise ArchiveError(gettext_noop("The archive holds %(name)s twice."), name=shown)
        if not inner and not member.is_dir:
            raise ArchiveError(gettext_noop("The volume root %(name)s is not a directory."),
                               name=shown)
        if inner and parent is None:
            raise ArchiveError(
                gettext_noop("%(name)s comes before its parent directory, or its parent is "
                             "a file."), name=shown,
            )
        if member.size > self.limits.max_file_bytes:
            raise ArchiveError(gettext_noop("%(name)s is larger than the per-file limit."),
                               name=shown)
        if member.is_dir and member.size:
            raise ArchiveError(gettext_noop("The directory %(name)s has data."), name=shown)
        if parent is not None:
            self.children[parent].add(hash(inner[-1]))
        if member.is_dir:
            directory = len(self.dirs)
            if parent is None:
                self.volume_roots[index] = directory
                self.dirs.append((-1 - index, "", member.mode, member.uid, member.gid,
                                  member.mtime_ns))
            else:
                self.subdirs[parent, inner[-1]] = directory
                self.dirs.append((parent, inner[-1], member.mode, member.uid, member.gid,
                                  member.mtime_ns))
            self.children.append(set())
        return index, inner

    def _parent_id(self, index: int, inner: tuple[str, ...]) -> int | None:
        """The id of the directory holding `inner` in volume `index`, None if not one yet."""
        dirname = inner[:-1]
        last_index, last_dirname, last_id = self._last_parent
        if last_index == index and last_dirname == dirname and last_id is not None:
            return last_id
        directory = self.volume_roots.get(index)
        for part in dirname:
            if directory is None:
                break
            directory = self.subdirs.get((directory, part))
        self._last_parent = (index, dirname, directory)
        return directory

    def _dir_path(self, directory: int) -> tuple[int, tuple[str, ...]]:
        """A directory's volume index and path inside it, from its id."""
        parts: list[str] = []
        parent, name = self.dirs[directory][:2]
        while parent >= 0:
            parts.append(name)
            parent, name = self.dirs[parent][:2]
        return -1 - parent, tuple(reversed(parts))

    def _block(self, index: int) -> int:
        """The filesystem's block size under destination `index`, read once."""
        if index not in self.blocks:
            self.blocks[index] = os.fstatvfs(self.roots[index]).f_frsize or 4096
        return self.blocks[index]

    def _on_disk(self, index: int, size: int) -> int:
        """What an entry of `size` counts against its reservation: its size and a block."""
        return size + self._block(index)

    def _check_space(self, index: int, size: int) -> None:
        if self.reservation is None:
            self._reserve()
        self.space[index].claim(size)

    def _make_dir(self, index: int, parts: tuple[str, ...], member: tarstream.Member) -> None:
        if parts:
            self._check_space(index, 0)
            parent = self.chains[index].fd(parts[:-1])
            os.mkdir(parts[-1], 0o700, dir_fd=parent)
            self.reservation.wrote(self.devices[index], self._on_disk(index, 0))
        # Modes and times are set at the end (writing inside would change them),
        # from what _place kept of the member.

    def _write_file(self, stream: tarstream.TarStream, index: int, parts: tuple[str, ...],
                    member: tarstream.Member) -> None:
        if self.written + member.size > self.limits.max_bytes:
            raise ArchiveError(gettext_noop("The archive holds more data than the limit allows."))
        self._check_space(index, member.size)
        parent = self.chains[index].fd(parts[:-1])
        fd = os.open(parts[-1], _FILE_FLAGS, 0o600, dir_fd=parent)
        try:
            remaining = member.size
            while remaining:
                chunk = stream.read_some(min(remaining, _CHUNK))
                remaining -= len(chunk)
                self.written += len(chunk)
                if self.written > self.limits.max_bytes:
                    raise ArchiveError(
                        gettext_noop("The archive holds more data than the limit allows."))
                while chunk:
                    chunk = chunk[os.write(fd, chunk):]
            stream.skip(-member.size % tarfmt.BLOCK)
            self._set_metadata(fd, member.mode, member.uid, member.gid, member.mtime_ns)
        finally:
            os.close(fd)
        # Counted once written, so that others never subtract less than is still to come.
        self.reservation.wrote(self.devices[index], self._on_disk(index, member.size))
        if self.progress and self.written - self.reported >= 8 * _CHUNK:
            self.reported = self.written
            self.progress(self.written)

    def _set_metadata(self, fd: int, mode: int, uid: int, gid: int, mtime_ns: int) -> None:
        if self.is_root:
            os.fchown(fd, uid, gid)
        os.fchmod(fd, mode & 0o777)
        try:
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        except (OverflowError, ValueError):
            raise ArchiveError(gettext_noop("A member's modification time cannot be stored."),
                               ) from None

    def _check_counts(self, manifest: dict, result: Extracted) -> None:
        for volume in manifest["volumes"]:
            index = volume["index"]
            if index not in self.volume_roots:
                raise ArchiveError(gettext_noop("The archive lacks the root of volume %(index)d."),
                                   index=index)
            found = (result.files[index], result.directories[index], result.bytes[index])
            if found != (volume["files"], volume["directories"], volume["bytes"]):
                raise ArchiveError(
                    gettext_noop("Volume %(index)d does not hold what the manifest says."),
                    index=index,
                )

    def _apply_directory_metadata(self) -> None:
        # Deepest first, so that a parent's mode never stops a child being opened.
        for directory in range(len(self.dirs) - 1, -1, -1):
            index, parts = self._dir_path(directory)
            fd = os.open(parts[-1], DIR_FLAGS, dir_fd=self.chains[index].fd(parts[:-1])) \
                if parts else os.dup(self.roots[index])
            try:
                self._set_metadata(fd, *self.dirs[directory][2:])
            finally:
                os.close(fd)


def extract(source: BinaryIO, destinations: Sequence[str], *, limits: Limits | None = None,
            durable: bool = False, progress: Callable[[int], None] | None = None) -> Extracted:
    """Stream the archive in `source` into `destinations[i]`, one directory per volume.

    Each destination must not exist; it is created (0700 until the volume
    root's own mode is applied at the end). `len(destinations)` is the
    current configuration's volume count: an archive volume beyond it is
    refused. On any error every destination created here is removed and
    ArchiveError (InsufficientSpace for a full disk) is raised. `durable`
    flushes each destination's filesystem before returning; `progress` is
    called with the bytes written so far.
    """
    limits = limits or Limits.from_settings()
    created: list[str] = []
    roots: list[int] = []
    extractor = None
    try:
        for destination in destinations:
            try:
                os.mkdir(destination, 0o700)
            except FileExistsError:
                raise ArchiveError(gettext_noop("The staging directory %(path)s already exists."),
                                   path=destination) from None
            created.append(destination)
            roots.append(os.open(destination, DIR_FLAGS))
        extractor = _Extractor(roots, limits, progress)
        stream = tarstream.TarStream(source)
        try:
            result = extractor.run(stream, len(destinations))
        finally:
            stream.close()
        if durable:
            for fd in roots:
                syncfs(fd)
        return result
    except BaseException as exc:
        if extractor:
            extractor.close()
            extractor = None
        for fd in roots:
            os.close(fd)
        roots.clear()
        for path in created:
            remove_tree(path)
        if isinstance(exc, OSError):
            raise _os_error(exc) from None
        raise
    finally:
        if extractor:
            extractor.close()
        for fd in roots:
            os.close(fd)


def _os_error(exc: OSError) -> ArchiveError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientSpace(gettext_noop("The staging filesystem is out of free space."))
    return ArchiveError(gettext_noop("The archive could not be written to staging: %(error)s"),
                        error=exc.strerror or str(exc))


def extract_tree(source: BinaryIO, staging: str, *, volume_count: int,
                 limits: Limits | None = None, durable: bool = False,
                 progress: Callable[[int], None] | None = None) -> Extracted:
    """extract() into `staging/volumes/<i>`, `staging` created here and removed on error."""
    try:
        os.mkdir(staging, 0o700)
    except FileExistsError:
        raise ArchiveError(gettext_noop("The staging directory %(path)s already exists."),
                           path=staging) from None
    try:
        os.mkdir(os.path.join(staging, "volumes"), 0o700)
        destinations = [os.path.join(staging, "volumes", str(i)) for i in range(volume_count)]
        return extract(source, destinations, limits=limits, durable=durable, progress=progress)
    except BaseException:
        remove_tree(staging)
        raise
