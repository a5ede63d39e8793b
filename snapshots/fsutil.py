"""File-system helpers the capture and the extractor share: fd-relative walks, fsync, removal."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil

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


def remove_tree(path: str) -> None:
    """Remove a directory tree Berth wrote, even where its modes deny writing.

    shutil.rmtree works on file descriptors here (it never follows a symlink
    planted inside); a tree extracted with read-only directory modes needs
    them opened up first when Berth does not run as root.
    """
    if not os.path.lexists(path):
        return
    try:
        shutil.rmtree(path)
        return
    except PermissionError:
        pass
    for _root, _dirs, _files, dir_fd in os.fwalk(path, follow_symlinks=False):
        with contextlib.suppress(OSError):
            os.chmod(dir_fd, 0o700)
    shutil.rmtree(path)
