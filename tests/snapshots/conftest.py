"""Fixtures for the snapshot tests: workloads with volumes and data in them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine import captures
from snapshots import storage
from workloads.models import VolumeMount, Workload


def add_volume(workload: Workload, source: str, target: str, **fields) -> Path:
    """A stage volume with its host directory created; returns the host path."""
    volume = VolumeMount.objects.create(workload=workload, source=source, target=target, **fields)
    path = Path(volume.host_path())
    path.mkdir(parents=True, exist_ok=True)
    return path


def fill(path: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


@pytest.fixture
def volume_workload(make_workload):
    """A workload with two stage volumes holding a little data; (workload, [paths])."""
    workload = make_workload()
    first = add_volume(workload, "data", "/data")
    second = add_volume(workload, "config", "/config")
    fill(first, {"index.html": b"<h1>hello</h1>", "sub/notes.txt": b"notes" * 100})
    fill(second, {"app.conf": b"key=value\n"})
    os.chown(first / "sub" / "notes.txt", 1000, 1000)
    os.chmod(first / "sub" / "notes.txt", 0o640)
    return workload, [first, second]


def archive_files(workload: Workload) -> list[str]:
    """Everything in the workload's snapshot directory, temporary files included."""
    directory = storage.workload_dir(workload.pk)
    return sorted(os.listdir(directory)) if directory.is_dir() else []


def leftovers() -> list[str]:
    """Temporary uploads and scratch trees left anywhere under the snapshots root."""
    found = []
    for directory, dirnames, filenames in os.walk(storage.root()):
        found += [os.path.join(directory, n) for n in dirnames + filenames
                  if n.startswith(storage.TEMP_PREFIXES)]
    return found


@pytest.fixture
def two_volumes(make_workload) -> tuple[Workload, list[Path]]:
    """A never-deployed workload with two volumes holding the "new" data."""
    from tests.snapshots.restoring import NEW, NEW_CONFIG

    workload = make_workload()
    data = add_volume(workload, "data", "/data")
    config = add_volume(workload, "config", "/config")
    fill(data, NEW)
    fill(config, NEW_CONFIG)
    os.chown(data / "index.html", 1000, 1000)
    os.chmod(data / "index.html", 0o640)
    return workload, [data, config]


@pytest.fixture
def snapshotted(two_volumes):
    """(workload, paths, snapshot of the "new" data, trees of it); the volumes then hold "old"."""
    from tests.snapshots.restoring import OLD, OLD_CONFIG, replace_content, trees

    workload, paths = two_volumes
    wanted = trees(paths)
    snapshot = captures.capture_snapshot(workload=workload)
    assert snapshot.is_ready, snapshot.failure_text
    replace_content(paths[0], OLD)
    replace_content(paths[1], OLD_CONFIG)
    return workload, paths, snapshot, wanted


@pytest.fixture(autouse=True)
def no_journal_outlives_its_test():
    """A test that fails half-way must not leave a restore journal for the next one to find."""
    yield
    from snapshots import journal

    folder = journal.directory()
    if folder.is_dir():
        for entry in folder.iterdir():
            entry.unlink()
