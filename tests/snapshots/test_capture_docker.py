"""Capturing a real running workload (busybox writing into its volume), in both modes."""

from __future__ import annotations

import subprocess
import time

import pytest

from engine import captures, deploys
from lib import runtime
from snapshots import storage
from snapshots.models import Snapshot
from tests.snapshots.conftest import add_volume
from tests.snapshots.trees import describe, extract_bytes
from workloads.models import DeployRecord, SnapshotConsistency

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]

WRITE_DATA = (
    "mkdir -p /data/app/empty && echo hello > /data/app/a.txt"
    " && chown 1000:1000 /data/app/a.txt && chmod 600 /data/app/a.txt"
    " && touch -d '2020-01-02 03:04:05' /data/app/a.txt"
    " && dd if=/dev/urandom of=/data/blob bs=1024 count=3072 2>/dev/null"
    " && chmod 750 /data/app && ln -s /etc/passwd /data/link"
)


def inspect(container_id: str, template: str) -> str:
    return subprocess.run(
        ["docker", "inspect", "-f", template, container_id],
        capture_output=True, text=True, check=True,
    ).stdout.strip()


def in_container(container_id: str, script: str, *, detach: bool = False) -> None:
    subprocess.run(
        ["docker", "exec", *(["-d"] if detach else []), container_id, "sh", "-c", script],
        check=True, capture_output=True,
    )


@pytest.fixture
def running(docker, current_tag, make_workload):
    """A deployed busybox workload that wrote data into its volume: (workload, container, path)."""
    workload = make_workload()
    path = add_volume(workload, "data", "/data")
    record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    assert record.outcome == DeployRecord.Outcome.SUCCEEDED, record.failure_code
    [container] = runtime.list_containers(workload.pk)
    in_container(container.id, WRITE_DATA)
    return workload, container.id, path


def test_stop_mode_stops_captures_and_starts_again(running, tmp_path):
    workload, container_id, path = running
    started = inspect(container_id, "{{.State.StartedAt}}")
    before = describe(path)

    snapshot = captures.capture_snapshot(workload=workload)

    assert snapshot.state == Snapshot.State.READY, snapshot.failure_text
    assert inspect(container_id, "{{.State.Running}}") == "true"
    assert inspect(container_id, "{{.State.StartedAt}}") != started  # it was stopped
    data = storage.archive_path(workload.pk, snapshot.archive).read_bytes()
    extract_bytes(data, tmp_path / "s", 1)
    extracted = describe(tmp_path / "s" / "volumes" / "0")
    assert extracted == {k: v for k, v in before.items() if k != "link"}
    assert extracted["app/a.txt"][1:4] == (0o600, 1000, 1000)
    assert snapshot.skipped_count == 1 and snapshot.manifest["consistency"] == "stop"


def test_live_mode_never_stops_the_containers(running, tmp_path):
    workload, container_id, path = running
    workload.snapshot_consistency = SnapshotConsistency.LIVE
    workload.save(update_fields=["snapshot_consistency"])
    in_container(container_id, "while true; do echo tick >> /data/log; usleep 20000; done",
                 detach=True)
    time.sleep(0.5)
    started = inspect(container_id, "{{.State.StartedAt}}")

    snapshot = captures.capture_snapshot(workload=workload)

    assert snapshot.state == Snapshot.State.READY, snapshot.failure_text
    assert inspect(container_id, "{{.State.StartedAt}}") == started
    assert inspect(container_id, "{{.State.Running}}") == "true"
    data = storage.archive_path(workload.pk, snapshot.archive).read_bytes()
    extract_bytes(data, tmp_path / "s", 1)
    restored = tmp_path / "s" / "volumes" / "0"
    now = describe(path)
    extracted = describe(restored)
    # Everything but the log the container keeps writing is exactly as on the host.
    unchanged = {k for k in now if k not in {".", "log", "link"}}
    assert {k: extracted[k] for k in unchanged} == {k: now[k] for k in unchanged}
    captured_log = (restored / "log").read_bytes()
    assert captured_log and (path / "log").read_bytes().startswith(captured_log)
    assert snapshot.manifest["consistency"] == "live"


def test_containers_come_back_even_when_the_capture_fails(running, settings):
    workload, container_id, _path = running
    settings.BERTH_SNAPSHOT_MAX_FILE_BYTES = 1024
    snapshot = captures.capture_snapshot(workload=workload)
    assert snapshot.state == Snapshot.State.FAILED
    assert "per-file limit" in snapshot.failure_text
    assert inspect(container_id, "{{.State.Running}}") == "true"
