"""The restore's write-ahead journal: a JSON file per restore in $BERTH_DATA_DIR/restore-journal/.

A restore records every step in its journal *before* it takes it, and the
journal is replaced atomically each time (temporary file, fsync, rename,
fsync of the directory), so after a crash at any instant the file on disk is
either the previous record or the next one, never half of either. The
recovery sweep (snapshots/recovery.py) reads it; docs/restore-protocol.md
describes the protocol and this format.

The journal names every path the restore may touch, and the device and inode
of the live and staging directories, so that recovery decides by what it
finds on disk rather than by what it hopes happened. Paths are checked when a
journal is read: each target's staging and aside directories must sit beside
its live directory under the names only a restore makes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from snapshots.fsutil import fsync_dir

FORMAT = "berth-restore-journal"
VERSION = 1
EXCHANGE, RENAME = "exchange", "rename"
_NAME = re.compile(r"job-([1-9][0-9]{0,18})\.json")
_BESIDE = re.compile(r"\.berth-restore-([0-9]+)-([0-9]+)-[0-9a-f]{8}\.(new|old)")
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class JournalError(Exception):
    """A journal that cannot be read or does not describe a restore Berth could have made."""


# Steps, in the order a restore records them. A step is written before it is
# taken; the ones ending in "-done" record that it finished.
PREPARE = "prepare"          # staging paths chosen; extraction is about to start
EXTRACTED = "extracted"      # staging complete and flushed; inodes recorded
QUIESCE = "quiesce"          # the containers are about to be stopped and removed
SWAP = "swap"                # target `index` is about to be exchanged
ASIDE = "aside"              # fallback: target `index`'s live dir is about to be renamed aside
PLACE = "place"              # fallback: its staging dir is about to be renamed into place
COMMIT = "commit"            # every volume holds the snapshot: from here on, finish forward
REDEPLOY = "redeploy"        # the workload is about to be redeployed
REDEPLOYED = "redeploy-done"
ARCHIVE = "archive"          # the pre-restore copies are about to be archived
ARCHIVED = "archive-done"
TIDY = "tidy"                # after an exchange: the old data is about to move to its .old name
CLEANUP = "cleanup"          # the pre-restore copies are about to be removed
CLEANED = "cleanup-done"
ROLLBACK = "rollback"        # recovery: every volume is about to be put back
ROLLED_BACK = "rollback-done"
RECOVER = "recover"          # a recovery sweep started on this journal


@dataclass
class Target:
    """One volume: its live directory and the two names beside it that the restore uses."""

    index: int
    live: str
    staging: str                     # the snapshot's data; after an exchange, the old data
    aside: str                       # the old data, in the two-rename fallback
    mode: str                        # EXCHANGE or RENAME
    live_id: list[int]               # [device, inode] of the live directory before the swap
    staging_id: list[int] | None = None  # [device, inode] of the extracted staging directory
    created_live: bool = False       # the live directory did not exist; the restore made it
    volume: dict = field(default_factory=dict)  # scope, source, target, for the manifest

    @property
    def parent(self) -> str:
        return os.path.dirname(self.live)


@dataclass
class Journal:
    job: int
    workload: int
    snapshot: int
    reference: str                   # the digest the workload ran, to redeploy it unchanged
    targets: list[Target]
    steps: list[dict] = field(default_factory=list)

    def has(self, step: str, **details: object) -> bool:
        return any(s["step"] == step and all(s.get(k) == v for k, v in details.items())
                   for s in self.steps)

    def last(self, step: str) -> dict | None:
        return next((s for s in reversed(self.steps) if s["step"] == step), None)

    @property
    def committed(self) -> bool:
        return self.has(COMMIT)

    def record(self, step: str, **details: object) -> None:
        """Append `step` and make the journal durable before the caller takes it."""
        self.steps.append({"step": step, "at": timezone.now().isoformat(), **details})
        write(self)

    def to_json(self) -> bytes:
        return json.dumps({"format": FORMAT, "version": VERSION, **asdict(self)},
                          indent=1, sort_keys=True).encode()


def directory() -> Path:
    return Path(settings.DATA_DIR) / "restore-journal"


def path_for(job_id: int) -> Path:
    return directory() / f"job-{int(job_id)}.json"


def beside(live: str, job_id: int, index: int) -> tuple[str, str]:
    """New staging and aside paths next to `live` (same directory, so same filesystem)."""
    token = secrets.token_hex(4)
    parent = os.path.dirname(live)
    stem = f".berth-restore-{int(job_id)}-{int(index)}-{token}"
    return os.path.join(parent, stem + ".new"), os.path.join(parent, stem + ".old")


def identity(path: str) -> list[int] | None:
    """[device, inode] of what `path` names (not following a symlink), None if nothing."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return [info.st_dev, info.st_ino]


