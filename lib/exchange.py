"""Swapping two directories in one step, and what the restore needs to know about mounts.

`exchange()` is renameat2(RENAME_EXCHANGE) through ctypes: both names exist
before and after, each now naming the other's inode, so a live path is never
missing. Whether a filesystem supports it is probed once per filesystem (by
exchanging two empty directories made for the purpose) and cached; where it
does not (older kernels, some network and FUSE filesystems) the restore falls
back to two plain renames, which the journal and the recovery sweep also handle.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import platform
import re
import secrets
import threading

from lib.paths import is_within

logger = logging.getLogger(__name__)

RENAME_EXCHANGE = 1 << 1
_AT_FDCWD = -100
# renameat2's system call number, for a libc without the wrapper (glibc < 2.28).
_SYSCALL = {"x86_64": 316, "aarch64": 276, "armv7l": 382, "ppc64le": 357, "s390x": 347}
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_support: dict[int, bool] = {}
_support_lock = threading.Lock()


class ExchangeUnsupported(OSError):
    """The filesystem (or the kernel) cannot exchange two names atomically."""


def _renameat2(old_dir: int, old: bytes, new_dir: int, new: bytes, flags: int) -> int:
    wrapper = getattr(_libc, "renameat2", None)
    if wrapper is not None:
        wrapper.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                            ctypes.c_uint]
        return wrapper(old_dir, old, new_dir, new, flags)
    number = _SYSCALL.get(platform.machine())
    if number is None:
        ctypes.set_errno(errno.ENOSYS)
        return -1
    _libc.syscall.restype = ctypes.c_long
    return _libc.syscall(ctypes.c_long(number), ctypes.c_int(old_dir), ctypes.c_char_p(old),
                         ctypes.c_int(new_dir), ctypes.c_char_p(new), ctypes.c_uint(flags))


def exchange(first: str, second: str) -> None:
    """Atomically swap what the paths `first` and `second` name (both must exist).

    Raises ExchangeUnsupported where the filesystem cannot, and OSError for
    anything else (a missing name, two filesystems…).
    """
    if _renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second),
                  RENAME_EXCHANGE) == 0:
        return
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        raise ExchangeUnsupported(code, os.strerror(code), first)
    raise OSError(code, os.strerror(code), first)


def supported(directory: str) -> bool:
    """Whether the filesystem holding `directory` can exchange names; probed once per device.

    The probe makes two empty directories in `directory`, exchanges them and
    removes them again; a directory Berth cannot write to counts as not
    supported (the restore will fail there anyway, with its own message).
    """
    device = os.stat(directory).st_dev
    with _support_lock:
        if device in _support:
            return _support[device]
    result = _probe(directory)
    with _support_lock:
        _support[device] = result
    logger.info("renameat2(RENAME_EXCHANGE) on %s (device %s): %s", directory, device,
                "supported" if result else "not supported; two renames instead")
    return result


_PROBE = re.compile(r"\.berth-probe-([0-9]+)-[0-9a-f]{12}-[ab]")


def _probe(directory: str) -> bool:
    _remove_dead_probes(directory)
    token = secrets.token_hex(6)
    first = os.path.join(directory, f".berth-probe-{os.getpid()}-{token}-a")
    second = os.path.join(directory, f".berth-probe-{os.getpid()}-{token}-b")
    try:
        os.mkdir(first, 0o700)
        os.mkdir(second, 0o700)
        before = os.lstat(first).st_ino
        exchange(first, second)
        return os.lstat(second).st_ino == before
    except OSError:
        return False
    finally:
        for path in (first, second):
            with contextlib.suppress(OSError):
                os.rmdir(path)


def _remove_dead_probes(directory: str) -> None:
    """Remove the empty probe directories a process killed mid-probe left behind.

    The probe's name carries its process id; one whose process is gone is
    removed (rmdir only: a probe directory is always empty).
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = _PROBE.fullmatch(name)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(directory, name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def forget_probes() -> None:
    """Forget what the probes found (tests switch the fallback on and off)."""
    with _support_lock:
        _support.clear()


# --- mounts --------------------------------------------------------------------------

def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points() -> list[str]:
    """Every mount point this process sees (from /proc/self/mountinfo)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    return [_unescape(line.split(" ")[4]) for line in lines if len(line.split(" ")) > 4]


def mounts_at_or_below(path: str) -> list[str]:
    """Mount points at `path` or anywhere below it: a restore must not swap or remove those."""
    found = [m for m in mount_points() if is_within(m, path)]
    if os.path.isdir(path) and os.path.ismount(path) and path not in found:
        found.insert(0, path)
    return found
