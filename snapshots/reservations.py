"""Free space promised to extractions in progress, across every Berth process.

Each extraction (an import's validation, a restore, a recovery's import and
restore) declares up front what it will write: its manifest's bytes and
entries per filesystem. Free space alone cannot say whether two of them fit
at once (neither has written anything when both check), so before writing, an
extraction *reserves* its amounts: under an exclusive `flock` on
`$BERTH_DATA_DIR/reservations/.lock` it reads the filesystem's free space,
subtracts what every other live reservation on that filesystem has still to
write, and only if its own amounts fit records them in a file of its own,
`<owner token>-<random>.json` (lib/owners.py). Two checks therefore never both
pass on the same free space.

The file says how much its extraction has written so far (brought up to date
every 64 MiB or 1000 entries), so what others subtract is what it has still
to write, never what the disk already shows as used. It is removed when the
extraction ends, however it ends; the file of a dead owner is ignored by
every check and removed by the sweep (`sweep_dead`). docs/archive-format.md,
"Reservations", has the why.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.utils.translation import gettext_noop

from lib import owners
from snapshots.errors import InsufficientSpace

LOCK_NAME = ".lock"
SUFFIX = ".json"
UPDATE_BYTES = 64 << 20
UPDATE_ENTRIES = 1000


def directory() -> Path:
    return Path(settings.DATA_DIR) / "reservations"


@contextlib.contextmanager
def _locked() -> Iterator[Path]:
    """The reservations directory, with its lock held (an open file of its own each time,
    so two threads of one process exclude each other too)."""
    where = directory()
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(where / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield where
    finally:
        os.close(fd)  # releases the flock


@dataclass
class Need:
    """What an extraction will write on one filesystem (`device` is its st_dev)."""

    device: int
    bytes: int = 0
    entries: int = 0
    written_bytes: int = 0
    written_entries: int = 0

    @property
    def remaining(self) -> tuple[int, int]:
        return (max(0, self.bytes - self.written_bytes),
                max(0, self.entries - self.written_entries))


def _read(path: Path) -> list[Need]:
    """A reservation file's needs; [] for one that is unreadable or half-written."""
    try:
        data = json.loads(path.read_text())
        return [Need(**need) for need in data["needs"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _live_files(where: Path) -> Iterator[Path]:
    for path in where.iterdir():
        if not path.name.endswith(SUFFIX):
            continue
        owner = owners.from_token(path.name)
        # A file without a token is no reservation of Berth's; an owner out of
        # sight (another PID namespace) counts, as lib/owners.py says.
        if owner is not None and not owners.is_dead(owner):
            yield path


def _held(where: Path, device: int) -> tuple[int, int]:
    """Bytes and entries every live reservation has still to write on `device`."""
    size = entries = 0
    for path in _live_files(where):
        for need in _read(path):
            if need.device == device:
                size += need.remaining[0]
                entries += need.remaining[1]
    return size, entries


def held(device: int) -> tuple[int, int]:
    """What live reservations have still to write on the filesystem `device` (a reading)."""
    with _locked() as where:
        return _held(where, device)


@dataclass
class Reservation:
    """One extraction's promise; `wrote()` as it writes, `release()` when it ends."""

    path: Path | None
    needs: dict[int, Need] = field(default_factory=dict)
    unsaved_bytes: int = 0
    unsaved_entries: int = 0

    def wrote(self, device: int, size: int) -> None:
        need = self.needs.get(device)
        if need is None or self.path is None:
            return
        need.written_bytes += size
        need.written_entries += 1
        self.unsaved_bytes += size
        self.unsaved_entries += 1
        if self.unsaved_bytes >= UPDATE_BYTES or self.unsaved_entries >= UPDATE_ENTRIES:
            self.unsaved_bytes = self.unsaved_entries = 0
            with _locked():
                _write(self.path, self.needs)

    def release(self) -> None:
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.path = None


def _write(path: Path, needs: dict[int, Need]) -> None:
    """Write the file whole, under a temporary name then renamed (readers hold the lock)."""
    temp = path.with_name(path.name + ".new")
    temp.write_text(json.dumps({"needs": [vars(n) for n in needs.values()]}))
    os.rename(temp, path)


def reserve(roots: dict[int, int], needs: list[Need], *, reserve_bytes: int,
            reserve_inodes: int) -> Reservation:
    """Reserve `needs` (one per filesystem, `roots` maps each device to an open fd on it).

    Raises InsufficientSpace, recording nothing, if any of them does not fit
    beside what the other live reservations have still to write and the
    configured reserve.
    """
    with _locked() as where:
        for need in needs:
            stat = os.fstatvfs(roots[need.device])
            others_bytes, others_entries = _held(where, need.device)
            free = stat.f_bavail * stat.f_frsize - reserve_bytes - others_bytes
            if need.bytes > free:
                raise InsufficientSpace(
                    gettext_noop("The staging filesystem is out of free space."))
            # Some filesystems (btrfs) have no inode limit and report f_files = 0.
            if stat.f_files and need.entries > stat.f_favail - reserve_inodes - others_entries:
                raise InsufficientSpace(
                    gettext_noop("The staging filesystem is out of free inodes."))
        path = where / f"{owners.token()}-{secrets.token_hex(8)}{SUFFIX}"
        by_device = {need.device: need for need in needs}
        _write(path, by_device)
    return Reservation(path=path, needs=by_device)


def sweep_dead() -> int:
    """Remove the reservations of dead owners (and their half-written files); how many."""
    where = directory()
    if not where.is_dir():
        return 0
    removed = 0
    with _locked():
        for path in where.iterdir():
            if path.name == LOCK_NAME:
                continue
            owner = owners.from_token(path.name)
            if owner is not None and owners.is_dead(owner):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                removed += 1
    return removed
