"""Every interface deletes a snapshot through the engine (engine.captures.delete_snapshot).

A snapshot being restored, or still being taken, cannot be deleted from the
API, the pages, the admin (one or in bulk) or `manage.py delete_snapshot`;
a finished one can, from each, and leaves its event and no file behind.
"""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from engine import deploys
from lib import runtime
from snapshots.models import RestoreJob, Snapshot
from tests.fixtures import images
from tests.snapshots.test_retention import exists, fake
from workloads.models import DeployRecord, EventLog, Workload

HTMX = {"HX-Request": "true"}


@pytest.fixture
def staff_operator(operator):
    operator.is_staff = True
    operator.save()
    return operator


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def being_restored(workload) -> Snapshot:
    snapshot = fake(workload)
    RestoreJob.objects.create(workload=workload, snapshot=snapshot,
                              state=RestoreJob.State.RUNNING)
    return snapshot


def being_taken(workload) -> Snapshot:
    return Snapshot.objects.create(workload=workload, state=Snapshot.State.CAPTURING)


def still_there(snapshot: Snapshot) -> bool:
    return Snapshot.objects.filter(pk=snapshot.pk).exists() and (
        not snapshot.archive or exists(snapshot))


def deleted_event(snapshot: Snapshot) -> bool:
    return EventLog.objects.filter(message="Deleted snapshot #%(id)d.",
                                   params={"id": snapshot.pk}).exists()


# --- the API --------------------------------------------------------------------------------

@pytest.mark.parametrize("busy", [being_restored, being_taken])
def test_the_api_refuses_a_busy_snapshot(api_as, operator, workload, busy):
    snapshot = busy(workload)
    response = api_as(operator).delete(f"/api/workloads/{workload.pk}/snapshots/{snapshot.pk}",
                                       HTTP_X_CONFIRM_DELETE=workload.path)
    assert response.status_code == 409
    assert still_there(snapshot)


def test_the_api_deletes_a_finished_snapshot(api_as, operator, workload):
    snapshot = fake(workload)
    response = api_as(operator).delete(f"/api/workloads/{workload.pk}/snapshots/{snapshot.pk}",
                                       HTTP_X_CONFIRM_DELETE=workload.path)
    assert response.status_code == 204
    assert not Snapshot.objects.filter(pk=snapshot.pk).exists() and deleted_event(snapshot)


# --- the pages ------------------------------------------------------------------------------

@pytest.mark.parametrize("busy", [being_restored, being_taken])
def test_the_page_refuses_a_busy_snapshot(operator, workload, busy):
    snapshot = busy(workload)
    response = logged_in(operator).post(
        f"/workloads/{workload.pk}/snapshots/{snapshot.pk}/delete", {"confirm": workload.path},
        headers=HTMX)
    assert response.status_code == 200
    assert "delete it once" in response.content.decode()
    assert still_there(snapshot)


def test_the_page_deletes_a_finished_snapshot(operator, workload):
    snapshot = fake(workload)
    logged_in(operator).post(f"/workloads/{workload.pk}/snapshots/{snapshot.pk}/delete",
                             {"confirm": workload.path}, headers=HTMX)
    assert not Snapshot.objects.filter(pk=snapshot.pk).exists() and deleted_event(snapshot)


# --- the admin ------------------------------------------------------------------------------

@pytest.mark.parametrize("busy", [being_restored, being_taken])
def test_the_admin_shows_no_delete_for_a_busy_snapshot(staff_operator, workload, busy):
    snapshot = busy(workload)
    client = logged_in(staff_operator)
    assert client.get(f"/admin/snapshots/snapshot/{snapshot.pk}/delete/").status_code == 403
    assert client.post(f"/admin/snapshots/snapshot/{snapshot.pk}/delete/",
                       {"post": "yes"}).status_code == 403
    assert still_there(snapshot)