def same(found: list[int] | None, recorded: list[int] | None) -> bool:
    """Whether `found` is the directory `recorded`: the inode number decides.

    The device number is recorded but not compared: a disk can come back with
    another one after a reboot, and the paths a restore compares all sit in
    one parent directory, so on one filesystem (pre-flight refuses mount points).
    """
    return found is not None and recorded is not None and found[1] == recorded[1]


def write(journal: Journal) -> None:
    """Replace the journal on disk atomically and durably."""
    folder = directory()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    final = path_for(journal.job)
    temp = folder / f".{final.name}.tmp-{secrets.token_hex(4)}"
    fd = os.open(temp, _NEW_FILE, 0o600)
    try:
        data = memoryview(journal.to_json())
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(temp)
        raise
    os.close(fd)
    os.replace(temp, final)
    fsync_dir(str(folder))


def remove(job_id: int) -> None:
    """Delete a finished restore's journal, durably: the last thing a restore does."""
    try:
        path_for(job_id).unlink()
    except FileNotFoundError:
        return
    fsync_dir(str(directory()))


def pending() -> list[Path]:
    """The journals on disk, oldest job first. Temporary files of a killed write are removed:
    their rename never happened, so the journal they would have replaced is the record."""
    folder = directory()
    if not folder.is_dir():
        return []
    found = []
    for entry in os.scandir(folder):
        if entry.name.startswith(".job-") and ".json.tmp-" in entry.name:
            os.unlink(entry.path)
        elif match := _NAME.fullmatch(entry.name):
            found.append((int(match.group(1)), Path(entry.path)))
        else:
            raise JournalError(f"{entry.path} is not a restore journal; move it away")
    return [path for _job, path in sorted(found)]


def for_workload(workload_id: int) -> list[Journal]:
    """The unfinished journals of one workload."""
    journals = [load(path) for path in pending()]
    return [j for j in journals if j.workload == workload_id]


def load(path: Path) -> Journal:
    """Read and check one journal; JournalError (saying it cannot be read) if it is not sane."""
    try:
        raw = json.loads(path.read_bytes())
        if raw.pop("format") != FORMAT or raw.pop("version") != VERSION:
            raise ValueError("format or version")
        targets = [Target(**t) for t in raw.pop("targets")]
        journal = Journal(targets=targets, **raw)
        _check(journal, path)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise JournalError(f"the restore journal {path} cannot be read ({exc})") from None
    return journal


def _check(journal: Journal, path: Path) -> None:
    if _NAME.fullmatch(path.name).group(1) != str(journal.job):
        raise ValueError("the file name does not match the job")
    for number in (journal.job, journal.workload, journal.snapshot):
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            raise ValueError("ids must be positive integers")
    if not isinstance(journal.reference, str) or not isinstance(journal.steps, list):
        raise ValueError("reference or steps")
    if not journal.targets or not all(isinstance(s, dict) and isinstance(s.get("step"), str)
                                      for s in journal.steps):
        raise ValueError("targets or steps")
    lives = set()
    for position, target in enumerate(journal.targets):
        _check_target(journal.job, position, target)
        lives.add(target.live)
    if len(lives) != len(journal.targets):
        raise ValueError("two targets share a live path")
    if any(not isinstance(t.volume, dict) or not isinstance(t.created_live, bool)
           for t in journal.targets):
        raise ValueError("a target's volume or created_live is malformed")


def _check_target(job: int, position: int, target: Target) -> None:
    if target.index != position or target.mode not in (EXCHANGE, RENAME):
        raise ValueError(f"target {position}: index or mode")
    live = target.live
    if not isinstance(live, str) or not live.startswith("/") or os.path.normpath(live) != live \
            or live == "/":
        raise ValueError(f"target {position}: the live path is not absolute and normal")
    for name, suffix in ((target.staging, "new"), (target.aside, "old")):
        match = _BESIDE.fullmatch(os.path.basename(name)) if isinstance(name, str) else None
        if not match or os.path.dirname(name) != target.parent or match.groups() != (
            str(job), str(position), suffix
        ):
            raise ValueError(f"target {position}: {name!r} is not a restore's own path")
    for identity_ in (target.live_id, target.staging_id):
        if identity_ is not None and (
            not isinstance(identity_, list) or len(identity_) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) for n in identity_)
        ):
            raise ValueError(f"target {position}: a device/inode pair is malformed")
