"""Backup policies through the API (/api/backup-policies) and a workload's backup health
(/api/workloads/{id}/backup-health): permissions, bad input, the schedule's restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission

from backups.models import BackupPolicy, BackupTarget, SnapshotCopy
from snapshots.models import Snapshot

pytestmark = pytest.mark.django_db

URL = "/api/backup-policies"
LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def target(db) -> BackupTarget:
    return BackupTarget.objects.create(name="offsite", kind="s3", bucket="berth-api",
                                       unencrypted=True)


@pytest.fixture
def planner(operator):
    """An operator who may also manage backup policies."""
    operator.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="backups", codename__endswith="_backuppolicy"))
    return operator


def test_it_creates_lists_changes_and_deletes_a_policy(api_as, planner, target, workload):
    api = api_as(planner)

    made = api.post(URL, {"workload": workload.pk, "every": "weekly", "at": "04:30",
                          "weekday": 6, "time_zone": "Europe/Berlin", "targets": [target.pk],
                          "keep_last": 3, "keep_daily": 0}, format="json")

    assert made.status_code == 201, made.content
    body = made.json()
    assert (body["workload"], body["stage"], body["project"]) == (workload.pk, None, None)
    assert body["targets"] == [target.pk] and body["keep_last"] == 3
    assert body["next_run"] is not None and "active_since" in body
    policy = BackupPolicy.objects.get()
    assert policy.expression() == "30 4 * * 0"  # Sunday
    assert [p["id"] for p in api.get(f"{URL}?workload={workload.pk}").json()["results"]] == [
        policy.pk]
    assert api.get(f"{URL}?project={workload.stage.project_id}").json()["results"] == []

    changed = api.patch(f"{URL}/{policy.pk}", {"enabled": False, "targets": []}, format="json")
    assert changed.status_code == 200, changed.content
    assert changed.json()["next_run"] is None
    policy.refresh_from_db()
    assert not policy.enabled and not policy.targets.exists()

    assert api.delete(f"{URL}/{policy.pk}").status_code == 204
    assert not BackupPolicy.objects.exists()


def test_a_changed_schedule_restarts_it_and_other_changes_do_not(api_as, planner, workload):
    policy = BackupPolicy.objects.create(workload=workload, every="daily")
    BackupPolicy.objects.filter(pk=policy.pk).update(active_since=LONG_AGO)
    api = api_as(planner)

    api.patch(f"{URL}/{policy.pk}", {"keep_daily": 3, "enabled": True}, format="json")
    policy.refresh_from_db()
    assert policy.active_since == LONG_AGO
    # Setting a schedule field to the value it has is no change.
    api.patch(f"{URL}/{policy.pk}", {"every": "daily"}, format="json")
    policy.refresh_from_db()
    assert policy.active_since == LONG_AGO

    answer = api.patch(f"{URL}/{policy.pk}", {"time_zone": "Asia/Tokyo"}, format="json")
    assert answer.status_code == 200, answer.content
    policy.refresh_from_db()
    assert policy.active_since > LONG_AGO + timedelta(days=300)


@pytest.mark.parametrize("body", [
    {"every": "daily"},  # no owner
    {"every": "cron", "cron": "every night"},
    {"every": "hourly", "minute": 60},
    {"weekday": 7},
    {"time_zone": "Mars/Olympus"},
    {"keep_daily": -1},
    {"targets": [999]},
    {"every": "fortnightly"},
])
def test_bad_input_is_refused_and_nothing_is_saved(api_as, planner, workload, body):
    body = {"workload": workload.pk} | body if body != {"every": "daily"} else body
    answer = api_as(planner).post(URL, body, format="json")
    assert answer.status_code == 400, answer.content
    assert not BackupPolicy.objects.exists()


def test_two_owners_or_a_second_policy_are_refused(api_as, planner, workload):
    api = api_as(planner)
    both = api.post(URL, {"workload": workload.pk, "stage": workload.stage_id}, format="json")
    assert both.status_code == 400
    assert api.post(URL, {"stage": workload.stage_id}, format="json").status_code == 201
    again = api.post(URL, {"stage": workload.stage_id}, format="json")
    assert again.status_code == 400 and "stage" in again.json()
    assert BackupPolicy.objects.count() == 1


def test_it_needs_the_policy_permissions(api, api_as, operator, viewer, workload):
    policy = BackupPolicy.objects.create(workload=workload)
    assert api.get(URL).status_code in (401, 403)
    for user in (operator, viewer):  # neither holds a policy permission by default
        client = api_as(user)
        assert client.get(URL).status_code == 403
        assert client.post(URL, {"project": workload.stage.project_id},
                           format="json").status_code == 403
        assert client.patch(f"{URL}/{policy.pk}", {"enabled": False},
                            format="json").status_code == 403
        assert client.delete(f"{URL}/{policy.pk}").status_code == 403
    policy.refresh_from_db()
    assert policy.enabled
    viewer.user_permissions.add(Permission.objects.get(codename="view_backuppolicy"))
    client = api_as(type(viewer).objects.get(pk=viewer.pk))  # its permissions read anew
    assert client.get(f"{URL}/{policy.pk}").status_code == 200
    assert client.delete(f"{URL}/{policy.pk}").status_code == 403
    assert client.put(f"{URL}/{policy.pk}", {}, format="json").status_code == 405
    assert client.get(f"{URL}/999").status_code == 404
    assert client.get(f"{URL}?workload=x").status_code == 400


def test_the_backup_health_of_a_workload(api, api_as, viewer, outsider, workload):
    url = f"/api/workloads/{workload.pk}/backup-health"
    assert api.get(url).status_code in (401, 403)
    assert api_as(outsider).get(url).status_code == 403
    assert api_as(viewer).get("/api/workloads/999/backup-health").status_code == 404

    BackupPolicy.objects.create(stage=workload.stage, every="hourly")
    snap = Snapshot.objects.create(workload=workload, kind="scheduled", state="ready")
    target = BackupTarget.objects.create(name="t", kind="s3", bucket="berth-h", unencrypted=True)
    failed = SnapshotCopy.objects.create(snapshot=snap, workload=workload, target=target,
                                         state="failed", failure_code="no_bucket",
                                         finished=snap.created)

    body = api_as(viewer).get(url).json()

    assert body["follows"] == "stage" and body["next_run"] is not None
    assert body["last_backup"]["snapshot"] == snap.pk
    assert body["last_copy"] == {"id": failed.pk, "snapshot": snap.pk, "target": target.pk,
                                 "state": "failed", "failure_code": "no_bucket",
                                 "finished": body["last_copy"]["finished"]}
    assert body["last_verified_copy"] is None and body["last_run"] is None
    assert (body["stale"], body["copy_failed"], body["failing"]) == (True, True, False)
    assert body["last_drill"] is None
