"""Which process owns a job, and whether that process still lives.

An owner is `<boot id>:<pid namespace>:<pid>:<start time>`: the host's boot id
(a reboot kills every process), the PID namespace the pid is read in, the
process id, and the process's start time in clock ticks since boot
(/proc/<pid>/stat), so a pid the kernel handed to another process since is not
taken for the owner. `token()` is the same identity in a form fit for a file
name, for the temporary files a process leaves behind if it is killed.

A process can only judge owners it can see: one from another PID namespace,
or whose /proc entry it may not read, is never called dead (`is_dead` says
no), so no job is failed and no file removed on a guess. Berth's processes are
meant to share one host and one PID namespace (docs/architecture.md, "Jobs").
"""

from __future__ import annotations

import os
import re
from functools import cache

_TOKEN = re.compile(r"([0-9a-f]{32})\.([0-9]+)\.([0-9]+)\.([0-9]+)")


@cache
def boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip().replace("-", "")


@cache
def pid_namespace() -> int:
    """The inode of this process's PID namespace (the pids it sees are of that namespace)."""
    return os.stat("/proc/self/ns/pid").st_ino


class Unknown(Exception):
    """/proc/<pid> cannot be read here (hidepid, another user): the process may well live."""


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if there is no such process."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        # /proc mounted with hidepid=2 hides other users' processes as if they were gone.
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        raise Unknown(f"process {pid} exists, but /proc does not show it") from None
    except PermissionError as exc:
        raise Unknown(str(exc)) from None
    # The command name (field 2) is in parentheses and may hold spaces and
    # parentheses itself: the fields after it start after the last ")".
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] == b"Z":
        return None  # a zombie has died; only its exit status is left
    return int(fields[19])


def of(pid: int) -> str | None:
    """The owner string of the live process `pid` (of this PID namespace), or None."""
    started = start_time(pid)
    return None if started is None else f"{boot_id()}:{pid_namespace()}:{pid}:{started}"


def current() -> str:
    """This process, as an owner."""
    return of(os.getpid())


def token(owner: str | None = None) -> str:
    """`owner` (by default this process) in a form fit for a file name."""
    return (owner or current()).replace(":", ".")


def from_token(text: str) -> str | None:
    """The owner a file name's token names, or None if it holds no token."""
    match = _TOKEN.search(text)
    return ":".join(match.groups()) if match else None


ALIVE, DEAD, UNKNOWN = "alive", "dead", "unknown"


def judge(owner: str) -> str:
    """ALIVE, DEAD, or UNKNOWN for an owner this process cannot see.

    A malformed owner, another boot, or the same pid with another start time:
    dead. Another PID namespace, or a process /proc will not show: unknown.
    """
    try:
        boot, namespace, pid, started = owner.split(":")
        namespace_inode, pid_number, started_at = int(namespace), int(pid), int(started)
    except ValueError:
        return DEAD
    if boot != boot_id():
        return DEAD
    if namespace_inode != pid_namespace():
        return UNKNOWN
    try:
        return ALIVE if start_time(pid_number) == started_at else DEAD
    except Unknown:
        return UNKNOWN


def is_dead(owner: str) -> bool:
    """Whether the process `owner` names is known to be gone (not merely out of sight)."""
    return judge(owner) == DEAD


def is_alive(owner: str) -> bool:
    return not is_dead(owner)
