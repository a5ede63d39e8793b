"""Backup before deploy: wired into dispatch (so every entrypoint), linked, and fail-open."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from engine import deploys
from engine.locked import capture
from engine.locked.deploy import dispatch_locked
from lib import locks, runtime
from snapshots import writer
from snapshots.models import Snapshot
from tests.snapshots.conftest import add_volume, fill
from workloads.models import DeployRecord, EventLog, Workload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]
Outcome, Reason = DeployRecord.Outcome, DeployRecord.Reason


@pytest.fixture
def data_workload(make_workload) -> Workload:
    workload = make_workload()
    fill(add_volume(workload, "data", "/data"), {"index.html": b"<h1>before</h1>"})
    return workload


def deploy_via_api(workload: Workload, operator: User) -> None:
    client = Client()
    client.force_login(operator)
    assert client.post(f"/api/workloads/{workload.pk}/deploy").status_code == 202


def deploy_via_page(workload: Workload, operator: User) -> None:
    client = Client()
    client.force_login(operator)
    assert client.post(f"/workloads/{workload.pk}/deploy").status_code == 302


def deploy_via_admin(workload: Workload, operator: User) -> None:
    admin = User.objects.create_superuser("root-admin", password="x")
    client = Client()
    client.force_login(admin)
    response = client.post("/admin/workloads/workload/",
                           {"action": "deploy", "_selected_action": [workload.pk]})
    assert response.status_code == 302


def deploy_via_command(workload: Workload, operator: User) -> None:
    call_command("deploy", str(workload.pk), stdout=io.StringIO())


def deploy_via_rollback(workload: Workload, operator: User) -> None:
    """A rollback (API) to an earlier deploy; the earlier one is made without a backup."""
    wanted = Workload.objects.get(pk=workload.pk).auto_backup_before_deploy
    Workload.objects.filter(pk=workload.pk).update(auto_backup_before_deploy=False)
    earlier = deploys.dispatch(workload=workload, reason=Reason.MANUAL)
    Workload.objects.filter(pk=workload.pk).update(auto_backup_before_deploy=wanted)
    client = Client()
    client.force_login(operator)
    response = client.post(f"/api/workloads/{workload.pk}/rollback",
                           {"deploy_id": earlier.pk}, content_type="application/json")
    assert response.status_code == 202


def deploy_via_restore_variant(workload: Workload, operator: User) -> None:
    with locks.workload_lock(workload.pk):
        dispatch_locked(workload=workload, reason=Reason.RESTORE)


ENTRYPOINTS = {
    "api": deploy_via_api, "page": deploy_via_page, "admin": deploy_via_admin,
    "command": deploy_via_command, "rollback": deploy_via_rollback,
    "restore-variant": deploy_via_restore_variant,
}


@pytest.mark.parametrize("entrypoint", ENTRYPOINTS)
@pytest.mark.parametrize("on", [True, False], ids=["on", "off"])
def test_every_entrypoint_backs_up_when_on_and_not_when_off(
    entrypoint, on, docker, current_tag, data_workload, operator
):
    Workload.objects.filter(pk=data_workload.pk).update(auto_backup_before_deploy=on)

    ENTRYPOINTS[entrypoint](data_workload, operator)

    record = data_workload.deploys.order_by("-created", "-id").first()
    assert record.outcome == Outcome.SUCCEEDED, record.failure_code
    snapshots = Snapshot.objects.filter(workload=data_workload, kind=Snapshot.Kind.PRE_DEPLOY)
    if on:
        [snapshot] = snapshots
        assert snapshot.deploy == record and snapshot.state == Snapshot.State.READY
        assert record.backup_failure == ""
    else:
        assert not snapshots.exists()


def test_the_site_default_applies_unless_the_workload_says_otherwise(
    docker, current_tag, data_workload, settings
):
    settings.BERTH_AUTO_BACKUP_BEFORE_DEPLOY = True
    first = deploys.dispatch(workload=data_workload, reason=Reason.MANUAL)
    assert first.pre_deploy_snapshot.is_ready
    Workload.objects.filter(pk=data_workload.pk).update(auto_backup_before_deploy=False)
    second = deploys.dispatch(workload=data_workload, reason=Reason.MANUAL)
    assert not Snapshot.objects.filter(deploy=second).exists()


def test_it_is_taken_while_the_old_containers_are_stopped_and_the_new_not_started(
    docker, current_tag, data_workload, monkeypatch
):
    deploys.dispatch(workload=data_workload, reason=Reason.MANUAL)
    [old] = runtime.list_containers(data_workload.pk)
    Workload.objects.filter(pk=data_workload.pk).update(auto_backup_before_deploy=True)
    seen: list[list[tuple[str, str]]] = []
    real = writer.scan_volumes

    def watch(roots, limits, budget=None):
        seen.append([(c.id, c.status) for c in runtime.list_containers(data_workload.pk)])
        return real(roots, limits, budget)

    monkeypatch.setattr(writer, "scan_volumes", watch)
    record = deploys.dispatch(workload=data_workload, reason=Reason.MANUAL)

    assert record.outcome == Outcome.SUCCEEDED
    [during] = seen
    assert dict(during)[old.id] == "exited"  # stopped by the deploy, not by the capture
    assert [status for cid, status in during if cid != old.id] == ["created"]
    assert record.pre_deploy_snapshot.manifest["consistency"] == "stop"


def test_fail_open_when_the_setting_cannot_be_read(
    docker, current_tag, data_workload, monkeypatch
):
    def unreadable(workload):
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(capture, "auto_backup_wanted", unreadable)
    record = deploys.dispatch(workload=data_workload, reason=Reason.MANUAL)

    assert record.outcome == Outcome.SUCCEEDED
    record.refresh_from_db()
    assert record.backup_failure == DeployRecord.BackupFailure.SETTING_UNREADABLE
    assert not Snapshot.objects.exists()
    warning = data_workload.events.get(level=EventLog.Level.WARNING)
    assert warning.text == (
        f"No snapshot was taken before deploy #{record.pk}: The backup-before-deploy setting "
        "could not be read; no snapshot was taken."
    )


def test_fail_open_when_the_capture_raises(docker, current_tag, data_workload, monkeypatch):
    Workload.objects.filter(pk=data_workload.pk).update(auto_backup_before_deploy=True)

    def broken(**kwargs):
        raise RuntimeError("bug in the capture")

    monkeypatch.setattr(capture, "capture_locked", broken)
    record = deploys.dispatch(workload=data_workload, reason=Reason.MANUAL)

    assert record.outcome == Outcome.SUCCEEDED
    record.refresh_from_db()
    assert record.backup_failure == DeployRecord.BackupFailure.CAPTURE_FAILED
    assert data_workload.events.filter(level=EventLog.Level.WARNING).count() == 1


def test_fail_open_when_the_capture_fails(docker, current_tag, data_workload, settings):
    Workload.objects.filter(pk=data_workload.pk).update(auto_backup_before_deploy=True)
    settings.BERTH_SNAPSHOT_MAX_FILE_BYTES = 4  # index.html is larger

    record = deploys.dispatch(workload=data_workload, reason=Reason.MANUAL)

    assert record.outcome == Outcome.SUCCEEDED
    record.refresh_from_db()
    assert record.backup_failure == DeployRecord.BackupFailure.CAPTURE_FAILED
    snapshot = record.pre_deploy_snapshot
    assert snapshot.state == Snapshot.State.FAILED and "per-file limit" in snapshot.failure_text
    client_body = Client()
    client_body.force_login(User.objects.create_superuser("a", password="x"))
    ledger = client_body.get(f"/api/workloads/{data_workload.pk}/deploys").json()["results"]
    assert ledger[0]["pre_deploy_snapshot"] == snapshot.pk
    assert ledger[0]["backup_failure"] == "capture_failed"


def test_a_workload_without_volumes_deploys_without_a_snapshot_or_a_warning(
    docker, current_tag, make_workload
):
    workload = make_workload(auto_backup_before_deploy=True)
    record = deploys.dispatch(workload=workload, reason=Reason.MANUAL)
    assert record.outcome == Outcome.SUCCEEDED and record.backup_failure == ""
    assert not Snapshot.objects.exists()
