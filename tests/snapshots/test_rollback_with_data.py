"""Rollback with data (issue #15, item 4): v1's code on the data from before v1 ran, in one step.

Real Docker and the local registry: v1 and v2 of the test image, a pre-deploy
snapshot taken by v1's deploy, and a "migration" v2 wrote into the volumes
(tests/snapshots/rolling_back.py). Refusals change nothing.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.test import Client

from engine import deploys, restores, tasks
from snapshots.errors import PreflightError
from snapshots.models import RestoreJob, Snapshot
from tests.conftest import container_image_digest
from tests.snapshots.conftest import add_volume
from tests.snapshots.restoring import (
    NEW,
    engine_containers,
    in_container,
    journals,
    served,
    snapshot_trees,
    strays,
    trees,
)
from tests.snapshots.rolling_back import release_v1_then_v2
from workloads.models import DeployRecord, VolumeMount

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]
Restored = DeployRecord.RollbackRestored


@pytest.fixture
def released(current_tag, make_workload):
    return release_v1_then_v2(make_workload)


def url(released) -> str:
    return f"/api/workloads/{released.workload.pk}/rollback"


def confirmed(released) -> dict:
    return {"HTTP_X_CONFIRM_RESTORE": released.workload.path}


def assert_v1_on_its_data(released, job: RestoreJob, scratch: Path, *,
                          configuration: bool = True) -> None:
    """v1 runs on the data from before v1 ran; the v2-era data is a pre-restore snapshot.

    With the configuration (the default) the workload is configured to run v1's digest
    again; without, it keeps the configuration it had (v2's tag)."""
    job.refresh_from_db()
    assert job.outcome == RestoreJob.Outcome.SUCCEEDED, job.reason_text
    assert trees(released.paths) == released.target_trees
    [running] = engine_containers(released.workload)
    assert container_image_digest(running.id) == released.v1.pinned_reference
    assert in_container(running.id, "cat /version") == b"v1\n"
    assert served(running.id, "index.html") == NEW["index.html"]
    assert in_container(running.id, "ls /data/migrated || true") == b""
    kept = job.pre_restore_snapshot
    assert kept.kind == Snapshot.Kind.PRE_RESTORE and kept.is_ready
    assert snapshot_trees(kept, scratch / "kept") == released.current_trees
    deploy = job.deploy
    assert deploy.reason == DeployRecord.Reason.ROLLBACK
    assert deploy.rolled_back_from == released.v1
    assert deploy.rollback_restored == (Restored.CODE_CONFIGURATION_DATA if configuration
                                        else Restored.CODE_DATA)
    assert deploy.pinned_reference == released.v1.pinned_reference
    assert strays(released.paths) == [] and journals() == []
    released.workload.refresh_from_db()
    assert released.workload.running_reference == released.v1.pinned_reference
    configured = released.workload.image
    assert (configured == released.v1.pinned_reference) is configuration


def assert_nothing_changed(released, jobs_before: int = 0) -> None:
    assert trees(released.paths) == released.current_trees
    [running] = engine_containers(released.workload)
    assert container_image_digest(running.id) == released.v2.pinned_reference
    assert RestoreJob.objects.filter(workload=released.workload).count() == jobs_before
    assert strays(released.paths) == [] and journals() == []


# --- the test: v2 migrated the data; back to v1 with the data from before ------------

def test_the_api_rolls_back_code_and_data_in_one_restore(api_as, operator, released,
                                                         tmp_path, monkeypatch):
    ran: list[int] = []
    monkeypatch.setattr("engine.queue.enqueue", lambda task, row, *, name: ran.append(row))
    client = api_as(operator)

    response = client.post(url(released), {"deploy_id": released.v1.pk, "data": True},
                           format="json", **confirmed(released))

    assert response.status_code == 202, response.content
    body = response.json()
    assert response["Location"] == body["url"] == f"/api/restores/{body['id']}"
    assert body["snapshot"] == released.snapshot.pk and body["rollback_to"] == released.v1.pk
    assert ran == [body["id"]]
    tasks.run_restore(body["id"])
    assert_v1_on_its_data(released, RestoreJob.objects.get(pk=body["id"]), tmp_path)
    deploy = client.get(f"/api/deploys/{RestoreJob.objects.get(pk=body['id']).deploy_id}")
    assert deploy.json()["rollback_restored"] == "code+configuration+data"


def test_the_command_rolls_back_code_and_data(released, tmp_path):
    out = io.StringIO()

    call_command("rollback", released.workload.path, str(released.v1.pk), "--data",
                 "--confirm", released.workload.path, stdout=out)

    job = RestoreJob.objects.get(workload=released.workload)
    assert_v1_on_its_data(released, job, tmp_path)
    assert f"Restore #{job.pk}: Restored." in out.getvalue()
    assert released.v1.pinned_reference in out.getvalue()


# --- refusals: each says why, and nothing is changed ----------------------------------------

def test_a_deploy_without_a_pre_deploy_snapshot_is_refused(api_as, operator, released):
    Snapshot.objects.filter(pk=released.snapshot.pk).update(deploy=None)

    response = api_as(operator).post(url(released), {"deploy_id": released.v1.pk, "data": True},
                                     format="json", **confirmed(released))

    assert response.status_code == 409
    assert "no ready snapshot taken before it ran" in response.json()["detail"]
    assert_nothing_changed(released)


def test_a_failed_pre_deploy_snapshot_is_refused(api_as, operator, released):
    Snapshot.objects.filter(pk=released.snapshot.pk).update(state=Snapshot.State.FAILED)

    response = api_as(operator).post(url(released), {"deploy_id": released.v1.pk, "data": True},
                                     format="json", **confirmed(released))

    assert response.status_code == 409
    assert "no ready snapshot" in response.json()["detail"]
    assert_nothing_changed(released)


def test_volumes_changed_since_are_refused(api_as, operator, released):
    # The same number of volumes, the same container paths: a plain restore would take it.
    VolumeMount.objects.filter(workload=released.workload, target="/config").update(
        source="settings")

    response = api_as(operator).post(url(released), {"deploy_id": released.v1.pk, "data": True},
                                     format="json", **confirmed(released))

    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "volumes changed since snapshot" in detail and "/config (stage:settings)" in detail
    VolumeMount.objects.filter(workload=released.workload, target="/config").update(
        source="config")
    assert_nothing_changed(released)


def test_an_added_volume_is_refused(api_as, operator, released):
    add_volume(released.workload, "cache", "/cache")

    response = api_as(operator).post(url(released), {"deploy_id": released.v1.pk, "data": True},
                                     format="json", **confirmed(released))

    assert response.status_code == 409 and "volumes changed since" in response.json()["detail"]
    VolumeMount.objects.filter(workload=released.workload, target="/cache").delete()
    assert_nothing_changed(released)


def test_volumes_changed_while_queued_are_refused_by_the_restore(released, monkeypatch):
    """The restore's pre-flight checks again under the lock: nothing is stopped or moved."""
    monkeypatch.setattr("engine.queue.enqueue", lambda task, row, *, name: None)
    job = restores.request_rollback_with_data(workload=released.workload,
                                              deploy_id=released.v1.pk)
    VolumeMount.objects.filter(workload=released.workload, target="/config").update(
        source="settings")

    tasks.run_restore(job.pk)

    job.refresh_from_db()
    assert job.outcome == RestoreJob.Outcome.FAILED
    assert "volumes changed since snapshot" in job.reason_text
    VolumeMount.objects.filter(workload=released.workload, target="/config").update(
        source="config")
    assert_nothing_changed(released, jobs_before=1)


def test_the_restore_permission_is_needed_too(api_as, operator, released):
    operator.groups.clear()
    operator.user_permissions.add(Permission.objects.get(codename="rollback_workload"))

    response = api_as(operator).post(url(released), {"deploy_id": released.v1.pk, "data": True},
                                     format="json", **confirmed(released))

    assert response.status_code == 403
    assert "permission to restore" in response.json()["detail"]
    assert_nothing_changed(released)


def test_the_rollback_permission_is_needed_too(api_as, operator, released):
    operator.groups.clear()
    operator.user_permissions.add(Permission.objects.get(codename="restore_workload"),
                                  Permission.objects.get(codename="view_workload"))

    response = api_as(operator).post(url(released), {"deploy_id": released.v1.pk, "data": True},
                                     format="json", **confirmed(released))

    assert response.status_code == 403
    assert_nothing_changed(released)


@pytest.mark.parametrize("header", [None, "wrong/path/here"])
def test_without_the_confirmation_it_answers_428(api_as, operator, released, header):
    extra = {"HTTP_X_CONFIRM_RESTORE": header} if header else {}

    response = api_as(operator).post(url(released), {"deploy_id": released.v1.pk, "data": True},
                                     format="json", **extra)

    assert response.status_code == 428
    assert released.workload.path in response.json()["detail"]
    assert_nothing_changed(released)


def test_the_command_needs_the_confirmation(released):
    with pytest.raises(CommandError, match="--confirm"):
        call_command("rollback", str(released.workload.pk), str(released.v1.pk), "--data",
                     stdout=io.StringIO())
    assert_nothing_changed(released)


def test_the_command_refuses_without_a_pre_deploy_snapshot(released):
    Snapshot.objects.filter(pk=released.snapshot.pk).update(deploy=None)

    with pytest.raises(CommandError, match="no ready snapshot"):
        call_command("rollback", str(released.workload.pk), str(released.v1.pk), "--data",
                     "--confirm", released.workload.path, stdout=io.StringIO())
    assert_nothing_changed(released)


def test_a_deploy_of_another_workload_is_not_found(api_as, operator, released, make_workload):
    other = make_workload(slug="other")

    response = api_as(operator).post(f"/api/workloads/{other.pk}/rollback",
                                     {"deploy_id": released.v1.pk, "data": True}, format="json",
                                     HTTP_X_CONFIRM_RESTORE=other.path)

    assert response.status_code == 404
    assert_nothing_changed(released)


def test_the_engine_refuses_what_the_api_would(released):
    VolumeMount.objects.filter(workload=released.workload, target="/data").update(
        target="/srv")
    with pytest.raises(PreflightError):
        restores.rollback_with_data(workload=released.workload, deploy_id=released.v1.pk)
    Snapshot.objects.filter(pk=released.snapshot.pk).update(deploy=None)
    with pytest.raises(deploys.RollbackRefused):
        restores.rollback_with_data(workload=released.workload, deploy_id=released.v1.pk)
    VolumeMount.objects.filter(workload=released.workload, target="/srv").update(target="/data")
    assert_nothing_changed(released)


# --- the page: the history panel's "Roll back with data" ------------------------------------

def page_post(client, released, **data):
    return client.post(f"/workloads/{released.workload.pk}/rollback-data",
                       {"deploy_id": released.v1.pk, **data}, HTTP_HX_REQUEST="true")


def test_the_page_offers_it_and_queues_it_once_the_path_is_typed(released, operator,
                                                                 monkeypatch):
    ran: list[int] = []
    monkeypatch.setattr("engine.queue.enqueue", lambda task, row, *, name: ran.append(row))
    client = Client()
    client.force_login(operator)
    page = client.get(f"/workloads/{released.workload.pk}/").content.decode()
    assert f'data-opens="rollback-data-dialog-{released.v1.pk}"' in page
    assert f"snapshot #{released.snapshot.pk}, taken just before that deploy ran" in page

    refused = page_post(client, released, confirm="not/the/path")

    assert refused.status_code == 200 and "to confirm the rollback with data" in \
        refused.content.decode()
    assert not RestoreJob.objects.exists()

    accepted = page_post(client, released, confirm=released.workload.path)

    assert accepted.status_code == 200
    job = RestoreJob.objects.get(workload=released.workload)
    assert job.rollback_to == released.v1 and job.snapshot == released.snapshot
    assert ran == [job.pk]
    tasks.run_restore(job.pk)
    assert_v1_on_its_data(released, job, Path(tempfile.mkdtemp()))
    history = client.get(f"/workloads/{released.workload.pk}/").content.decode()
    assert "code, configuration and data" in history.lower()


def test_the_page_needs_both_permissions(released, operator):
    operator.groups.clear()
    operator.user_permissions.add(Permission.objects.get(codename="rollback_workload"),
                                  Permission.objects.get(codename="view_workload"))
    client = Client()
    client.force_login(operator)
    page = client.get(f"/workloads/{released.workload.pk}/").content.decode()
    assert "rollback-data-dialog" not in page

    response = page_post(client, released, confirm=released.workload.path)

    assert response.status_code == 403
    assert_nothing_changed(released)


def test_the_page_says_why_it_is_refused(released, operator):
    Snapshot.objects.filter(pk=released.snapshot.pk).update(deploy=None)
    client = Client()
    client.force_login(operator)

    response = page_post(client, released, confirm=released.workload.path)

    assert "no ready snapshot taken before it ran" in response.content.decode()
    assert_nothing_changed(released)


def test_the_command_can_leave_the_configuration_as_it_is(released, tmp_path):
    call_command("rollback", released.workload.path, str(released.v1.pk), "--data",
                 "--no-configuration", "--confirm", released.workload.path,
                 stdout=io.StringIO())

    job = RestoreJob.objects.get(workload=released.workload)
    assert not job.rollback_configuration
    assert_v1_on_its_data(released, job, tmp_path, configuration=False)


def test_secret_values_cannot_go_with_the_data(api_as, operator, released):
    response = api_as(operator).post(
        url(released), {"deploy_id": released.v1.pk, "data": True,
                        "secrets": {"TOKEN": "typed-7"}},
        format="json", **confirmed(released))

    assert response.status_code == 400 and "secrets" in response.json()
    assert_nothing_changed(released)
