"""Backup targets: configured through the API and the admin, checked against real parts.

The S3 server is moto's, spoken to over HTTP; directory targets are real
directories, a full one a small tmpfs.
"""

from __future__ import annotations

import io
import logging
import os
import uuid
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User

from backups.models import BackupTarget
from tests.backups.conftest import S3_ENDPOINT, S3_KEY_ID, S3_SECRET, objects
from tests.workloads.test_secrets import tables_containing

pytestmark = pytest.mark.django_db

URL = "/api/backup-targets"
# What the admin's form sends for the keep counts when nobody changes them.
KEEP = {"keep_manual": 10, "keep_pre_deploy": 5, "keep_pre_restore": 5, "keep_scheduled": 30,
        "keep_imported": 5}


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
        "recipients": recipient, "identity": "", **KEEP,
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


# --- the adversarial review's findings -----------------------------------------------------

def test_a_directory_swapped_for_a_symlink_after_saving_is_refused_at_use(
    api_as, keeper, roots, recipient, settings
):
    share = roots / "berth"
    share.mkdir()
    api = api_as(keeper)
    body = create(api, directory_payload(share, recipient))
    victim = settings.DATA_DIR / "victim"
    victim.mkdir()
    share.rmdir()
    share.symlink_to(victim)

    answer = check(api, body["id"])

    assert answer["code"] == "not_allowed"
    assert list(victim.iterdir()) == []


def test_a_symlink_below_the_root_is_never_followed(roots, settings):
    from lib import offsite

    (roots / "berth").mkdir()
    victim = settings.DATA_DIR / "victim"
    victim.mkdir()
    (roots / "berth" / "sub").symlink_to(victim)
    store = offsite.DirectoryStore(roots / "berth")
    with pytest.raises(offsite.OffsiteError) as refused:
        store.put("sub/x.age", io.BytesIO(b"data"))
    assert refused.value.code == "not_allowed" and list(victim.iterdir()) == []


def test_a_target_whose_root_left_the_settings_is_refused_at_use(api_as, keeper, roots,
                                                                 recipient, settings):
    api = api_as(keeper)
    body = create(api, directory_payload(roots, recipient))
    settings.BERTH_BACKUP_DIRECTORY_ROOTS = []
    assert check(api, body["id"])["code"] == "not_allowed"


def test_backup_directories_and_absolute_volumes_never_overlap(api_as, keeper, roots,
                                                                recipient, settings):
    from django.core.exceptions import ValidationError

    from lib import paths

    settings.BERTH_ABSOLUTE_VOLUME_ROOTS = [str(roots)]
    refused = api_as(keeper).post(URL, directory_payload(roots, recipient), format="json")
    assert refused.status_code == 400
    assert "BERTH_ABSOLUTE_VOLUME_ROOTS" in refused.json()["directory"][0]
    with pytest.raises(ValidationError, match="backup directories"):
        paths.validate_source("absolute", str(roots / "data"))


def test_the_admin_never_renders_an_identity_back(admin_client, bucket, recipient, identity):
    form = {
        "name": "offsite", "kind": "s3", "endpoint_url": S3_ENDPOINT, "region": "us-east-1",
        "bucket": "NOT A BUCKET", "prefix": "", "access_key_id": S3_KEY_ID,
        "secret_access_key": S3_SECRET, "path_style": "on", "directory": "",
        "recipients": recipient, "identity": str(identity),
    }
    page = admin_client.post("/admin/backups/backuptarget/add/", form).content.decode()
    assert "errornote" in page and str(identity) not in page and S3_SECRET not in page

    pasted = admin_client.post("/admin/backups/backuptarget/add/",
                               form | {"bucket": bucket, "recipients": str(identity),
                                       "identity": ""}).content.decode()
    assert "was pasted here" in pasted and str(identity) not in pasted
    assert not BackupTarget.objects.exists()


def test_the_secret_is_not_in_the_locations_repr():
    from lib import offsite

    location = offsite.S3Location(endpoint_url=S3_ENDPOINT, region="", bucket="b", prefix="",
                                  access_key_id=S3_KEY_ID, secret_access_key=S3_SECRET)
    assert S3_SECRET not in repr(location)


@pytest.mark.parametrize(("overrides", "field"), [
    ({"region": "eu central 1"}, "region"),
    ({"endpoint_url": "http://user:pass@127.0.0.1:5002"}, "endpoint_url"),
    ({"endpoint_url": "http://127.0.0.1:5002/?x=1"}, "endpoint_url"),
])
def test_a_bad_region_or_credentials_in_the_url_are_refused(api_as, keeper, bucket, recipient,
                                                            overrides, field):
    response = api_as(keeper).post(URL, s3_payload(bucket, recipient, **overrides),
                                   format="json")
    assert response.status_code == 400 and field in response.json()
    assert "pass@" not in response.content.decode()


