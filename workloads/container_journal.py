"""The container journal: what a deploy or a capture is about to do to a workload's containers.

A deploy's swap (engine/locked/deploy.py) and a capture that stops the
workload (engine/locked/capture.py) write their next step here before they
take it, atomically and durably, one JSON file per operation in
$BERTH_DATA_DIR/container-journal/. A process killed in between leaves the
file behind, and whoever holds the workload's lock next — the sweep, or the
next deploy, capture or restore — finishes or undoes the operation from it
(engine/locked/swap_recovery.py), so a killed worker never leaves the
workload down. docs/deploys.md ("After a crash") has the protocol.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from lib.fsutil import fsync_dir, replace_durably

FORMAT = "berth-container-journal"
VERSION = 1
DEPLOY, CAPTURE = "deploy", "capture"
_NAME = re.compile(r"workload-([1-9][0-9]{0,18})-(deploy|capture)-([1-9][0-9]{0,18})\.json")
_TEMP = re.compile(
    r"\.workload-([1-9][0-9]{0,18})-(?:deploy|capture)-[0-9]+\.json\.tmp-[0-9a-f]{8}"
)

# Steps, in the order an operation records them; each is written before it is taken.
PREPARE = "prepare"  # deploy: new containers are about to be created; capture: `stopped` stop
STOP = "stop"        # deploy: the old containers are about to be stopped
START = "start"      # deploy: the new containers are about to be started
COMMIT = "commit"    # deploy: every new container runs; from here on, finish forward
RECOVER = "recover"  # a recovery started on this journal


class JournalError(Exception):
    """A container journal that cannot be read, or does not describe an operation of Berth's."""


@dataclass
class Operation:
    kind: str                  # DEPLOY or CAPTURE
    row: int                   # the DeployRecord or the Snapshot
    workload: int
    stopped: list[str]         # containers that ran before; started again if it is undone
    old: list[str] = field(default_factory=list)  # deploy: the containers it replaces
    image: str = ""            # deploy: what the new containers run (digest or image id)
    pinned: str = ""           # deploy: the ledger's pinned reference
    image_id: str = ""         # deploy: the image a git deploy built
    steps: list[dict] = field(default_factory=list)

    def has(self, step: str) -> bool:
        return any(s["step"] == step for s in self.steps)

    @property
    def committed(self) -> bool:
        return self.has(COMMIT)

    @property
    def path(self) -> Path:
        return path_for(self.workload, self.kind, self.row)

    def record(self, step: str) -> None:
        """Append `step` and make the journal durable before the caller takes it."""
        self.steps.append({"step": step, "at": timezone.now().isoformat()})
        try:
            folder = _ensure_directory()
            replace_durably(folder / self.path.name, self.to_json())
        except BaseException:
            self.steps.pop()  # a record that did not reach the disk must not ride along later
            raise

    def to_json(self) -> bytes:
        return json.dumps({"format": FORMAT, "version": VERSION, **asdict(self)},
                          indent=1, sort_keys=True).encode()


def directory() -> Path:
    return Path(settings.DATA_DIR) / "container-journal"


def path_for(workload_id: int, kind: str, row_id: int) -> Path:
    return directory() / f"workload-{int(workload_id)}-{kind}-{int(row_id)}.json"


def _ensure_directory() -> Path:
    folder = directory()
    if not folder.is_dir():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fsync_dir(str(folder.parent))
    return folder


def remove(operation: Operation) -> None:
    """Delete a finished operation's journal, durably: the last thing it does."""
    try:
        operation.path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(str(directory()))


def exists(workload_id: int, kind: str, row_id: int) -> bool:
    return path_for(workload_id, kind, row_id).exists()


def workloads() -> set[int]:
    """The workloads that have a journal (or a temporary file of one) on disk."""
    folder = directory()
    if not folder.is_dir():
        return set()
    found = set()
    for entry in folder.iterdir():
        match = _NAME.fullmatch(entry.name) or _TEMP.fullmatch(entry.name)
        if match:
            found.add(int(match.group(1)))
    return found


def for_workload(workload_id: int) -> list[Operation]:
    """The workload's journals, oldest operation first; its temporary files are removed.

    Call under the workload's lock: a temporary file is then a killed writer's.
    JournalError for one that cannot be read.
    """
    folder = directory()
    if not folder.is_dir():
        return []
    operations = []
    for entry in sorted(folder.iterdir()):
        temp = _TEMP.fullmatch(entry.name)
        if temp and int(temp.group(1)) == workload_id:
            entry.unlink(missing_ok=True)
            continue
        match = _NAME.fullmatch(entry.name)
        if match and int(match.group(1)) == workload_id:
            operations.append(load(entry))
    return sorted(operations, key=lambda op: (op.kind != DEPLOY, op.row))


def load(path: Path) -> Operation:
    try:
        data = json.loads(path.read_bytes())
        if not isinstance(data, dict) or data.pop("format") != FORMAT \
                or data.pop("version") != VERSION:
            raise ValueError("not a container journal of this version")
        operation = Operation(**data)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise JournalError(f"the container journal {path} cannot be read ({exc})") from None
    match = _NAME.fullmatch(path.name)
    if (match is None or operation.kind not in (DEPLOY, CAPTURE)
            or (int(match.group(1)), match.group(2), int(match.group(3)))
            != (operation.workload, operation.kind, operation.row)):
        raise JournalError(f"the container journal {path} does not match its name")
    if not _well_formed(operation):
        raise JournalError(f"the container journal {path} is malformed")
    return operation


def _well_formed(operation: Operation) -> bool:
    lists = (operation.stopped, operation.old, operation.steps)
    return (all(isinstance(value, list) for value in lists)
            and all(isinstance(c, str) for c in [*operation.stopped, *operation.old])
            and all(isinstance(s, dict) and isinstance(s.get("step"), str)
                    for s in operation.steps)
            and all(isinstance(v, str) for v in (operation.image, operation.pinned,
                                                  operation.image_id)))
