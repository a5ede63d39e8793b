"""Helpers for the restore tests: trees, what lies beside the volumes, containers and HTTP."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import urllib.request
from pathlib import Path

from lib import runtime
from snapshots import journal, storage
from snapshots.models import Snapshot
from tests.conftest import child_env
from tests.fixtures import forking
from tests.snapshots.trees import describe, extract_bytes
from workloads.models import Workload

OLD = {"index.html": b"<h1>old</h1>", "sub/notes.txt": b"old notes" * 200}
OLD_CONFIG = {"app.conf": b"mode=old\n"}
NEW = {"index.html": b"<h1>new</h1>", "other.txt": b"only in the snapshot"}
NEW_CONFIG = {"app.conf": b"mode=new\n", "extra/x.conf": b"x"}


def trees(paths: list[Path]) -> list[dict]:
    """Each volume described byte for byte (types, modes, owners, mtimes, SHA-256)."""
    return [describe(path) for path in paths]


def tree_hash(path: Path) -> str:
    return hashlib.sha256(json.dumps(sorted(describe(path).items())).encode()).hexdigest()


def replace_content(path: Path, files: dict[str, bytes]) -> None:
    """Empty `path` (keeping the directory itself) and write `files` into it."""
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            subprocess.run(["rm", "-rf", str(entry)], check=True)
        else:
            entry.unlink()
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def strays(paths: list[Path]) -> list[str]:
    """Restore or probe directories left beside the volumes."""
    found = set()
    for parent in {path.parent for path in paths}:
        found |= {entry.name for entry in parent.iterdir()
                  if entry.name.startswith((".berth-restore-", ".berth-probe-"))}
    return sorted(found)


def journals() -> list[str]:
    folder = journal.directory()
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def snapshot_trees(snapshot: Snapshot, scratch: Path) -> list[dict]:
    """What a snapshot's archive holds, volume by volume, extracted into `scratch`."""
    data = storage.archive_path(snapshot.workload_id, snapshot.archive).read_bytes()
    extracted = extract_bytes(data, scratch, snapshot.volume_count)
    return [describe(scratch / "volumes" / str(i)) for i in range(len(extracted.files))]


def engine_containers(workload: Workload) -> list[runtime.ContainerInfo]:
    return runtime.list_containers(workload.pk)


def inspect(container_id: str, template: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", template, container_id],
                          capture_output=True, text=True, check=True).stdout.strip()


def served(container_id: str, name: str) -> bytes:
    """A file the httpd test image serves from /data, fetched over HTTP from the container."""
    address = inspect(container_id, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
    url = f"http://{address}/{name}"
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - a test container
        return response.read()


def in_container(container_id: str, command: str) -> bytes:
    return subprocess.run(["docker", "exec", container_id, "sh", "-c", command],
                          capture_output=True, check=True).stdout


def snapshot_from_bytes(workload: Workload, data: bytes, manifest: dict) -> Snapshot:
    """A ready snapshot row holding `data` as its archive, bypassing import's validation.

    For hostile archives: the row's size and SHA-256 match the file, so the
    restore's pre-flight passes and the extractor is the one to refuse it.
    """
    name = storage.new_archive_name("manual")
    fd, temp = storage.open_temp(storage.workload_dir(workload.pk))
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    storage.place(temp, workload.pk, name)
    snapshot = Snapshot.objects.create(workload=workload, state=Snapshot.State.CAPTURING)
    snapshot.succeed(archive=name, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                     manifest=manifest)
    snapshot.refresh_from_db()
    return snapshot


def read_archive(snapshot: Snapshot) -> io.BytesIO:
    return io.BytesIO(storage.archive_path(snapshot.workload_id, snapshot.archive).read_bytes())


# --- child processes: a restore and the recovery sweep, each able to crash -----------------

# A restore in its own process (the crash and pause points act only there).
CHILD_RESTORE = """
import os, sys
import django
django.setup()
from engine import restores
from lib import exchange
from snapshots.models import Snapshot
from workloads.models import Workload
if os.environ.get("TEST_NO_EXCHANGE") == "1":
    exchange.supported = lambda directory: False
workload = Workload.objects.with_parents().get(pk=int(sys.argv[1]))
snapshot = Snapshot.objects.get(pk=int(sys.argv[2]))
job = restores.restore(workload=workload, snapshot=snapshot)
print(job.pk, job.outcome, flush=True)
"""


def child_process_env(**extra: str) -> dict[str, str]:
    return child_env() | {"DJANGO_SETTINGS_MODULE": "tests.settings"} | extra


def spawn_restore(workload: Workload, snapshot: Snapshot, **env: str) -> forking.Child:
    """A restore in a child forked from this test (it may be told to crash or pause)."""
    return forking.run_code(CHILD_RESTORE, str(workload.pk), str(snapshot.pk), **env)


def run_sweep(**env: str) -> subprocess.CompletedProcess:
    """`manage.py recover` in a forked child (it may be told to crash), run to its end."""
    child = forking.run_command("recover", **env)
    out, err = child.communicate(timeout=300)
    return subprocess.CompletedProcess(["manage.py", "recover"], child.returncode, out, err)


def failing_journal_writes(monkeypatch, *steps: str, after_write: bool = False) -> None:
    """Journal writes fail with ENOSPC once any of `steps` is in the record.

    `after_write`: the record reaches the disk first and the failure comes
    after it (as when the directory's fsync fails after the rename).
    """
    real = journal.write

    def write(record) -> None:
        if any(s["step"] in steps for s in record.steps):
            if after_write:
                real(record)
            raise OSError(28, "No space left on device")
        real(record)

    monkeypatch.setattr(journal, "write", write)


def restore_left_committed(monkeypatch, workload: Workload, snapshot: Snapshot):
    """A restore whose journal could take nothing after its COMMIT record: the volumes hold
    the snapshot, the job still runs, and the committed journal is left for the recovery."""
    from engine import restores

    with monkeypatch.context() as patch:
        failing_journal_writes(patch, journal.REDEPLOY)
        job = restores.restore(workload=workload, snapshot=snapshot)
    assert journal.load(journal.path_for(workload.pk, job.pk)).committed
    return job
