"""The API of recovery: POST …/catalogue, POST …/recover, GET /api/recoveries/{id}.

Real parts: moto's S3 server over HTTP, PostgreSQL or SQLite, Docker for the
restore. Tasks run synchronously under the test settings, so a recovery
queued by the API has ended when the response returns.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User

from backups.models import BackupRecovery, BackupTarget
from tests.backups.conftest import copied
from tests.snapshots.conftest import fill
from tests.snapshots.trees import describe
from workloads.models import Project, Workload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]


@pytest.fixture
def recoverer(db) -> User:
    user = User.objects.create_user("rita-recoverer", password="x")
    user.user_permissions.add(*Permission.objects.filter(
        content_type__app_label__in=["backups", "workloads"],
        codename__in=["add_backuprecovery", "view_backuprecovery", "view_backuptarget",
                      "add_workload", "restore_workload", "add_project", "add_stage",
                      "deploy_workload"]))
    return user


def test_the_catalogue_lists_copies_without_secret_values(api_as, recoverer, copy_of, identity):
    row, _volume = copy_of
    secret = row.workload.env_vars.model(workload=row.workload, name="TOKEN")
    secret.set_value("never-in-the-api", secret=True)
    secret.save()
    # A second copy, whose sidecar carries the secret (encrypted).
    again = copied(row.snapshot, BackupTarget.objects.get(pk=row.target_id))
    response = api_as(recoverer).post(f"/api/backup-targets/{row.target_id}/catalogue",
                                      {"identity": str(identity)}, format="json")
    assert response.status_code == 200, response.content
    assert b"never-in-the-api" not in response.content
    assert str(identity).encode() not in response.content
    entries = {e["key"]: e for e in response.json()}
    assert set(entries) == {row.remote_key, again.remote_key}
    entry = entries[again.remote_key]
    assert entry["snapshot"]["sha256"] == row.snapshot.sha256
    assert {"name": "TOKEN", "secret": True, "value": None} in entry["definition"]["env"]


def test_recovery_through_the_api_onto_an_existing_workload(api_as, recoverer, copy_of,
                                                          identity):
    row, volume = copy_of
    before = describe(volume)
    fill(volume, {"index.html": b"damaged"})
    client = api_as(recoverer)
    body = {"key": row.remote_key, "identity": str(identity), "workload": row.workload_id}
    url = f"/api/backup-targets/{row.target_id}/recover"

    refused = client.post(url, body, format="json")
    assert refused.status_code == 428, refused.content
    assert BackupRecovery.objects.count() == 0

    response = client.post(url, body, format="json", HTTP_X_CONFIRM_RESTORE=row.workload.path)
    assert response.status_code == 202, response.content
    assert str(identity).encode() not in response.content
    done = client.get(response["Location"]).json()
    assert done["state"] == "succeeded", done
    assert done["into"] == row.workload_id and done["restore"]
    assert describe(volume) == before
    assert BackupRecovery.objects.get().identity_encrypted == ""  # erased once ended


def test_a_workload_that_exists_is_409_and_a_wrong_identity_400(api_as, recoverer, copy_of):
    from pyrage import x25519

    row, _volume = copy_of
    client = api_as(recoverer)
    url = f"/api/backup-targets/{row.target_id}/recover"
    response = client.post(url, {"key": row.remote_key,
                                 "identity": str(x25519.Identity.generate())}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "wrong_identity"
    response = client.post(url, {"key": row.remote_key, "identity": "not a key"}, format="json")
    assert response.status_code == 400 and response.json()["code"] == "bad_identity"
    assert BackupRecovery.objects.count() == 0


def test_exists_is_409(api_as, recoverer, copy_of, identity):
    row, _volume = copy_of
    response = api_as(recoverer).post(f"/api/backup-targets/{row.target_id}/recover",
                                      {"key": row.remote_key, "identity": str(identity)},
                                      format="json")
    assert response.status_code == 409 and response.json()["code"] == "exists"
    assert BackupRecovery.objects.count() == 0


def test_bad_input_and_permissions(api_as, api, recoverer, operator, copy_of, identity):
    row, _volume = copy_of
    url = f"/api/backup-targets/{row.target_id}/recover"
    assert api.post(url, {"key": row.remote_key}, format="json").status_code in (401, 403)
    assert api_as(operator).post(url, {"key": row.remote_key},
                                 format="json").status_code == 403
    # Recovery's own permission alone does not create or restore workloads.
    narrow = User.objects.create_user("nick-narrow", password="x")
    narrow.user_permissions.add(Permission.objects.get(codename="add_backuprecovery"))
    for body in ({"key": row.remote_key}, {"key": row.remote_key, "workload": row.workload_id}):
        assert api_as(narrow).post(url, body, format="json").status_code == 403
    client = api_as(recoverer)
    assert client.post("/api/backup-targets/999999/recover", {"key": "a"},
                       format="json").status_code == 404
    assert client.post(url, {}, format="json").status_code == 400
    response = client.post(url, {"key": "../x.tar.zst", "identity": str(identity)},
                           format="json")
    assert response.status_code == 400 and response.json()["code"] == "not_a_copy"
    assert client.post(url, {"key": row.remote_key, "workload": 999999},
                       format="json").status_code == 400
    assert client.get("/api/recoveries/999999").status_code == 404
    assert BackupRecovery.objects.count() == 0
    assert Workload.objects.count() == 1 and Project.objects.count() == 1
