"""Backup hooks around a capture, against a real running busybox workload."""

from __future__ import annotations

import logging
import subprocess
import time

import pytest

from engine import captures
from lib import runtime
from snapshots import storage
from snapshots.models import Snapshot
from tests.snapshots.conftest import add_volume, archive_files
from tests.snapshots.test_capture_docker import inspect
from tests.snapshots.trees import extract_bytes
from workloads.models import (
    DeployRecord,
    EnvVar,
    EventLog,
    HookFailure,
    SnapshotConsistency,
    Workload,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]

SECRET = "hook-secret-5b1e0c"
# The dump says which container wrote it and that the container ran.
DUMP = "echo dumped-by-$(hostname) > /data/dump.sql"


@pytest.fixture
def running(docker, current_tag, make_workload):
    """A deployed busybox workload with a /data volume and a secret env value:
    (workload, container id, host path of /data)."""
    from engine import deploys

    workload = make_workload()
    path = add_volume(workload, "data", "/data")
    env = EnvVar(workload=workload, name="API_TOKEN")
    env.set_value(SECRET, secret=True)
    env.save()
    record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    assert record.outcome == DeployRecord.Outcome.SUCCEEDED, record.failure_code
    [container] = runtime.list_containers(workload.pk)
    return workload, container.id, path


def hooks(workload: Workload, **fields) -> None:
    for name, value in fields.items():
        setattr(workload, name, value)
    workload.full_clean()
    workload.save()


def captured(workload: Workload, snapshot: Snapshot, tmp_path) -> dict[str, bytes]:
    data = storage.archive_path(workload.pk, snapshot.archive).read_bytes()
    extract_bytes(data, tmp_path / "s", 1)
    root = tmp_path / "s" / "volumes" / "0"
    return {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}


def events(workload: Workload) -> list[str]:
    return [e.text for e in EventLog.objects.filter(workload=workload).order_by("id")]


@pytest.mark.parametrize("consistency", [SnapshotConsistency.STOP, SnapshotConsistency.LIVE])
def test_it_captures_what_the_pre_hook_wrote_and_runs_the_post_hook_after(
    running, tmp_path, consistency
):
    workload, container_id, path = running
    hooks(workload, snapshot_consistency=consistency, pre_backup_hook=DUMP,
          post_backup_hook="cat /data/dump.sql > /data/post.txt && rm /data/dump.sql")
    started = inspect(container_id, "{{.State.StartedAt}}")

    snapshot = captures.capture_snapshot(workload=workload)

    assert snapshot.state == Snapshot.State.READY, snapshot.failure_text
    assert not snapshot.failure
    hostname = inspect(container_id, "{{.Config.Hostname}}")
    files = captured(workload, snapshot, tmp_path)
    assert files["dump.sql"] == f"dumped-by-{hostname}\n".encode()
    assert "post.txt" not in files
    # The post-backup hook ran after the capture, in the running container.
    assert (path / "post.txt").read_bytes() == files["dump.sql"]
    assert not (path / "dump.sql").exists()
    assert inspect(container_id, "{{.State.Running}}") == "true"
    if consistency == SnapshotConsistency.STOP:
        assert inspect(container_id, "{{.State.StartedAt}}") != started
    else:
        assert inspect(container_id, "{{.State.StartedAt}}") == started


def test_a_failing_pre_hook_with_abort_takes_no_snapshot_and_never_stops_the_workload(
    running
):
    workload, container_id, path = running
    hooks(workload, pre_backup_hook="echo half > /data/dump.sql; exit 3",
          post_backup_hook="echo cleaned > /data/post.txt")
    started = inspect(container_id, "{{.State.StartedAt}}")

    snapshot = captures.capture_snapshot(workload=workload)

    snapshot.refresh_from_db()
    assert snapshot.state == Snapshot.State.FAILED
    assert snapshot.failure_text == "The pre-backup hook failed with exit code 3."
    assert not snapshot.archive and archive_files(workload) == []
    assert inspect(container_id, "{{.State.Running}}") == "true"
    assert inspect(container_id, "{{.State.StartedAt}}") == started
    # The post-backup hook still runs: it undoes what the pre-backup hook began.
    assert (path / "post.txt").read_text() == "cleaned\n"
    assert f"Snapshot #{snapshot.pk} failed; the snapshots panel says why." in events(workload)


