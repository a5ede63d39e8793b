"""Recovery with the target's passphrase alone: set through the API or the command, used by
the API, the command and the pages. Real parts: moto's S3 server, Docker for the restore."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from backups.models import BackupRecovery, BackupTarget
from engine import captures
from tests.backups.conftest import copied, s3_target
from tests.snapshots.conftest import add_volume, fill
from tests.snapshots.trees import describe

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production"),
              pytest.mark.slow]  # scrypt: about a second per seal or open

PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def admin_api(api_as):
    return api_as(User.objects.create_superuser("ada-admin", password="x"))


def test_a_passphrase_set_through_the_api_recovers_a_copy_alone(admin_api, client, bucket,
                                                                  recipient, make_workload):
    target = s3_target(bucket, recipient)
    short = admin_api.post(f"/api/backup-targets/{target.pk}/passphrase",
                           {"passphrase": "short"}, format="json")
    assert short.status_code == 400 and "12" in str(short.json()["passphrase"])
    answer = admin_api.post(f"/api/backup-targets/{target.pk}/passphrase",
                            {"passphrase": PASSPHRASE}, format="json")
    assert answer.status_code == 200, answer.content
    assert PASSPHRASE.encode() not in answer.content
    target.refresh_from_db()
    assert target.passphrase_recipient

    workload = make_workload()
    volume = add_volume(workload, "data", "/data")
    fill(volume, {"a.txt": b"kept"})
    row = copied(captures.capture_snapshot(workload=workload), target)
    before = describe(volume)
    fill(volume, {"a.txt": b"damaged"})

    wrong = admin_api.post(f"/api/backup-targets/{target.pk}/catalogue",
                           {"passphrase": "not the passphrase at all"}, format="json")
    assert wrong.status_code == 400 and wrong.json()["code"] == "wrong_passphrase"
    listed = admin_api.post(f"/api/backup-targets/{target.pk}/catalogue",
                            {"passphrase": PASSPHRASE}, format="json")
    assert [e["key"] for e in listed.json()] == [row.remote_key]

    started = admin_api.post(f"/api/backup-targets/{target.pk}/recover",
                             {"key": row.remote_key, "passphrase": PASSPHRASE,
                              "workload": workload.pk}, format="json",
                             HTTP_X_CONFIRM_RESTORE=workload.path)
    assert started.status_code == 202, started.content
    assert admin_api.get(started["Location"]).json()["state"] == "succeeded"
    assert describe(volume) == before
    recovery = BackupRecovery.objects.get()
    assert recovery.identity_encrypted == ""

    # The pages: the passphrase lists the catalogue; it is never kept, nor shown.
    client.force_login(User.objects.get(username="ada-admin"))
    page = client.post("/backups/recover/", {"target": target.pk, "passphrase": PASSPHRASE})
    assert row.remote_key in page.content.decode() and PASSPHRASE not in page.content.decode()
    assert PASSPHRASE not in str(client.session.items())


def test_the_commands_set_the_passphrase_and_recover_with_it(bucket, recipient, make_workload,
                                                              tmp_path):
    target = s3_target(bucket, recipient)
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    out = io.StringIO()
    call_command("set_backup_passphrase", target.name, "--passphrase-file", str(secret),
                 stdout=out)
    assert "encrypted to age1" in out.getvalue()

    workload = make_workload()
    volume = add_volume(workload, "data", "/data")
    fill(volume, {"a.txt": b"kept"})
    row = copied(captures.capture_snapshot(workload=workload),
                 BackupTarget.objects.get(pk=target.pk))
    before = describe(volume)
    fill(volume, {"a.txt": b"damaged"})

    out = io.StringIO()
    call_command("recover_from_backup", target.name, row.remote_key, "--passphrase-file",
                 str(secret), "--workload", str(workload.pk), "--confirm", workload.path,
                 stdout=out)
    assert "Restored" in out.getvalue()
    assert describe(volume) == before