def test_the_admin_refuses_a_snapshot_that_became_busy_after_the_confirmation(
        staff_operator, workload, monkeypatch):
    """The confirmation page was shown while it was idle; the engine checks again at delete."""
    from web.admin.snapshots import SnapshotAdmin

    snapshot = fake(workload)
    monkeypatch.setattr(SnapshotAdmin, "has_delete_permission", lambda *args, **kw: True)
    RestoreJob.objects.create(workload=workload, snapshot=snapshot,
                              state=RestoreJob.State.RUNNING)
    response = logged_in(staff_operator).post(
        f"/admin/snapshots/snapshot/{snapshot.pk}/delete/",
        {"post": "yes", "confirm": workload.path}, follow=True)
    assert "was not deleted: This snapshot is being restored" in response.content.decode()
    assert still_there(snapshot)


def test_the_admin_has_no_bulk_delete_of_snapshots(staff_operator, workload):
    idle, busy = fake(workload), being_restored(workload)
    response = logged_in(staff_operator).post("/admin/snapshots/snapshot/", {
        "action": "delete_selected", "_selected_action": [idle.pk, busy.pk], "post": "yes",
    })
    # A snapshot goes one at a time (no "delete selected"): the list only says so.
    assert response.status_code in {200, 302}
    assert still_there(idle) and still_there(busy)


def test_the_admin_deletes_through_the_engine(staff_operator, workload):
    first = fake(workload)
    client = logged_in(staff_operator)
    client.post(f"/admin/snapshots/snapshot/{first.pk}/delete/",
                {"post": "yes", "confirm": workload.path})
    assert not Snapshot.objects.filter(pk=first.pk).exists()
    assert deleted_event(first)


# --- the command ----------------------------------------------------------------------------

@pytest.mark.parametrize("busy", [being_restored, being_taken])
def test_the_command_refuses_a_busy_snapshot(workload, busy):
    snapshot = busy(workload)
    with pytest.raises(CommandError, match="delete it once"):
        call_command("delete_snapshot", str(workload.pk), str(snapshot.pk), stdout=io.StringIO())
    assert still_there(snapshot)


def test_the_command_deletes_a_finished_snapshot(workload, make_workload):
    snapshot = fake(workload)
    other = make_workload()
    with pytest.raises(CommandError, match="has no snapshot"):
        call_command("delete_snapshot", str(other.pk), str(snapshot.pk), stdout=io.StringIO())
    out = io.StringIO()
    call_command("delete_snapshot", str(workload.pk), str(snapshot.pk), stdout=out)
    assert f"Deleted snapshot #{snapshot.pk}" in out.getvalue()
    assert not Snapshot.objects.filter(pk=snapshot.pk).exists() and deleted_event(snapshot)


@pytest.mark.parametrize("kind", ["workload", "snapshot"])
def test_the_admin_deletes_only_with_the_workloads_path_typed(staff_operator, workload, kind):
    snapshot = fake(workload)
    obj = workload if kind == "workload" else snapshot
    url = f"/admin/{obj._meta.app_label}/{kind}/{obj.pk}/delete/"
    client = logged_in(staff_operator)

    page = client.get(url).content.decode()
    assert workload.path in page and 'name="confirm"' in page
    for typed in ({}, {"confirm": workload.slug}, {"confirm": workload.path + "x"}):
        refused = client.post(url, {"post": "yes", **typed})
        assert refused.status_code == 200  # the confirmation page again, with the error
        assert "errorlist" in refused.content.decode()
        assert type(obj).objects.filter(pk=obj.pk).exists()

    done = client.post(url, {"post": "yes", "confirm": workload.path})
    assert done.status_code == 302
    assert not type(obj).objects.filter(pk=obj.pk).exists()


@pytest.mark.usefixtures("commits_as_in_production")
def test_the_admin_deletes_a_workload_that_has_a_history(docker, admin_client, make_workload):
    # Its ledger rows, events and containers have no delete of their own in the admin;
    # the engine removes them with the workload.
    workload = make_workload(image=images.HTTPD_V1)
    record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    assert record.outcome == DeployRecord.Outcome.SUCCEEDED, record.failure_code
    url = f"/admin/workloads/workload/{workload.pk}/delete/"

    page = admin_client.get(url).content.decode()
    assert "permission to delete" not in page and 'name="confirm"' in page
    done = admin_client.post(url, {"post": "yes", "confirm": workload.path})

    assert done.status_code == 302
    assert not Workload.objects.filter(pk=workload.pk).exists()
    assert runtime.list_containers(workload.pk) == []