def test_a_single_label_endpoint_host_is_accepted(api_as, keeper, bucket, recipient):
    body = create(api_as(keeper), s3_payload(bucket, recipient,
                                             endpoint_url="http://minio:9000"))
    assert body["endpoint_url"] == "http://minio:9000"


def test_an_unreadable_secret_is_a_code_not_a_500(api_as, keeper, bucket, recipient):
    api = api_as(keeper)
    body = create(api, s3_payload(bucket, recipient))
    BackupTarget.objects.update(secret_access_key_encrypted="gAAAAA-not-a-token")
    assert check(api, body["id"])["code"] == "unreadable_secret"


def test_any_unexpected_error_of_the_check_is_internal_and_logged_redacted(
    api_as, keeper, bucket, recipient, monkeypatch, caplog
):
    from lib import offsite

    def broken(store):
        raise RuntimeError(f"boom with {S3_SECRET}")

    monkeypatch.setattr(offsite, "check", broken)
    api = api_as(keeper)
    body = create(api, s3_payload(bucket, recipient))
    with caplog.at_level(logging.WARNING):
        assert check(api, body["id"])["code"] == "internal"
    assert "boom" in caplog.text and S3_SECRET not in caplog.text


def test_switching_to_a_directory_forgets_the_s3_secret(api_as, keeper, bucket, recipient,
                                                       roots):
    api = api_as(keeper)
    body = create(api, s3_payload(bucket, recipient))
    response = api.patch(f"{URL}/{body['id']}", {"kind": "directory", "directory": str(roots)},
                         format="json")
    assert response.status_code == 200, response.content
    assert response.json()["has_secret_access_key"] is False
    assert response.json()["bucket"] == "" and response.json()["access_key_id"] == ""


def test_a_new_endpoint_or_bucket_needs_the_secret_again(api_as, keeper, bucket, recipient):
    api = api_as(keeper)
    body = create(api, s3_payload(bucket, recipient))
    moved = api.patch(f"{URL}/{body['id']}", {"endpoint_url": "http://127.0.0.1:9"},
                      format="json")
    assert moved.status_code == 400 and "secret_access_key" in moved.json()
    assert BackupTarget.objects.get().endpoint_url == S3_ENDPOINT
    again = api.patch(f"{URL}/{body['id']}", {"bucket": "other-bucket",
                                               "secret_access_key": "another"}, format="json")
    assert again.status_code == 200


def test_a_moved_target_is_unchecked_and_an_edit_keeps_a_check_made_meanwhile(
    api_as, keeper, bucket, recipient, monkeypatch
):
    from web.api.backups import BackupTargetSerializer

    api = api_as(keeper)
    body = create(api, s3_payload(bucket, recipient))
    assert check(api, body["id"])["code"] == "ok"
    api.patch(f"{URL}/{body['id']}", {"prefix": "elsewhere"}, format="json")
    assert BackupTarget.objects.get().check_code == ""

    real = BackupTargetSerializer.update

    def check_lands_meanwhile(self, instance, validated_data):
        BackupTarget.objects.filter(pk=instance.pk).update(check_code="no_write")
        return real(self, instance, validated_data)

    monkeypatch.setattr(BackupTargetSerializer, "update", check_lands_meanwhile)
    assert api.patch(f"{URL}/{body['id']}", {"name": "renamed"},
                     format="json").status_code == 200
    target = BackupTarget.objects.get()
    assert (target.name, target.check_code) == ("renamed", "no_write")


def test_a_stored_identity_must_open_the_targets_copies(api_as, keeper, bucket, recipient):
    from pyrage import x25519

    api = api_as(keeper)
    stranger = x25519.Identity.generate()
    response = api.post(URL, s3_payload(bucket, recipient, identity=str(stranger)),
                        format="json")
    assert response.status_code == 400 and "does not belong" in response.json()["identity"][0]
    clear = api.post(URL, s3_payload(bucket, "", unencrypted=True, identity=str(stranger)),
                     format="json")
    assert clear.status_code == 400 and "identity" in clear.json()


def test_an_identity_in_a_recipients_comment_is_refused(api_as, keeper, bucket, recipient,
                                                        identity):
    response = api_as(keeper).post(
        URL, s3_payload(bucket, f"# {identity}\n{recipient}"), format="json")
    assert response.status_code == 400 and str(identity) not in response.content.decode()


def test_each_stored_identity_is_redacted_on_its_own(identity):
    from pyrage import x25519

    other = x25519.Identity.generate()
    target = BackupTarget(recipients=f"{identity.to_public()}\n{other.to_public()}")
    target.set_identity(f"{identity}\n{other}")
    assert {str(identity), str(other)} <= set(target.secret_values())


