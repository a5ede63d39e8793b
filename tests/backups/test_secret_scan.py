"""A scan: after the whole offsite flow, no secret is anywhere it must not be.

The flow configures a target (secret access key, stored identity, a
passphrase) through the API, checks it, copies a snapshot of a workload
that has a secret env value, fails a copy to an unreachable endpoint, reads
the catalogue (with the identity and with the passphrase), recovers through
the API and the pages, and opens the admin. Then every API answer, every
page, every log record (DEBUG and up, boto's included) and every cell of
every table, sessions decoded, is searched for the S3 secret, the age
identity, the passphrase and the secret env value. Real parts: moto's S3
server, PostgreSQL or SQLite, Docker for the restore.
"""

from __future__ import annotations

import logging

import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session

from backups.models import BackupTarget, SnapshotCopy
from engine import captures
from tests.backups.conftest import S3_ENDPOINT, S3_KEY_ID, S3_SECRET, copied
from tests.snapshots.conftest import add_volume, fill
from tests.workloads.test_secrets import tables_containing

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]

ENV_SECRET = "env-secret-4f1c-never-shown"
PASSPHRASE = "passphrase-9d2e-never-kept"


def test_no_secret_reaches_the_database_the_api_a_page_or_a_log(
    client, api_as, make_workload, bucket, identity, recipient, caplog
):
    caplog.set_level(logging.DEBUG)
    admin = User.objects.create_superuser("ada-admin", password="x")
    api = api_as(admin)
    client.force_login(admin)
    secrets = [S3_SECRET, str(identity), ENV_SECRET, PASSPHRASE]
    seen: list[str] = []

    def keep(response) -> dict | list | None:
        seen.append(response.content.decode())
        assert response.status_code < 500, response.content
        return response.json() if response.get("Content-Type", "").startswith(
            "application/json") else None

    target = keep(api.post("/api/backup-targets", {
        "name": "offsite", "kind": "s3", "endpoint_url": S3_ENDPOINT, "region": "us-east-1",
        "bucket": bucket, "prefix": "berth", "access_key_id": S3_KEY_ID,
        "secret_access_key": S3_SECRET, "recipients": recipient, "identity": str(identity),
    }, format="json"))
    keep(api.post(f"/api/backup-targets/{target['id']}/passphrase",
                  {"passphrase": PASSPHRASE}, format="json"))
    keep(api.get("/api/backup-targets"))
    keep(api.post(f"/api/backup-targets/{target['id']}/check"))

    workload = make_workload()
    env = workload.env_vars.model(workload=workload, name="TOKEN")
    env.set_value(ENV_SECRET, secret=True)
    env.save()
    fill(add_volume(workload, "data", "/data"), {"a.txt": b"a"})
    snapshot = captures.capture_snapshot(workload=workload)
    row = copied(snapshot, BackupTarget.objects.get(pk=target["id"]))
    assert row.state == SnapshotCopy.State.VERIFIED, row.failure_code
    keep(api.get(f"/api/workloads/{workload.pk}/snapshots/{snapshot.pk}/copies"))

    # A target that cannot be reached, with the same secret: its failure is logged.
    down = BackupTarget(name="down", kind="s3", endpoint_url="http://127.0.0.1:9",
                        region="us-east-1", bucket=bucket, access_key_id=S3_KEY_ID,
                        recipients=recipient)
    down.set_secret_access_key(S3_SECRET)
    down.save()
    assert copied(snapshot, down).state == SnapshotCopy.State.FAILED

    # The catalogue and a recovery through the API, with the identity in the body ...
    keep(api.post(f"/api/backup-targets/{target['id']}/catalogue",
                  {"identity": str(identity)}, format="json"))
    recovery = keep(api.post(f"/api/backup-targets/{target['id']}/recover",
                             {"key": row.remote_key, "identity": str(identity),
                              "workload": workload.pk}, format="json",
                             HTTP_X_CONFIRM_RESTORE=workload.path))
    assert keep(api.get(recovery["url"]))["state"] == "succeeded"
    keep(api.post(f"/api/backup-targets/{target['id']}/catalogue",
                  {"passphrase": PASSPHRASE}, format="json"))
    keep(api.post(f"/api/backup-targets/{target['id']}/catalogue",
                  {"passphrase": "a wrong passphrase, long enough"}, format="json"))
    # ... and through the pages, with the identity kept in the session.
    keep(client.post("/backups/recover/", {"target": target["id"],
                                           "identity": str(identity)}))
    keep(client.post("/backups/recover/", {"target": target["id"], "passphrase": PASSPHRASE}))
    keep(client.get("/backups/recover/"))
    keep(client.get(f"/backups/recoveries/{recovery['id']}/"))
    keep(client.get(f"/workloads/{workload.pk}/"))
    for page in (f"/admin/backups/backuptarget/{target['id']}/change/",
                 "/admin/backups/backuptarget/", "/admin/backups/snapshotcopy/",
                 f"/admin/backups/backuprecovery/{recovery['id']}/change/"):
        keep(client.get(page))

    logs = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    sessions = " ".join(str(s.get_decoded()) for s in Session.objects.all())
    for secret in secrets:
        assert not [text for text in seen if secret in text], secret
        assert secret not in logs, secret
        assert secret not in sessions, secret
        assert tables_containing(secret) == [], secret
    assert len(seen) >= 12 and "copied to target" in logs  # the scan saw the flow
