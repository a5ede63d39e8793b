"""The "Recover from backup" pages, through Django's test client (the browser test is in
tests/browser/test_recovery_flow.py). Real parts: moto's S3 server, Docker for the restore."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.sessions.models import Session

from backups.models import BackupRecovery
from tests.snapshots.conftest import fill
from tests.snapshots.trees import describe

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]


@pytest.fixture
def recoverer(db) -> User:
    user = User.objects.create_user("rita-recoverer", password="x")
    user.user_permissions.add(*Permission.objects.filter(
        content_type__app_label__in=["backups", "workloads"],
        codename__in=["add_backuprecovery", "view_backuprecovery", "add_workload",
                      "restore_workload", "view_workload", "add_project", "add_stage",
                      "deploy_workload"]))
    return user


def test_only_who_may_recover_sees_the_pages(client, operator):
    assert client.get("/backups/recover/").status_code == 302  # to the login page
    client.force_login(operator)
    assert client.get("/backups/recover/").status_code == 403
    assert client.post("/backups/recover/start", {"target": 1, "key": "a"}).status_code == 403
    assert client.get("/backups/recoveries/1/").status_code == 403


def test_the_catalogue_then_a_recovery_onto_the_workload(client, recoverer, copy_of, identity):
    row, volume = copy_of
    before = describe(volume)
    fill(volume, {"index.html": b"damaged"})
    client.force_login(recoverer)

    page = client.post("/backups/recover/", {"target": row.target_id,
                                             "identity": str(identity)})
    assert page.status_code == 200
    body = page.content.decode()
    assert row.remote_key in body and str(identity) not in body
    for session in Session.objects.all():  # kept encrypted, never in clear
        assert str(identity) not in str(session.get_decoded())

    start = {"target": row.target_id, "key": row.remote_key, "into": row.workload_id}
    refused = client.post("/backups/recover/start", start)
    assert "to confirm that its data is replaced" in refused.content.decode()
    assert BackupRecovery.objects.count() == 0

    done = client.post("/backups/recover/start", start | {"confirm": row.workload.path})
    recovery = BackupRecovery.objects.get()
    assert done.status_code == 302 and done["Location"] == f"/backups/recoveries/{recovery.pk}/"
    detail = client.get(done["Location"]).content.decode()
    assert 'data-state="succeeded"' in detail and str(identity) not in detail
    assert describe(volume) == before


def test_bad_input_is_said_and_changes_nothing(client, recoverer, copy_of):
    row, _volume = copy_of
    client.force_login(recoverer)
    no_target = client.post("/backups/recover/", {"target": "999999"})
    assert "Choose a backup target." in no_target.content.decode()
    bad = client.post("/backups/recover/", {"target": row.target_id, "identity": "nonsense"})
    assert "is not an age identity" in bad.content.decode()
    assert "nonsense" not in bad.content.decode().split("</textarea>")[0][-200:]
    # No identity given or kept: each copy says why it cannot be listed.
    plain = client.post("/backups/recover/", {"target": row.target_id}).content.decode()
    assert "give the age identity" in plain
    assert client.post("/backups/recover/start",
                       {"target": "999999", "key": "x"}).status_code == 404
    wrong = client.post("/backups/recover/start", {"target": row.target_id,
                                                   "key": "../../etc/passwd"})
    assert "is not the name of a copy" in wrong.content.decode()
    assert client.get("/backups/recoveries/999999/").status_code == 404
    assert BackupRecovery.objects.count() == 0