def test_a_failed_delete_does_not_hide_why_the_probe_failed(tmp_path):
    """Stand-ins for a store whose read and delete both fail: no real target fails in
    exactly that order on purpose."""
    from lib import offsite

    class Failing(offsite.DirectoryStore):
        def open(self, name):
            raise offsite.OffsiteError("no_read")

        def delete(self, name):
            raise offsite.OffsiteError("no_delete")

    tmp_path.joinpath("t").mkdir()
    with pytest.raises(offsite.OffsiteError) as failed:
        offsite.check(Failing(tmp_path / "t"))
    assert failed.value.code == "no_read"


# --- the second review's findings ----------------------------------------------------------

def test_an_admin_edit_measures_a_move_against_what_it_loaded(admin_client, bucket, recipient,
                                                              monkeypatch):
    """Another edit commits between the admin's form and its save: the stored secret must
    not go to the endpoint the admin asked for without giving it again."""
    from web.admin.backups import BackupTargetForm

    target = BackupTarget(name="offsite", kind="s3", endpoint_url=S3_ENDPOINT,
                          region="us-east-1", bucket=bucket, access_key_id=S3_KEY_ID,
                          recipients=recipient)
    target.set_secret_access_key(S3_SECRET)
    target.save()
    real = BackupTargetForm._post_clean

    def another_edit_first(form):
        BackupTarget.objects.filter(pk=target.pk).update(endpoint_url="http://evil.example:9000")
        real(form)

    monkeypatch.setattr(BackupTargetForm, "_post_clean", another_edit_first)
    response = admin_client.post(f"/admin/backups/backuptarget/{target.pk}/change/", {
        "name": "offsite", "kind": "s3", "endpoint_url": "http://evil.example:9000",
        "region": "us-east-1", "bucket": bucket, "prefix": "", "access_key_id": S3_KEY_ID,
        "secret_access_key": "", "path_style": "on", "directory": "",
        "recipients": recipient, "identity": "",
    })
    assert response.status_code == 200  # refused: give the secret again
    assert "Give the secret access key again" in response.content.decode()


def test_a_check_finishing_after_a_move_is_not_recorded_on_the_new_place(
    api_as, keeper, bucket, recipient
):
    from engine import backups as engine_backups

    api = api_as(keeper)
    body = create(api, s3_payload(bucket, recipient))
    loaded = BackupTarget.objects.get(pk=body["id"])  # the check's copy, taken before the move
    api.patch(f"{URL}/{body['id']}", {"prefix": "elsewhere"}, format="json")
    assert engine_backups.check_target(loaded).ok
    assert BackupTarget.objects.get().check_code == ""


def test_a_new_secret_unchecks_the_target(api_as, keeper, bucket, recipient):
    api = api_as(keeper)
    body = create(api, s3_payload(bucket, recipient))
    assert check(api, body["id"])["ok"]
    api.patch(f"{URL}/{body['id']}", {"secret_access_key": "rotated"}, format="json")
    assert BackupTarget.objects.get().check_code == ""


def test_the_admin_keeps_a_check_made_meanwhile(admin_client, bucket, recipient, monkeypatch):
    from web.admin.backups import BackupTargetForm

    target = BackupTarget(name="offsite", kind="s3", endpoint_url=S3_ENDPOINT,
                          region="us-east-1", bucket=bucket, access_key_id=S3_KEY_ID,
                          recipients=recipient, check_code="ok")
    target.set_secret_access_key(S3_SECRET)
    target.save()
    real = BackupTargetForm._post_clean

    def check_lands_meanwhile(form):
        real(form)
        BackupTarget.objects.filter(pk=target.pk).update(check_code="no_write")

    monkeypatch.setattr(BackupTargetForm, "_post_clean", check_lands_meanwhile)
    response = admin_client.post(f"/admin/backups/backuptarget/{target.pk}/change/", {
        "name": "renamed", "kind": "s3", "endpoint_url": S3_ENDPOINT, "region": "us-east-1",
        "bucket": bucket, "prefix": "", "access_key_id": S3_KEY_ID, "secret_access_key": "",
        "path_style": "on", "directory": "", "recipients": recipient, "identity": "", **KEEP,
    })
    assert response.status_code == 302
    target.refresh_from_db()
    assert (target.name, target.check_code) == ("renamed", "no_write")


def test_an_unparseable_endpoint_in_an_edit_is_a_400(api_as, keeper, bucket, recipient):
    api = api_as(keeper)
    body = create(api, s3_payload(bucket, recipient))
    response = api.patch(f"{URL}/{body['id']}", {"endpoint_url": "http://[::1"}, format="json")
    assert response.status_code == 400


