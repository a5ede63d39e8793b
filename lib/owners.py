"""Which process owns a job, and whether that process still lives.

An owner is `<boot id>:<pid>:<start time>`: the host's boot id (a reboot
kills every process), the process id, and the process's start time in clock
ticks since boot (/proc/<pid>/stat), so a pid the kernel handed to another
process since is not taken for the owner. Every Berth process shares one host
(docs/architecture.md, "Jobs"), so any of them can tell at once whether a
job's owner lives. `token()` is the same identity in a form fit for a file
name, for the temporary files a process leaves behind if it is killed.
"""

from __future__ import annotations

import os
import re
from functools import cache

_TOKEN = re.compile(r"([0-9a-f]{32})\.([0-9]+)\.([0-9]+)")


@cache
def boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip().replace("-", "")


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if there is no such process."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces and
    # parentheses itself: the fields after it start after the last ")".
    fields = stat[stat.rindex(b")") + 2:].split()
    if fields[0] == b"Z":
        return None  # a zombie has died; only its exit status is left
    return int(fields[19])


def current() -> str:
    """This process, as an owner."""
    return f"{boot_id()}:{os.getpid()}:{start_time(os.getpid())}"


def token(owner: str | None = None) -> str:
    """`owner` (by default this process) in a form fit for a file name."""
    return (owner or current()).replace(":", ".")


def from_token(text: str) -> str | None:
    """The owner a file name's token names, or None if it holds no token."""
    match = _TOKEN.search(text)
    return ":".join(match.groups()) if match else None


def is_alive(owner: str) -> bool:
    """Whether the process `owner` names still runs (the same process, not its pid's heir)."""
    try:
        boot, pid, started = owner.split(":")
        pid_number, started_at = int(pid), int(started)
    except ValueError:
        return False
    if boot != boot_id():
        return False
    return start_time(pid_number) == started_at
