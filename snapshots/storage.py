"""Where archives live: `$BERTH_DATA_DIR/snapshots/<workload id>/<name>.tar.zst`.

A row stores only the file's name; the directory is derived from the
workload's id, and a name that is not one Berth makes is refused, so no row
can point Berth at a file elsewhere. Files are written under a temporary
name, fsynced, renamed into place and the directory fsynced; they are removed
only after the transaction that deleted their row has committed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import time
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from lib import owners
from lib.fsutil import fsync_dir, remove_tree

logger = logging.getLogger(__name__)

ARCHIVE_NAME = re.compile(r"[0-9]{8}T[0-9]{6}Z-[a-z_]{1,12}-[0-9a-f]{12}\.tar\.zst")
TEMP_PREFIXES = (".tmp-", ".upload-", ".scratch-")
# Leftovers of a killed capture or upload older than this are removed by the next sweep.
LEFTOVER_SECONDS = 24 * 3600
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def root() -> Path:
    return Path(settings.DATA_DIR) / "snapshots"


def workload_dir(workload_id: int) -> Path:
    return root() / str(int(workload_id))


def uploads_dir() -> Path:
    """Uploads land here (same filesystem as the archives) before their workload is known."""
    return root() / ".uploads"


def new_archive_name(kind: str) -> str:
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{kind}-{secrets.token_hex(6)}.tar.zst"


def archive_path(workload_id: int, name: str) -> Path:
    if not ARCHIVE_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a snapshot archive name")
    return workload_dir(workload_id) / name


def _ensure(directory: Path) -> Path:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory


def open_temp(directory: Path, prefix: str = ".tmp-") -> tuple[int, Path]:
    """A new, empty file (0600) in `directory`, opened for writing.

    Its name carries this process's owner token (lib/owners.py): once the
    process is gone, the sweep removes what it left (sweep_abandoned).
    """
    path = _ensure(directory) / f"{prefix}{owners.token()}-{secrets.token_hex(8)}.tar.zst"
    return os.open(path, _NEW_FILE, 0o600), path


def scratch_path() -> Path:
    """A path (not yet created) for a validation extraction, beside the archives."""
    return _ensure(root()) / f".scratch-{owners.token()}-{secrets.token_hex(8)}"


def place(temp: Path, workload_id: int, name: str) -> Path:
    """Move a written, fsynced temporary file into place as archive `name`, durably."""
    final = archive_path(workload_id, name)
    _ensure(final.parent)
    os.rename(temp, final)
    fsync_dir(str(final.parent))
    return final


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_archive(workload_id: int, name: str):
    """The archive file for reading (FileNotFoundError when it is gone)."""
    fd = os.open(archive_path(workload_id, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    return os.fdopen(fd, "rb")


def remove_archive(workload_id: int, name: str) -> None:
    if not name:
        return
    try:
        archive_path(workload_id, name).unlink(missing_ok=True)
    except (OSError, ValueError) as exc:
        logger.warning("could not remove snapshot archive %s of workload %s: %s",
                       name, workload_id, exc)


def remove_workload_dir(workload_id: int) -> None:
    try:
        remove_tree(str(workload_dir(workload_id)))
    except OSError as exc:
        logger.warning("could not remove the snapshot directory of workload %s: %s",
                       workload_id, exc)


def discard(path: Path | str | None) -> None:
    """Remove a temporary file or scratch tree, if it is still there."""
    if path is None:
        return
    with contextlib.suppress(FileNotFoundError):
        if os.path.isdir(path) and not os.path.islink(path):
            remove_tree(str(path))
        else:
            os.unlink(path)


def disk_usage(workload_id: int) -> int:
    """Bytes the workload's snapshot directory takes on disk, temporary files included."""
    directory = workload_dir(workload_id)
    if not directory.is_dir():
        return 0
    total = 0
    for entry in os.scandir(directory):
        with contextlib.suppress(OSError):
            total += entry.stat(follow_symlinks=False).st_blocks * 512
    return total


def sweep_abandoned() -> int:
    """Remove every temporary file and scratch tree whose process is gone (a killed
    capture, upload or import), wherever it lies under the snapshots root; never one
    a live process owns (one whose owner is out of sight only after a day). Returns
    how many."""
    removed = 0
    directories = [root(), uploads_dir()]
    if root().is_dir():
        directories += [Path(e.path) for e in os.scandir(root())
                        if e.name.isdigit() and e.is_dir(follow_symlinks=False)]
    for directory in directories:
        if not directory.is_dir():
            continue
        for entry in os.scandir(directory):
            owner = owners.from_token(entry.name) if entry.name.startswith(TEMP_PREFIXES) \
                else None
            if owner is None:
                continue
            verdict = owners.judge(owner)
            try:
                # An owner out of sight (another PID namespace: Berth misplaced) may live;
                # its file goes only when it is as old as any leftover.
                if verdict == owners.ALIVE or (
                    verdict == owners.UNKNOWN
                    and entry.stat(follow_symlinks=False).st_mtime >= time.time() - LEFTOVER_SECONDS
                ):
                    continue
                discard(entry.path)
                removed += 1
            except OSError as exc:
                logger.warning("could not remove the snapshot leftover %s: %s", entry.path, exc)
    return removed


def sweep(workload_id: int, known: set[str]) -> int:
    """Remove old leftovers: temporary files of killed captures, uploads and scratch
    trees whose name names no owner (an older Berth's), and archives no row names
    (their row's deletion committed, the removal did not happen). Only files
    untouched for a day, so nothing in progress."""
    cutoff = time.time() - LEFTOVER_SECONDS
    removed = 0
    for directory in (workload_dir(workload_id), uploads_dir(), root()):
        if not directory.is_dir():
            continue
        for entry in os.scandir(directory):
            leftover = (entry.name.startswith(TEMP_PREFIXES)
                        and owners.from_token(entry.name) is None) or (
                directory == workload_dir(workload_id)
                and ARCHIVE_NAME.fullmatch(entry.name) and entry.name not in known
            )
            if not leftover:
                continue
            # One entry that cannot be removed must not stop the rest (nor the caller).
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    discard(entry.path)
                    removed += 1
            except OSError as exc:
                logger.warning("could not remove the snapshot leftover %s: %s", entry.path, exc)
    return removed