@pytest.mark.parametrize("path", ["/proc/1/cwd", "/proc/self/cwd", "/proc/self/fd/0"])
def test_a_directory_outside_the_roots_is_refused_without_resolving_it(api_as, keeper, roots,
                                                                      recipient, path):
    response = api_as(keeper).post(URL, directory_payload(path, recipient), format="json")
    assert response.status_code == 400
    assert "BERTH_BACKUP_DIRECTORY_ROOTS" in response.json()["directory"][0]


def test_a_symlinked_directory_is_refused_without_showing_where_it_leads(api_as, keeper, roots,
                                                                         recipient, settings):
    (roots / "link").symlink_to(settings.DATA_DIR)
    response = api_as(keeper).post(URL, directory_payload(roots / "link", recipient),
                                   format="json")
    assert response.status_code == 400
    assert str(settings.DATA_DIR) not in response.content.decode()


def test_a_directory_is_stored_normalised(api_as, keeper, roots, recipient):
    (roots / "b").mkdir()
    body = create(api_as(keeper), directory_payload(f"{roots}//b/./", recipient))
    assert body["directory"] == str(roots / "b")


def test_an_unreadable_stored_identity_is_a_field_error(api_as, keeper, bucket, recipient,
                                                        identity):
    api = api_as(keeper)
    body = create(api, s3_payload(bucket, recipient, identity=str(identity)))
    BackupTarget.objects.update(identity_encrypted="gAAAAA-not-a-token")
    response = api.patch(f"{URL}/{body['id']}", {"prefix": "x"}, format="json")
    assert response.status_code == 400 and "cannot be decrypted" in response.json()["identity"][0]
    assert api.patch(f"{URL}/{body['id']}", {"identity": ""}, format="json").status_code == 200


def test_forgetting_and_giving_an_identity_at_once_is_refused(admin_client, bucket, recipient,
                                                              identity):
    response = admin_client.post("/admin/backups/backuptarget/add/", {
        "name": "offsite", "kind": "s3", "endpoint_url": S3_ENDPOINT, "region": "us-east-1",
        "bucket": bucket, "prefix": "", "access_key_id": S3_KEY_ID,
        "secret_access_key": S3_SECRET, "path_style": "on", "directory": "",
        "recipients": recipient, "identity": str(identity), "forget_identity": "on",
    })
    assert response.status_code == 200 and "not both" in response.content.decode()
    assert not BackupTarget.objects.exists()


def test_an_uppercase_recipient_matches_its_identity(api_as, keeper, bucket, recipient,
                                                     identity):
    body = create(api_as(keeper), s3_payload(bucket, recipient.upper(), identity=str(identity)))
    assert body["has_identity"] is True


def test_a_fifo_in_the_share_is_refused_not_waited_on(roots):
    from lib import offsite

    os.mkfifo(roots / "pipe")
    with pytest.raises(offsite.OffsiteError) as refused:
        offsite.DirectoryStore(roots).open("pipe")
    assert refused.value.code == "not_allowed"
    assert offsite.DirectoryStore(roots).names() == []


# --- a server that checks keys ---------------------------------------------------------------

def auth_payload(s3_auth: dict, recipient: str, user: str = "berth", **overrides) -> dict:
    return {"name": f"auth-{uuid.uuid4().hex[:6]}", "kind": "s3",
            "endpoint_url": s3_auth["endpoint"], "region": "us-east-1",
            "bucket": s3_auth["bucket"], "prefix": f"t-{uuid.uuid4().hex[:6]}",
            "access_key_id": s3_auth[user]["id"], "secret_access_key": s3_auth[user]["secret"],
            "recipients": recipient} | overrides


@pytest.mark.parametrize("overrides", [
    {"secret_access_key": "not-the-secret"},
    {"access_key_id": "AKIANOSUCHKEY0000000"},
])
def test_a_wrong_key_is_named_as_such(api_as, keeper, s3_auth, recipient, overrides, caplog):
    api = api_as(keeper)
    body = create(api, auth_payload(s3_auth, recipient, **overrides))
    with caplog.at_level(logging.WARNING):
        answer = check(api, body["id"])
    assert (answer["code"], answer["message"]) == (
        "authentication", "The target refused the credentials (wrong access key or secret).")
    assert "not-the-secret" not in caplog.text


def test_the_right_key_passes_and_a_read_only_key_may_not_write(api_as, keeper, s3_auth,
                                                                recipient):
    api = api_as(keeper)
    assert check(api, create(api, auth_payload(s3_auth, recipient))["id"])["code"] == "ok"
    reader = create(api, auth_payload(s3_auth, recipient, user="reader"))
    assert check(api, reader["id"])["code"] == "no_write"
