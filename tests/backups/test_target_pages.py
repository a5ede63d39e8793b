"""The backup targets page: the list, the Check button, and the add and edit forms.

Real parts: moto's S3 server for the check; the forms go through the same
edit as the admin and the API (backups/edits.py).
"""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from backups.models import BackupTarget
from lib import crypto
from tests.backups.conftest import S3_ENDPOINT, S3_KEY_ID, S3_SECRET, s3_target
from tests.backups.test_copy_panel import copy_user, small_snapshot

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}
LIST = "/backups/targets/"


def with_perms(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="correct horse battery")
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="backups",
                                                         codename__in=codenames))
    return user


@pytest.fixture
def keeper(db) -> User:
    """Every permission on backup targets, and no other."""
    return with_perms("kira-keeper", "view_backuptarget", "add_backuptarget",
                      "change_backuptarget", "delete_backuptarget")


@pytest.fixture
def looker(db) -> User:
    """May see the targets, not change them."""
    return with_perms("lev-looker", "view_backuptarget")


def as_user(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def form_data(bucket: str, recipient: str, **overrides) -> dict:
    """What the add/edit form posts for an S3 target (a checkbox left out is off)."""
    return {
        "name": f"offsite-{uuid.uuid4().hex[:6]}", "kind": "s3", "endpoint_url": S3_ENDPOINT,
        "region": "us-east-1", "bucket": bucket, "prefix": "berth/prod",
        "access_key_id": S3_KEY_ID, "secret_access_key": S3_SECRET, "path_style": "on",
        "directory": "", "recipients": recipient, "identity": "",
    } | overrides


# --- who may do what -----------------------------------------------------------------------

def urls(target: BackupTarget) -> list[tuple[str, str, str]]:
    """(method, URL, the permission it needs) of every page and action."""
    return [
        ("get", LIST, "view"),
        ("get", "/backups/targets/add", "add"),
        ("get", f"/backups/targets/{target.pk}/", "change"),
        ("post", f"/backups/targets/{target.pk}/check", "change"),
    ]


def test_it_sends_anonymous_users_to_the_login_page(recipient):
    target = s3_target("berth-anon", recipient)
    for method, url, _perm in urls(target):
        response = getattr(Client(), method)(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/login/?next="), url
    assert BackupTarget.objects.get().check_code == ""


def test_it_refuses_users_without_the_target_permissions(operator, viewer, recipient):
    """Operators and viewers hold no target permission by default."""
    target = s3_target("berth-perm", recipient)
    for user in (operator, viewer):
        for method, url, _perm in urls(target):
            assert getattr(as_user(user), method)(url).status_code == 403, (user, url)
    assert BackupTarget.objects.get().check_code == ""


def test_a_user_who_may_only_view_sees_the_list_without_buttons(looker, recipient):
    target = s3_target("berth-look", recipient)
    client = as_user(looker)
    html = client.get(LIST).content.decode()
    assert f'id="target-{target.pk}"' in html
    assert "/check" not in html and "/backups/targets/add" not in html
    assert f"/backups/targets/{target.pk}/" not in html
    for method, url, perm in urls(target):
        if perm != "view":
            assert getattr(client, method)(url).status_code == 403, url


def test_the_navigation_links_the_page_for_those_who_may_view_it(looker, operator):
    assert f'href="{LIST}"' in as_user(looker).get(LIST).content.decode()
    assert f'href="{LIST}"' not in as_user(operator).get("/").content.decode()


def test_an_unknown_target_is_404(keeper):
    client = as_user(keeper)
    assert client.get("/backups/targets/999/").status_code == 404
    assert client.post("/backups/targets/999/", {"name": "x"}).status_code == 404
    assert client.post("/backups/targets/999/check", headers=HTMX).status_code == 404


def test_the_check_is_a_post(keeper, recipient):
    target = s3_target("berth-get", recipient)
    assert as_user(keeper).get(f"/backups/targets/{target.pk}/check").status_code == 405


# --- the list and the check ----------------------------------------------------------------

def test_it_lists_each_target_with_its_place_encryption_and_last_check(keeper, recipient,
                                                                       roots):
    encrypted = s3_target("berth-enc", recipient, check_code="ok")
    clear = s3_target("berth-clear", check_code="no_bucket")
    nas = BackupTarget.objects.create(name="nas", kind="directory", directory=str(roots),
                                      recipients=recipient)

    html = as_user(keeper).get(LIST).content.decode()

    assert f"{S3_ENDPOINT} / berth-enc/berth" in html and f"<code>{roots}</code>" in html
    row = html.split(f'id="target-{clear.pk}"')[1].split("</tr>")[0]
    assert 'class="badge warning unencrypted"' in row and "Unencrypted" in row
    assert "no_bucket" in row and "The bucket does not exist." in row
    row = html.split(f'id="target-{encrypted.pk}"')[1].split("</tr>")[0]
    assert "Encrypted" in row and "1 recipient" in row and "unencrypted" not in row
    assert "The target answers: a probe was written, read back and deleted." in row
    row = html.split(f'id="target-{nas.pk}"')[1].split("</tr>")[0]
    assert "Not checked yet" in row


def test_the_list_reads_the_targets_in_one_query(keeper, recipient,
                                                django_assert_num_queries):
    for name in ("a", "b", "c"):
        s3_target(f"berth-{name}", recipient)
    client = as_user(keeper)
    # The session, the user, the user's and its groups' permissions, the targets.
    with django_assert_num_queries(5):
        assert client.get(LIST).status_code == 200


def test_check_probes_the_target_and_answers_with_its_row(keeper, bucket, recipient):
    target = s3_target(bucket, recipient)

    response = as_user(keeper).post(f"/backups/targets/{target.pk}/check", headers=HTMX)

    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith(f'<tr id="target-{target.pk}"')
    assert 'data-check="ok"' in html and "read back and deleted" in html
    target.refresh_from_db()
    assert target.check_code == "ok" and target.checked is not None


def test_a_failed_check_shows_its_fixed_message(keeper, s3_server, recipient):
    target = s3_target("berth-nowhere", recipient)
    html = as_user(keeper).post(f"/backups/targets/{target.pk}/check",
                                headers=HTMX).content.decode()
    assert 'data-check="no_bucket"' in html and "The bucket does not exist." in html
    assert BackupTarget.objects.get().check_code == "no_bucket"


def test_check_without_htmx_goes_back_to_the_list_with_a_message(keeper, bucket, recipient):
    target = s3_target(bucket, recipient)
    response = as_user(keeper).post(f"/backups/targets/{target.pk}/check", follow=True)
    assert response.redirect_chain == [(LIST, 302)]
    assert f"{target.name}: The target answers" in response.content.decode()


# --- adding and editing --------------------------------------------------------------------

def test_it_adds_a_target_with_its_secrets_encrypted(keeper, bucket, recipient, identity):
    data = form_data(bucket, recipient, identity=str(identity))
    response = as_user(keeper).post("/backups/targets/add", data)
    assert response.status_code == 302 and response["Location"] == LIST
    target = BackupTarget.objects.get()
    assert (target.name, target.bucket, target.prefix) == (data["name"], bucket, "berth/prod")
    assert target.get_secret_access_key() == S3_SECRET
    assert S3_SECRET not in target.secret_access_key_encrypted
    assert target.get_identity() == str(identity)


def test_an_invalid_form_shows_its_errors_and_saves_nothing(keeper, recipient):
    client = as_user(keeper)
    response = client.post("/backups/targets/add", form_data("", "", secret_access_key=""))
    html = response.content.decode()
    assert response.status_code == 200
    assert "Nothing was saved" in html
    assert "An S3 target needs a bucket." in html
    assert "An S3 target needs a secret access key." in html
    assert "Add at least one recipient, or mark the target unencrypted." in html
    assert not BackupTarget.objects.exists()


def test_a_directory_outside_the_roots_is_refused(keeper, roots, recipient):
    response = as_user(keeper).post("/backups/targets/add", {
        "name": "nas", "kind": "directory", "directory": "/etc", "recipients": recipient})
    assert "BERTH_BACKUP_DIRECTORY_ROOTS" in response.content.decode()
    assert not BackupTarget.objects.exists()


def test_an_empty_secret_keeps_the_stored_one_and_the_identity_can_be_forgotten(
    keeper, bucket, recipient, identity
):
    target = s3_target(bucket, recipient, name="offsite")
    target.set_identity(str(identity))
    target.save()
    client = as_user(keeper)
    page = client.get(f"/backups/targets/{target.pk}/").content.decode()
    assert "A secret access key is stored." in page and "An age identity is stored." in page

    response = client.post(f"/backups/targets/{target.pk}/", form_data(
        bucket, recipient, name="renamed", secret_access_key="", forget_identity="on"))

    assert response.status_code == 302
    target.refresh_from_db()
    assert target.name == "renamed" and target.get_secret_access_key() == S3_SECRET
    assert not target.has_identity


def test_a_moved_bucket_needs_the_secret_again_and_nothing_changes(keeper, bucket, recipient):
    target = s3_target(bucket, recipient, name="offsite", check_code="ok")
    response = as_user(keeper).post(f"/backups/targets/{target.pk}/", form_data(
        "berth-elsewhere", recipient, name="offsite", secret_access_key=""))
    assert "Give the secret access key again" in response.content.decode()
    target.refresh_from_db()
    assert (target.bucket, target.check_code) == (bucket, "ok")


def test_an_edit_saves_only_what_it_changed(keeper, bucket, recipient):
    """A check recorded while the form was open is kept (the edit renamed only)."""
    target = s3_target(bucket, recipient, name="offsite", check_code="ok")
    response = as_user(keeper).post(f"/backups/targets/{target.pk}/", form_data(
        bucket, recipient, name="renamed", prefix="berth", secret_access_key=""))
    assert response.status_code == 302
    target.refresh_from_db()
    assert (target.name, target.check_code) == ("renamed", "ok")


# --- secrets never shown -------------------------------------------------------------------

def test_no_page_shows_a_stored_or_typed_secret(keeper, bucket, recipient, identity,
                                                make_workload):
    target = s3_target(bucket, recipient, name="offsite")
    target.set_identity(str(identity))
    target.save()
    snapshot = small_snapshot(make_workload())
    client = as_user(keeper)
    typed_key, typed_identity = "typed-s3cret-51f0", str(type(identity).generate())
    bodies = [
        client.get(LIST),
        client.get("/backups/targets/add"),
        client.get(f"/backups/targets/{target.pk}/"),
        client.post(f"/backups/targets/{target.pk}/check", headers=HTMX),
        # Invalid edits come back with their errors, never with what was typed.
        client.post(f"/backups/targets/{target.pk}/", form_data(
            "", recipient, secret_access_key=typed_key, identity=typed_identity)),
        client.post("/backups/targets/add", form_data(
            bucket, f"{recipient}\n{identity}", secret_access_key=typed_key)),
        as_user(copy_user()).get(f"/workloads/{snapshot.workload_id}/"),
    ]
    assert [b.status_code for b in bodies] == [200] * len(bodies)
    for response in bodies:
        html = response.content.decode()
        for secret in (S3_SECRET, str(identity), typed_key, typed_identity,
                       crypto.decrypt(target.secret_access_key_encrypted)):
            assert secret not in html
        assert target.secret_access_key_encrypted not in html
        assert target.identity_encrypted not in html
    assert "A private identity (AGE-SECRET-KEY-1...) was pasted here" in bodies[5].content.decode()
    assert BackupTarget.objects.count() == 1
