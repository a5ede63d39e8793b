"""Restores of a real running workload: the httpd test image serving its /data volume."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import pytest

from engine import captures, deploys, restores
from lib import runtime
from snapshots.models import RestoreJob, Snapshot
from tests.conftest import container_image_digest, move_current_tag
from tests.snapshots import hostile
from tests.snapshots.conftest import add_volume, fill
from tests.snapshots.restoring import (
    NEW,
    NEW_CONFIG,
    OLD,
    OLD_CONFIG,
    engine_containers,
    in_container,
    inspect,
    journals,
    replace_content,
    served,
    snapshot_from_bytes,
    snapshot_trees,
    spawn_restore,
    strays,
    trees,
)
from workloads.models import Container, DeployRecord, EventLog, VolumeMount, Workload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]
Outcome = RestoreJob.Outcome


@pytest.fixture
def deployed(docker, current_tag, make_workload):
    """The httpd workload with two volumes, deployed and serving the "old" data.

    Returns (workload, [data, config], the deploy, a snapshot of the "new" data, its trees).
    """
    workload = make_workload()
    data = add_volume(workload, "data", "/data")
    config = add_volume(workload, "config", "/config")
    fill(data, NEW)
    fill(config, NEW_CONFIG)
    record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    assert record.outcome == DeployRecord.Outcome.SUCCEEDED, record.failure_code
    wanted = trees([data, config])
    snapshot = captures.capture_snapshot(workload=workload)
    assert snapshot.is_ready, snapshot.failure_text
    replace_content(data, OLD)
    replace_content(config, OLD_CONFIG)
    [container] = engine_containers(workload)
    assert served(container.id, "index.html") == OLD["index.html"]
    workload.refresh_from_db()
    return workload, [data, config], record, snapshot, wanted


def test_it_restores_two_volumes_of_a_running_workload_end_to_end(deployed, tmp_path):
    workload, paths, first_deploy, snapshot, wanted = deployed
    previous = trees(paths)
    [old] = engine_containers(workload)
    move_current_tag("v2")  # a restore must bring back the version that ran, not the tag's

    job = restores.restore(workload=workload, snapshot=snapshot)

    job.refresh_from_db()
    assert job.outcome == Outcome.SUCCEEDED, job.reason_text
    [new] = engine_containers(workload)
    assert new.id != old.id and new.running
    assert served(new.id, "index.html") == NEW["index.html"]
    assert served(new.id, "other.txt") == NEW["other.txt"]
    assert in_container(new.id, "cat /config/app.conf") == NEW_CONFIG["app.conf"]
    assert trees(paths) == wanted
    assert container_image_digest(new.id) == first_deploy.pinned_reference
    assert job.deploy.reason == DeployRecord.Reason.RESTORE
    assert job.deploy.pinned_reference == first_deploy.pinned_reference
    kept = job.pre_restore_snapshot
    assert kept.kind == Snapshot.Kind.PRE_RESTORE
    assert snapshot_trees(kept, tmp_path / "kept") == previous
    assert Container.objects.live().get(workload=workload).docker_id == new.id
    assert strays(paths) == [] and journals() == []
    # No pre-deploy snapshot of the just-restored data, even with backups on.
    assert not Snapshot.objects.filter(workload=workload, kind="pre_deploy").exists()


def test_the_redeploy_skips_the_backup_before_deploy(deployed):
    workload, _paths, _deploy, snapshot, _wanted = deployed
    Workload.objects.filter(pk=workload.pk).update(auto_backup_before_deploy=True)

    job = restores.restore(workload=workload, snapshot=snapshot)

    job.refresh_from_db()
    assert job.outcome == Outcome.SUCCEEDED, job.reason_text
    assert not Snapshot.objects.filter(workload=workload, kind="pre_deploy").exists()


@pytest.mark.parametrize("name", ["symlink-then-write-through-it", "dotdot-inside",
                                  "total-over-cap", "truncated", "manifest-lies-about-counts"])
def test_a_hostile_snapshot_never_stops_the_containers(name, deployed, tmp_path):
    workload, paths, _deploy, _snapshot, _wanted = deployed
    case = next(c for c in hostile.corpus(str(tmp_path / "canary")) if c.name == name)
    # The workload has two volumes; the corpus archives hold one, which
    # pre-flight would refuse before the extractor saw it. Fit the workload to it.
    VolumeMount.objects.filter(workload=workload, target="/config").delete()
    bad = snapshot_from_bytes(workload, case.data, hostile.manifest())
    [before] = engine_containers(workload)
    started = inspect(before.id, "{{.State.StartedAt}}")
    live = trees(paths[:1])

    job = restores.restore(workload=workload, snapshot=bad, limits=case.limits)

    job.refresh_from_db()
    assert job.outcome == Outcome.FAILED and job.phase == RestoreJob.Phase.DONE
    assert job.reason_text
    [after] = engine_containers(workload)
    assert after.id == before.id and after.running
    assert inspect(after.id, "{{.State.StartedAt}}") == started, "the container was restarted"
    assert trees(paths[:1]) == live
    assert served(after.id, "index.html") == OLD["index.html"]
    assert strays(paths) == [] and journals() == []
    assert job.deploy is None


def test_when_the_containers_cannot_be_removed_the_old_data_runs_again(deployed, monkeypatch):
    workload, paths, _deploy, snapshot, _wanted = deployed
    previous = trees(paths)
    real = runtime.remove
    calls = []

    def refuse_once(container_id: str) -> None:
        calls.append(container_id)
        if len(calls) == 1:
            raise runtime.EngineError("simulated: removal refused")
        real(container_id)

    monkeypatch.setattr(runtime, "remove", refuse_once)

    job = restores.restore(workload=workload, snapshot=snapshot)

    job.refresh_from_db()
    assert job.outcome == Outcome.FAILED
    assert "could not be stopped and removed" in job.reason_text
    assert trees(paths) == previous
    [running] = engine_containers(workload)
    assert running.running and served(running.id, "index.html") == OLD["index.html"]
    assert job.deploy.outcome == DeployRecord.Outcome.SUCCEEDED
    assert strays(paths) == [] and journals() == []


def test_a_redeploy_failure_after_the_commit_keeps_the_restore_and_says_so(deployed,
                                                                          monkeypatch):
    workload, paths, _deploy, snapshot, wanted = deployed
    real = runtime.pull
    pulls = []

    def gone_after_the_checks(*args, **kwargs):
        pulls.append(args)
        if len(pulls) > 1:  # pre-flight's pull works; the redeploy's does not
            raise runtime.PullFailed("simulated: registry gone")
        return real(*args, **kwargs)

    monkeypatch.setattr(runtime, "pull", gone_after_the_checks)

    job = restores.restore(workload=workload, snapshot=snapshot)

    job.refresh_from_db()
    assert job.outcome == Outcome.NOT_STARTED
    assert trees(paths) == wanted
    assert job.deploy.outcome == DeployRecord.Outcome.FAILED
    assert job.pre_restore_snapshot.is_ready
    assert f"snapshot #{job.pre_restore_snapshot_id}" in job.reason_text
    assert engine_containers(workload) == []
    assert EventLog.objects.filter(workload=workload, level="error",
                                   message__contains="did not start again").exists()


def test_an_image_that_cannot_be_pulled_is_refused_before_anything_stops(deployed,
                                                                          monkeypatch):
    workload, paths, _deploy, snapshot, _wanted = deployed
    before, live = engine_containers(workload), trees(paths)

    def unreachable(*args, **kwargs):
        raise runtime.PullFailed("simulated: registry gone")

    monkeypatch.setattr(runtime, "pull", unreachable)

    job = restores.restore(workload=workload, snapshot=snapshot)

    job.refresh_from_db()
    assert job.outcome == Outcome.FAILED and "cannot be pulled now" in job.reason_text
    assert "The image could not be pulled." in job.reason_text  # the safe message, no raw text
    assert engine_containers(workload) == before and trees(paths) == live
    assert strays(paths) == [] and journals() == []


def test_a_full_volume_filesystem_is_refused_without_stopping_anything(
    docker, current_tag, make_workload, settings
):
    from tests.snapshots.test_restore import mount_tmpfs, unmount

    settings.BERTH_SNAPSHOT_RESERVE_BYTES = 0
    base = Path(tempfile.mkdtemp(prefix="berth-small-disk-"))
    small = mount_tmpfs(base / "fs", "6m")
    try:
        workload = make_workload()
        VolumeMount.objects.create(workload=workload, scope="absolute", source=str(small / "v"),
                                   target="/data")
        (small / "v").mkdir()
        (small / "v" / "big.bin").write_bytes(os.urandom(4 << 20))
        assert deploys.dispatch(workload=workload, reason="manual").outcome == "succeeded"
        snapshot = captures.capture_snapshot(workload=workload)
        [before] = engine_containers(workload)
        started = inspect(before.id, "{{.State.StartedAt}}")
        live = trees([small / "v"])

        job = restores.restore(workload=workload, snapshot=snapshot)

        job.refresh_from_db()
        assert job.outcome == Outcome.FAILED and "Not enough free space" in job.reason_text
        [after] = engine_containers(workload)
        assert after.id == before.id and inspect(after.id, "{{.State.StartedAt}}") == started
        assert trees([small / "v"]) == live and strays([small / "v"]) == []
    finally:
        from tests.conftest import remove_test_containers

        remove_test_containers()  # they hold the tmpfs busy
        unmount(small)
        small.rmdir()
        base.rmdir()


@pytest.mark.django_db(transaction=True)  # child processes read what it wrote
def test_a_deploy_requested_during_a_restore_waits_for_it(deployed, tmp_path):
    workload, paths, _deploy, snapshot, wanted = deployed
    release = tmp_path / "release"
    child = spawn_restore(workload, snapshot, BERTH_PAUSE_POINT="restore.quiesced",
                          BERTH_PAUSE_FILE=str(release))
    try:
        deadline = time.monotonic() + 60
        while not Path(f"{release}.reached").exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the restore never reached its pause"
            time.sleep(0.05)
        results: list[DeployRecord] = []
        waiting = threading.Thread(target=lambda: results.append(
            deploy_in_thread(workload)))
        waiting.start()
        time.sleep(1.5)
        assert waiting.is_alive(), "the deploy did not wait for the restore's lock"
        assert engine_containers(workload) == []  # the restore has them down
        release.touch()
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        waiting.join(timeout=120)
    finally:
        release.touch()
        if child.poll() is None:
            child.kill()
    [deploy] = results
    job = RestoreJob.objects.get(workload=workload)
    assert job.outcome == Outcome.SUCCEEDED
    assert deploy.outcome == DeployRecord.Outcome.SUCCEEDED
    assert deploy.finished > job.finished
    [running] = engine_containers(workload)
    assert served(running.id, "index.html") == NEW["index.html"]  # on the restored data
    assert trees(paths) == wanted


def deploy_in_thread(workload: Workload) -> DeployRecord:
    from django.db import connection

    try:
        return deploys.dispatch(workload=Workload.objects.with_parents().get(pk=workload.pk),
                                 reason=DeployRecord.Reason.MANUAL)
    finally:
        connection.close()
