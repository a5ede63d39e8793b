"""Backup targets: configured through the API and the admin, checked against real parts.

The S3 server is moto's, spoken to over HTTP; directory targets are real
directories, a full one a small tmpfs.
"""

from __future__ import annotations

import logging
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User

from backups.models import BackupTarget
from tests.backups.conftest import S3_ENDPOINT, S3_KEY_ID, S3_SECRET, objects
from tests.workloads.test_secrets import tables_containing

pytestmark = pytest.mark.django_db

URL = "/api/backup-targets"


@pytest.fixture
def keeper(db) -> User:
    """A user with every permission on backup targets, and no other."""
    user = User.objects.create_user("kira-keeper", password="correct horse battery")
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="backups"))
    return user


def s3_payload(bucket_name: str, recipient: str, **overrides) -> dict:
    return {
        "name": f"offsite-{uuid.uuid4().hex[:6]}", "kind": "s3", "endpoint_url": S3_ENDPOINT,
        "region": "us-east-1", "bucket": bucket_name, "prefix": "berth/prod",
        "access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET,
        "recipients": recipient,
    } | overrides


def create(api, payload: dict) -> dict:
    response = api.post(URL, payload, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def check(api, target_id: int) -> dict:
    response = api.post(f"{URL}/{target_id}/check")
    assert response.status_code == 200, response.content
    return response.json()


# --- configuring -------------------------------------------------------------------------

def test_the_secret_access_key_is_write_only_and_encrypted_at_rest(api_as, keeper, bucket,
                                                                   recipient, identity):
    api = api_as(keeper)
    body = create(api, s3_payload(bucket, recipient, identity=str(identity)))

    assert body["has_secret_access_key"] is True and body["has_identity"] is True
    shown = api.get(f"{URL}/{body['id']}").content.decode() + api.get(URL).content.decode()
    assert S3_SECRET not in shown and str(identity) not in shown
    assert "secret_access_key" not in body and "identity" not in body
    assert tables_containing(S3_SECRET) == [] and tables_containing(str(identity)) == []
    target = BackupTarget.objects.get()
    assert target.get_secret_access_key() == S3_SECRET
    assert target.get_identity() == str(identity)


def test_a_patch_without_the_secret_keeps_it_and_an_empty_identity_forgets_it(
    api_as, keeper, bucket, recipient, identity
):
    api = api_as(keeper)
    body = create(api, s3_payload(bucket, recipient, identity=str(identity)))
    response = api.patch(f"{URL}/{body['id']}", {"prefix": "other", "identity": ""},
                         format="json")
    assert response.status_code == 200, response.content
    target = BackupTarget.objects.get()
    assert (target.prefix, target.get_secret_access_key(), target.has_identity) == (
        "other", S3_SECRET, False)


@pytest.mark.parametrize(("overrides", "field", "words"), [
    ({"recipients": ""}, "recipients", "mark the target unencrypted"),
    ({"recipients": "age1notakey"}, "recipients", "Line 1 is not an age X25519 recipient"),
    ({"bucket": ""}, "bucket", "needs a bucket"),
    ({"secret_access_key": ""}, "secret_access_key", "needs a secret access key"),
    ({"endpoint_url": "ftp://example.com"}, "endpoint_url", "http:// or https://"),
    ({"identity": "AGE-SECRET-KEY-1NOTONE"}, "identity", "not an age identity"),
])
def test_bad_input_is_refused_and_nothing_is_stored(api_as, keeper, bucket, recipient,
                                                    overrides, field, words):
    response = api_as(keeper).post(URL, s3_payload(bucket, recipient, **overrides),
                                   format="json")
    assert response.status_code == 400, response.content
    assert words in " ".join(response.json()[field])
    assert not BackupTarget.objects.exists()


def test_a_private_identity_given_as_a_recipient_is_refused_without_echoing_it(
    api_as, keeper, bucket, identity
):
    response = api_as(keeper).post(URL, s3_payload(bucket, str(identity)), format="json")
    assert response.status_code == 400
    assert "private identity, not a recipient" in response.json()["recipients"][0]
    assert str(identity) not in response.content.decode()


def test_unencrypted_must_be_chosen_and_excludes_recipients(api_as, keeper, bucket, recipient):
    api = api_as(keeper)
    both = api.post(URL, s3_payload(bucket, recipient, unencrypted=True), format="json")
    assert both.status_code == 400 and "unencrypted" in both.json()
    body = create(api, s3_payload(bucket, "", unencrypted=True))
    assert body["unencrypted"] is True and body["recipients"] == ""


@pytest.mark.parametrize("who", ["viewer", "operator", "outsider"])
def test_only_holders_of_the_target_permissions_see_or_change_targets(request, api_as, who,
                                                                      bucket, recipient):
    api = api_as(request.getfixturevalue(who))
    assert api.get(URL).status_code == 403
    assert api.post(URL, s3_payload(bucket, recipient), format="json").status_code == 403
    assert not BackupTarget.objects.exists()


def test_an_unknown_target_is_404(api_as, keeper):
    assert api_as(keeper).post(f"{URL}/999/check").status_code == 404


# --- the check against real parts ----------------------------------------------------------

def test_the_check_writes_reads_back_and_deletes_a_probe(api_as, keeper, bucket, recipient):
    api = api_as(keeper)
    body = create(api, s3_payload(bucket, recipient))

    answer = check(api, body["id"])

    assert answer == {"ok": True, "code": "ok", "message": answer["message"]}
    assert objects(bucket) == []  # the probe is gone again
    target = BackupTarget.objects.get()
    assert target.check_code == "ok" and target.checked is not None


def test_a_missing_bucket_is_named_with_a_fixed_message(api_as, keeper, s3_server, recipient,
                                                        caplog):
    api = api_as(keeper)
    body = create(api, s3_payload("berth-no-such-bucket", recipient))
    with caplog.at_level(logging.WARNING):
        answer = check(api, body["id"])
    assert (answer["ok"], answer["code"]) == (False, "no_bucket")
    assert answer["message"] == "The bucket does not exist."
    assert BackupTarget.objects.get().check_code == "no_bucket"
    assert S3_SECRET not in caplog.text


def test_an_endpoint_nobody_answers_is_unreachable(api_as, keeper, recipient, settings):
    settings.BERTH_BACKUP_TIMEOUT = 2
    api = api_as(keeper)
    body = create(api, s3_payload("bucket", recipient, endpoint_url="http://127.0.0.1:9"))
    answer = check(api, body["id"])
    assert (answer["ok"], answer["code"]) == (False, "unreachable")
    assert "127.0.0.1" not in answer["message"]


# --- directory targets ---------------------------------------------------------------------

@pytest.fixture
def roots(tmp_path, settings) -> Path:
    root = tmp_path / "nas"
    root.mkdir()
    settings.BERTH_BACKUP_DIRECTORY_ROOTS = [str(root)]
    return root


def directory_payload(directory: Path | str, recipient: str) -> dict:
    return {"name": f"nas-{uuid.uuid4().hex[:6]}", "kind": "directory",
            "directory": str(directory), "recipients": recipient}


def test_a_directory_target_is_checked_like_a_bucket(api_as, keeper, roots, recipient):
    (roots / "berth").mkdir()
    api = api_as(keeper)
    body = create(api, directory_payload(roots / "berth", recipient))
    assert check(api, body["id"])["code"] == "ok"
    assert list((roots / "berth").iterdir()) == []


def test_a_directory_outside_the_roots_or_inside_the_data_dir_is_refused(
    api_as, keeper, roots, recipient, settings, tmp_path
):
    api = api_as(keeper)
    outside = api.post(URL, directory_payload(tmp_path / "elsewhere", recipient), format="json")
    assert outside.status_code == 400
    assert "BERTH_BACKUP_DIRECTORY_ROOTS" in outside.json()["directory"][0]

    settings.BERTH_BACKUP_DIRECTORY_ROOTS = [str(settings.DATA_DIR.parent)]
    inside = api.post(URL, directory_payload(settings.DATA_DIR / "backups", recipient),
                      format="json")
    assert inside.status_code == 400
    assert "data directory" in inside.json()["directory"][0]
    assert not BackupTarget.objects.exists()


def test_a_missing_directory_is_named(api_as, keeper, roots, recipient):
    api = api_as(keeper)
    body = create(api, directory_payload(roots / "not-mounted", recipient))
    assert check(api, body["id"])["code"] == "missing_directory"


@pytest.fixture
def small_disk(roots):
    """A 64 KiB tmpfs under the roots, filled up (tmpfs needs root, as Berth's tests run)."""
    mount = roots / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass  # full
        finally:
            os.close(fd)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_target_says_so_and_leaves_nothing(api_as, keeper, small_disk, recipient):
    api = api_as(keeper)
    body = create(api, directory_payload(small_disk, recipient))
    answer = check(api, body["id"])
    assert (answer["code"], answer["message"]) == ("full", "The target is full.")
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


# --- the admin -----------------------------------------------------------------------------

def test_the_admin_stores_the_secret_without_showing_it_and_checks(admin_client, bucket,
                                                                   recipient):
    response = admin_client.post("/admin/backups/backuptarget/add/", {
        "name": "offsite", "kind": "s3", "endpoint_url": S3_ENDPOINT, "region": "us-east-1",
        "bucket": bucket, "prefix": "", "access_key_id": S3_KEY_ID,
        "secret_access_key": S3_SECRET, "path_style": "on", "directory": "",
        "recipients": recipient, "identity": "",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    target = BackupTarget.objects.get()
    page = admin_client.get(f"/admin/backups/backuptarget/{target.pk}/change/")
    assert page.status_code == 200 and S3_SECRET not in page.content.decode()

    answer = admin_client.post("/admin/backups/backuptarget/", {
        "action": "check_targets", "_selected_action": [target.pk]}, follow=True)
    assert "a probe was written, read back and deleted" in answer.content.decode()
    target.refresh_from_db()
    assert target.check_code == "ok"
