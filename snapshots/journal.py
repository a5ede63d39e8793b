"""The restore's write-ahead journal: a JSON file per restore in $BERTH_DATA_DIR/restore-journal/.

A restore records every step in its journal *before* it takes it, and the
journal is replaced atomically each time (temporary file, fsync, rename,
fsync of the directory), so after a crash at any instant the file on disk is
either the previous record or the next one, never half of either. The
recovery sweep (engine/locked/recovery.py) reads it; docs/restore-protocol.md
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

from lib import paths
from lib.fsutil import fsync_dir

FORMAT = "berth-restore-journal"
VERSION = 1
EXCHANGE, RENAME = "exchange", "rename"
_NAME = re.compile(r"workload-([1-9][0-9]{0,18})-job-([1-9][0-9]{0,18})\.json")
_LEGACY_NAME = re.compile(r"job-([1-9][0-9]{0,18})\.json")  # before the workload was in it
_TEMP = re.compile(r"\.workload-([1-9][0-9]{0,18})-job-([1-9][0-9]{0,18})\.json\.tmp-[0-9a-f]{8}")
_BESIDE = re.compile(r"\.berth-restore-([0-9]+)-([0-9]+)-[0-9a-f]{8}\.(new|old)")
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class JournalError(Exception):
    """A journal that cannot be read or does not describe a restore Berth could have made."""


class JournalTaken(Exception):
    """The journal on disk is no longer the one this process wrote or read last (another
    process wrote or removed it): this process must change nothing more."""


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
    reference: str                   # the digest to redeploy after the COMMIT
    targets: list[Target]
    steps: list[dict] = field(default_factory=list)
    generation: str = ""             # a new random token with every write (the fence)
    # A rollback with data (docs/restore-protocol.md): the digest the workload ran, to bring
    # back with the old data if the journal is rolled back, and the deploy rolled back to.
    # None in a plain restore's journal (and in one an older Berth wrote): then a rollback
    # redeploys `reference`, the digest the workload ran.
    previous: str | None = None
    rollback_to: int | None = None

    @property
    def reference_before_commit(self) -> str:
        """The digest that runs on the old data: what a rollback of this journal redeploys."""
        return self.reference if self.previous is None else self.previous

    def has(self, step: str, **details: object) -> bool:
        return any(s["step"] == step and all(s.get(k) == v for k, v in details.items())
                   for s in self.steps)

    def last(self, step: str) -> dict | None:
        return next((s for s in reversed(self.steps) if s["step"] == step), None)

    @property
    def committed(self) -> bool:
        """A COMMIT record not followed by a ROLLBACK one.

        A restore whose COMMIT write failed rolls back and records ROLLBACK
        first; if that failed write had reached the disk after all (the
        rename did, the directory's fsync did not), the later ROLLBACK
        record still says which way the volumes went.
        """
        names = [s["step"] for s in self.steps]
        if COMMIT not in names:
            return False
        return ROLLBACK not in names[names.index(COMMIT):]

    @property
    def path(self) -> Path:
        return path_for(self.workload, self.job)

    def record(self, step: str, **details: object) -> None:
        """Append `step` and make the journal durable before the caller takes it.

        If the write fails the step is taken out again: a record that did not
        reach the disk must not ride along with the next one.
        """
        self.steps.append({"step": step, "at": timezone.now().isoformat(), **details})
        try:
            write(self)
        except BaseException:
            self.steps.pop()
            raise

    def to_json(self) -> bytes:
        return json.dumps({"format": FORMAT, "version": VERSION, **asdict(self)},
                          indent=1, sort_keys=True).encode()


def directory() -> Path:
    return Path(settings.DATA_DIR) / "restore-journal"


def path_for(workload_id: int, job_id: int) -> Path:
    """A journal's name carries its workload, so one workload's journals are found (and
    one unreadable journal hurts) without reading any other workload's."""
    return directory() / f"workload-{int(workload_id)}-job-{int(job_id)}.json"


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


def _ensure_directory() -> Path:
    folder = directory()
    if not folder.is_dir():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fsync_dir(str(folder.parent))  # the journal's directory itself must survive a crash
    return folder


def write(journal: Journal) -> None:
    """Replace the journal on disk atomically and durably.

    Only the journal this process wrote or read last is replaced: its first
    record must create the file, every later one must find the generation
    token it left. Anything else raises JournalTaken — another process has
    finished, removed or rewritten it, and a record from here would bring a
    finished restore's journal back, or overwrite what the other one decided.
    (The workload's lock already keeps a second process away; this is the
    second line.)
    """
    folder = _ensure_directory()
    final = journal.path
    _check_fence(journal)
    previous, journal.generation = journal.generation, secrets.token_hex(8)
    temp = folder / f".{final.name}.tmp-{secrets.token_hex(4)}"
    try:
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
    except BaseException:
        journal.generation = previous  # nothing was renamed: the disk holds the previous one
        raise
    journal._on_disk = journal.generation  # renamed: ours now, even if the fsync fails
    fsync_dir(str(folder))


def _check_fence(journal: Journal) -> None:
    """The file on disk is the one this process wrote or read last (or none, for the first)."""
    expected = getattr(journal, "_on_disk", None)
    try:
        found = json.loads(journal.path.read_bytes()).get("generation")
    except FileNotFoundError:
        found = None
    except (ValueError, AttributeError):
        found = "?"  # not a journal any more: not ours to overwrite
    # (Any other OSError is an I/O error, raised as such: not a sign of another writer.)
    if found != expected:
        raise JournalTaken(f"the journal {journal.path} changed under restore #{journal.job}")


def remove(journal: Journal) -> None:
    """Delete a finished restore's journal, durably: the last thing a restore does.

    Only the journal this process wrote or read last (JournalTaken otherwise).
    """
    if not journal.path.exists():
        return
    _check_fence(journal)
    journal.path.unlink(missing_ok=True)
    fsync_dir(str(directory()))


@dataclass
class Scan:
    """What the journal directory holds: journals, temporary files, and anything else."""

    journals: list[tuple[int, int, Path]] = field(default_factory=list)  # workload, job, path
    temps: list[tuple[int, Path]] = field(default_factory=list)           # workload, path
    legacy: list[Path] = field(default_factory=list)  # job-<id>.json, from an older Berth
    strangers: list[Path] = field(default_factory=list)

    def workloads(self) -> set[int]:
        return {w for w, _j, _p in self.journals} | {w for w, _p in self.temps}


def scan(workload_id: int | None = None) -> Scan:
    """List the journal directory (one workload's entries, or all), oldest job first.

    Nothing is read or removed here: a temporary file may belong to a restore
    that is writing its journal right now. Only a holder of its workload's
    lock knows it is dead (remove_temps).
    """
    found = Scan()
    folder = directory()
    if not folder.is_dir():
        return found
    for entry in os.scandir(folder):
        if match := _NAME.fullmatch(entry.name):
            workload, job = int(match.group(1)), int(match.group(2))
            if workload_id is None or workload == workload_id:
                found.journals.append((workload, job, Path(entry.path)))
        elif match := _TEMP.fullmatch(entry.name):
            if workload_id is None or int(match.group(1)) == workload_id:
                found.temps.append((int(match.group(1)), Path(entry.path)))
        elif workload_id is not None:
            continue
        elif _LEGACY_NAME.fullmatch(entry.name):
            found.legacy.append(Path(entry.path))
        else:
            found.strangers.append(Path(entry.path))
    found.journals.sort(key=lambda item: item[1])
    return found


def legacy_workload(path: Path) -> int:
    """The workload of a journal an older Berth named `job-<id>.json` (JournalError if none)."""
    try:
        workload = json.loads(path.read_bytes())["workload"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise JournalError(f"the restore journal {path} cannot be read ({exc})") from None
    if not isinstance(workload, int) or isinstance(workload, bool) or workload < 1:
        raise JournalError(f"the restore journal {path} names no workload")
    return workload


def adopt_legacy(path: Path, workload_id: int) -> Path:
    """Give an older Berth's journal today's name. Only under the workload's lock."""
    job = _LEGACY_NAME.fullmatch(path.name).group(1)
    target = path_for(workload_id, int(job))
    if os.path.lexists(target):
        raise JournalError(f"{path} and {target} both exist; keep the right one")
    os.rename(path, target)
    fsync_dir(str(directory()))
    return target


def remove_temps(workload_id: int) -> int:
    """Remove the workload's temporary journal files. Only under the workload's lock.

    A restore holds the lock until its journal is gone, so a temporary file
    found by the lock's holder is a write whose rename never happened: the
    journal it would have replaced (if any) is the record.
    """
    temps = scan(workload_id).temps
    for _workload, path in temps:
        path.unlink(missing_ok=True)
    if temps:
        fsync_dir(str(directory()))
    return len(temps)


def exists(workload_id: int, job_id: int) -> bool:
    """Whether the job has a journal on disk (readable or not)."""
    return os.path.lexists(path_for(workload_id, job_id))


def for_workload(workload_id: int) -> list[Journal]:
    """The unfinished journals of one workload; JournalError if one of them cannot be read."""
    return [load(path) for _workload, _job, path in scan(workload_id).journals]


def load(path: Path) -> Journal:
    """Read and check one journal; JournalError (saying it cannot be read) if it is not sane."""
    try:
        raw = json.loads(path.read_bytes())
        on_disk = raw.get("generation")  # None in a journal written before the token existed
        if raw.pop("format") != FORMAT or raw.pop("version") != VERSION:
            raise ValueError("format or version")
        targets = [Target(**t) for t in raw.pop("targets")]
        journal = Journal(targets=targets, **raw)
        _check(journal, path)
        journal._on_disk = on_disk
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise JournalError(f"the restore journal {path} cannot be read ({exc})") from None
    return journal


def _check(journal: Journal, path: Path) -> None:
    match = _NAME.fullmatch(path.name)
    if not match or match.groups() != (str(journal.workload), str(journal.job)):
        raise ValueError("the file name does not match the workload and job")
    for number in (journal.job, journal.workload, journal.snapshot):
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            raise ValueError("ids must be positive integers")
    if not isinstance(journal.reference, str) or not isinstance(journal.steps, list) \
            or not isinstance(journal.generation, str):
        raise ValueError("reference, steps or generation")
    if journal.previous is not None and not isinstance(journal.previous, str):
        raise ValueError("previous")
    if journal.rollback_to is not None and (
        not isinstance(journal.rollback_to, int) or isinstance(journal.rollback_to, bool)
        or journal.rollback_to < 1
    ):
        raise ValueError("rollback_to")
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


def _may_be_a_volume(live: str) -> bool:
    """A journal names only volume directories: below Berth's volumes root, or below one of
    BERTH_ABSOLUTE_VOLUME_ROOTS — by name and with symlinks resolved in its parent (a
    planted journal cannot make the recovery rename /etc, not even through a symlink a
    container made inside its volume)."""
    parent = os.path.realpath(os.path.dirname(live))
    for root in (paths.volumes_root(), *settings.BERTH_ABSOLUTE_VOLUME_ROOTS):
        root = os.path.normpath(root)
        real_root = os.path.realpath(root)
        if live != root and paths.is_within(live, root) and paths.is_within(parent, real_root):
            return True
    return False


def _check_target(job: int, position: int, target: Target) -> None:
    if target.index != position or target.mode not in (EXCHANGE, RENAME):
        raise ValueError(f"target {position}: index or mode")
    live = target.live
    if not isinstance(live, str) or not live.startswith("/") or os.path.normpath(live) != live \
            or live == "/":
        raise ValueError(f"target {position}: the live path is not absolute and normal")
    if not _may_be_a_volume(live):
        raise ValueError(f"target {position}: {live} is not where Berth keeps volumes")
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