def test_containers_stopped_for_the_capture_run_again_when_it_fails_after_the_hook(
    running, settings
):
    workload, container_id, path = running
    hooks(workload, pre_backup_hook="dd if=/dev/zero of=/data/big bs=1024 count=4")
    settings.BERTH_SNAPSHOT_MAX_FILE_BYTES = 1024
    started = inspect(container_id, "{{.State.StartedAt}}")

    snapshot = captures.capture_snapshot(workload=workload)

    assert snapshot.state == Snapshot.State.FAILED
    assert "per-file limit" in snapshot.failure_text
    assert inspect(container_id, "{{.State.Running}}") == "true"
    assert inspect(container_id, "{{.State.StartedAt}}") != started


def test_a_failing_pre_hook_with_continue_takes_a_flagged_snapshot(running, tmp_path):
    workload, container_id, _path = running
    hooks(workload, pre_backup_hook="echo partial > /data/dump.sql; exit 2",
          pre_hook_failure=HookFailure.CONTINUE)

    snapshot = captures.capture_snapshot(workload=workload)

    snapshot.refresh_from_db()
    assert snapshot.state == Snapshot.State.READY
    assert snapshot.failure_text == "The pre-backup hook failed with exit code 2."
    assert captured(workload, snapshot, tmp_path)["dump.sql"] == b"partial\n"
    assert (f"Snapshot #{snapshot.pk} is taken although its pre-backup hook failed; the "
            "snapshots panel says why.") in events(workload)
    assert inspect(container_id, "{{.State.Running}}") == "true"


def test_a_hanging_hook_is_stopped_at_its_timeout(running):
    workload, container_id, _path = running
    hooks(workload, pre_backup_hook="sleep 600 & sleep 600", backup_hook_timeout=2)
    began = time.monotonic()

    snapshot = captures.capture_snapshot(workload=workload)

    assert time.monotonic() - began < 300  # not a timing: far from the hook's 600 s
    snapshot.refresh_from_db()
    assert snapshot.state == Snapshot.State.FAILED
    assert snapshot.failure_text == ("The pre-backup hook did not finish within 2 seconds and "
                                     "was stopped.")
    assert inspect(container_id, "{{.State.Running}}") == "true"
    processes = subprocess.run(["docker", "exec", container_id, "ps", "-o", "stat,args"],
                               capture_output=True, text=True, check=True).stdout
    # Both sleeps were killed (a zombie, "Z", is dead: busybox httpd does not reap).
    assert not [line for line in processes.splitlines()
                if "sleep 600" in line and not line.startswith("Z")], processes


def test_a_failing_post_hook_leaves_the_snapshot_ready_and_says_so(running):
    workload, _container_id, _path = running
    hooks(workload, post_backup_hook="exit 5")

    snapshot = captures.capture_snapshot(workload=workload)

    assert snapshot.state == Snapshot.State.READY, snapshot.failure_text
    assert (f"The post-backup hook after snapshot #{snapshot.pk} failed with exit code 5."
            in events(workload))


def test_hook_output_reaches_the_log_with_secrets_masked(running, caplog):
    workload, _container_id, _path = running
    hooks(workload, pre_backup_hook='echo "token is $API_TOKEN"; echo oops >&2; exit 1',
          pre_hook_failure=HookFailure.CONTINUE)

    with caplog.at_level(logging.INFO, logger="engine.locked.hooks"):
        snapshot = captures.capture_snapshot(workload=workload)

    assert snapshot.state == Snapshot.State.READY
    text = caplog.text
    assert "token is [redacted]" in text and "oops" in text
    assert SECRET not in text
    snapshot.refresh_from_db()
    assert SECRET not in str(snapshot.failure_params) + snapshot.failure
    assert not any(SECRET in str(e.params) + e.message for e in EventLog.objects.all())


def test_a_pre_hook_without_a_running_container_is_a_failed_hook(running):
    workload, container_id, _path = running
    hooks(workload, pre_backup_hook=DUMP)
    runtime.stop(container_id)

    snapshot = captures.capture_snapshot(workload=workload)

    assert snapshot.state == Snapshot.State.FAILED
    assert snapshot.failure_text == ("The pre-backup hook could not run: no container of the "
                                     "workload is running.")


def test_the_pre_deploy_snapshot_runs_no_hooks(running):
    from engine import deploys

    workload, _container_id, path = running
    hooks(workload, pre_backup_hook=DUMP, auto_backup_before_deploy=True)

    record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)

    assert record.outcome == DeployRecord.Outcome.SUCCEEDED, record.failure_code
    assert record.pre_deploy_snapshot.is_ready
    assert not (path / "dump.sql").exists()
