"""File-system helpers: fd-relative walks, fsync, durable replacement, tree removal."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import secrets
from pathlib import Path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class DirChain:
    """Directories below an open root, opened one component at a time with O_NOFOLLOW.

    Archives are in depth-first order, so consecutive members share most of
    their parents: the chain of open fds from the root is kept and only the
    part that differs is closed and reopened. No path is ever resolved as a
    whole, so a symlink swapped in anywhere below the root is never followed.
    """

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self._chain: list[tuple[str, int]] = []

    def fd(self, parts: tuple[str, ...]) -> int:
        common = 0
        for (name, _fd), part in zip(self._chain, parts, strict=False):
            if name != part:
                break
            common += 1
        for _name, fd in self._chain[common:]:
            os.close(fd)
        del self._chain[common:]
        parent = self._chain[-1][1] if self._chain else self.root_fd
        for part in parts[common:]:
            parent = os.open(part, DIR_FLAGS, dir_fd=parent)
            self._chain.append((part, parent))
        return parent

    def close(self) -> None:
        for _name, fd in self._chain:
            os.close(fd)
        self._chain.clear()


def fsync_dir(path: str) -> None:
    fd = os.open(path, DIR_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def syncfs(fd: int) -> None:
    """Flush the whole filesystem holding `fd`: one call instead of an fsync per file."""
    if _libc.syncfs(fd) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def _open_up(parent_fd: int, name: str) -> None:
    """Make directory `name` (never a symlink put in its place) 0700, so that it can be
    listed and emptied whatever mode an archive gave it."""
    try:
        handle = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC,
                         dir_fd=parent_fd)
    except OSError:
        return  # gone, or not a directory: the removal says what is wrong
    try:
        os.chmod(f"/proc/self/fd/{handle}", 0o700)
    except OSError:
        with contextlib.suppress(OSError):
            # Without /proc: fchmodat, the directory just checked through the handle.
            os.chmod(name, 0o700, dir_fd=parent_fd)
    finally:
        os.close(handle)


def _remove_dir(parent_fd: int, name: str) -> None:
    """Remove directory `name` of `parent_fd` and everything in it, top-down."""
    _open_up(parent_fd, name)
    fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    try:
        with os.scandir(fd) as entries:
            children = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
        for child, is_dir in children:
            if is_dir:
                _remove_dir(fd, child)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)


def remove_tree(path: str) -> None:
    """Remove a directory tree Berth wrote, even where its modes deny reading or writing.

    Top-down and relative to open directory fds: each directory is made 0700
    (through a handle opened with O_NOFOLLOW, relative to its parent) before
    it is listed and emptied, so a tree extracted with modes like 0000 or 0500
    goes when Berth does not run as root, and a symlink planted inside is
    removed, never followed. A missing path is not an error.
    """
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path) or os.path.islink(path):
        os.unlink(path)
        return
    parent, name = os.path.split(os.path.normpath(path))
    parent_fd = os.open(parent or ".", DIR_FLAGS)
    try:
        _remove_dir(parent_fd, name)
    finally:
        os.close(parent_fd)


def replace_durably(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically and durably: a temporary file beside it,
    fsynced, renamed over it, and the directory fsynced. A reader (after a crash
    too) finds the previous content or the new one, never half of either."""
    temp = path.parent / f".{path.name}.tmp-{secrets.token_hex(4)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(temp)
        raise
    os.close(fd)
    os.replace(temp, path)
    fsync_dir(str(path.parent))
