"""A snapshot's copies on the workload page's snapshot panel, and its "Copy to…" control.

The copy itself is real (tasks run at once under the test settings): moto's
S3 server receives it and it is read back before it counts as verified.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client

from backups.models import BackupTarget, SnapshotCopy
from snapshots.models import Snapshot
from tests.backups.conftest import S3_SECRET, objects, s3_target
from tests.snapshots.restoring import snapshot_from_bytes
from tests.snapshots.trees import archive_of
from workloads.models import Workload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]
HTMX = {"HX-Request": "true"}


def small_snapshot(workload: Workload) -> Snapshot:
    """A ready snapshot of one small volume (its archive is real, its volume is not the
    workload's: copies never look at the volumes)."""
    with tempfile.TemporaryDirectory() as volume:
        (Path(volume) / "index.html").write_bytes(b"<h1>kept offsite</h1>")
        archive = archive_of([volume])
    volumes = [{"scope": "absolute", "source": "/v", "target": "/v", "bytes": len(archive),
                "files": 1}]
    return snapshot_from_bytes(workload, archive, {"volumes": volumes})


def copy_user(username: str = "cora-copier", *codenames: str) -> User:
    """An operator who may also see and queue copies (or only what `codenames` name)."""
    user = User.objects.create_user(username, password="correct horse battery")
    user.groups.add(Group.objects.get(name="operators"))
    user.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="backups",
        codename__in=codenames or ("view_snapshotcopy", "add_snapshotcopy")))
    return user


def as_user(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def snapshot(make_workload) -> Snapshot:
    return small_snapshot(make_workload())


def copy_url(snapshot: Snapshot) -> str:
    return f"/workloads/{snapshot.workload_id}/snapshots/{snapshot.pk}/copy"


def panel(client: Client, snapshot: Snapshot):
    return client.get(f"/workloads/{snapshot.workload_id}/snapshots", headers=HTMX)


def test_copy_to_queues_a_copy_that_is_verified_and_shown(snapshot, bucket, recipient):
    target = s3_target(bucket, recipient, name="offsite")

    response = as_user(copy_user()).post(copy_url(snapshot), {"target": target.pk},
                                         headers=HTMX)

    assert response.status_code == 200
    row = SnapshotCopy.objects.get()
    assert (row.snapshot, row.target, row.state) == (snapshot, target, "verified")
    assert row.user.username == "cora-copier"
    assert f"berth/{row.remote_key}" in objects(bucket)
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="snapshots"')
    assert f'data-copy="{row.pk}" data-state="verified"' in html
    assert "Copy to offsite:" in html and "read back and verified" in html
    assert S3_SECRET not in html


def test_a_refused_copy_is_said_and_nothing_is_queued(snapshot, bucket, recipient):
    target = s3_target(bucket, recipient)
    SnapshotCopy.objects.create(snapshot=snapshot, workload=snapshot.workload, target=target,
                                state=SnapshotCopy.State.UPLOADING)
    html = as_user(copy_user()).post(copy_url(snapshot), {"target": target.pk},
                                     headers=HTMX).content.decode()
    assert 'class="banner error" role="alert"' in html
    assert "A copy of this snapshot to this target is already under way." in html
    assert SnapshotCopy.objects.count() == 1


def test_only_a_ready_snapshot_is_copied(snapshot, bucket, recipient):
    target = s3_target(bucket, recipient)
    queued = Snapshot.objects.create(workload=snapshot.workload)
    html = as_user(copy_user()).post(copy_url(queued), {"target": target.pk},
                                     headers=HTMX).content.decode()
    assert "Only a ready snapshot can be copied." in html
    assert not SnapshotCopy.objects.exists()


def test_bad_input_changes_nothing(snapshot, bucket, recipient):
    target = s3_target(bucket, recipient)
    client = as_user(copy_user())
    for data in ({}, {"target": 999}, {"target": "x"}):
        html = client.post(copy_url(snapshot), data, headers=HTMX).content.decode()
        assert "Choose a backup target to copy the snapshot to." in html, data
    other = f"/workloads/{snapshot.workload_id}/snapshots/999/copy"
    assert client.post(other, {"target": target.pk}, headers=HTMX).status_code == 404
    assert client.post(f"/workloads/999/snapshots/{snapshot.pk}/copy",
                       {"target": target.pk}, headers=HTMX).status_code == 404
    assert client.get(copy_url(snapshot)).status_code == 405
    assert not SnapshotCopy.objects.exists()


def test_who_may_copy(snapshot, bucket, recipient, operator):
    target = s3_target(bucket, recipient)
    response = Client().post(copy_url(snapshot), {"target": target.pk})
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    # An operator may snapshot and restore, not copy off the host.
    assert as_user(operator).post(copy_url(snapshot), {"target": target.pk}).status_code == 403
    viewer_of_copies = copy_user("vic-copies", "view_snapshotcopy")
    assert as_user(viewer_of_copies).post(copy_url(snapshot),
                                          {"target": target.pk}).status_code == 403
    assert not SnapshotCopy.objects.exists()


def test_copies_show_only_to_those_who_may_see_them_and_copy_to_to_those_who_may_copy(
    snapshot, bucket, recipient, operator
):
    target = s3_target(bucket, recipient, name="vault-7")
    SnapshotCopy.objects.create(snapshot=snapshot, workload=snapshot.workload, target=target,
                                state=SnapshotCopy.State.VERIFIED)
    page = f"/workloads/{snapshot.workload_id}/"

    html = as_user(operator).get(page).content.decode()
    assert "vault-7" not in html and "Copy to" not in html

    html = as_user(copy_user("vic-copies", "view_snapshotcopy")).get(page).content.decode()
    assert "Copy to vault-7:" in html and 'class="copy-to"' not in html

    html = as_user(copy_user()).get(page).content.decode()
    assert 'class="copy-to"' in html and f'<option value="{target.pk}">vault-7' in html


def test_an_uploading_copy_shows_its_progress_and_the_panel_polls_until_it_ends(
    snapshot, bucket, recipient
):
    target = s3_target(bucket, recipient, name="offsite")
    row = SnapshotCopy.objects.create(snapshot=snapshot, workload=snapshot.workload,
                                      target=target, state=SnapshotCopy.State.UPLOADING,
                                      bytes_done=300, bytes_total=400)
    client = as_user(copy_user())

    response = panel(client, snapshot)
    html = response.content.decode()
    assert response.status_code == 200 and 'hx-trigger="every 1s"' in html
    assert '<progress value="75" max="100">75%</progress>' in html
    # The snapshot is not deleted from under its copy.
    assert 'class="danger" disabled' in html.split(f'id="snapshot-delete-{snapshot.pk}"')[0]

    SnapshotCopy.objects.filter(pk=row.pk).update(state=SnapshotCopy.State.FAILED,
                                                  failure_code="authentication")
    response = panel(client, snapshot)
    html = response.content.decode()
    assert response.status_code == 286 and 'hx-trigger="every 1s"' not in html
    assert f'data-copy="{row.pk}" data-state="failed"' in html
    assert "The target refused the credentials (wrong access key or secret)." in html


def test_a_failed_copy_shows_its_fixed_message_never_the_targets_words(snapshot, s3_server,
                                                                      recipient):
    """The target's own error text names hosts and keys: only the code's message shows."""
    target = s3_target("berth-not-there", recipient, name="offsite")
    html = as_user(copy_user()).post(copy_url(snapshot), {"target": target.pk},
                                     headers=HTMX).content.decode()
    assert SnapshotCopy.objects.get().failure_code == "no_bucket"
    assert "The bucket does not exist." in html
    assert "NoSuchBucket" not in html and "127.0.0.1" not in html


def test_an_unencrypted_target_and_copy_say_so(snapshot, bucket):
    target = s3_target(bucket, name="clear")
    client = as_user(copy_user())
    html = client.post(copy_url(snapshot), {"target": target.pk}, headers=HTMX).content.decode()
    assert f'<option value="{target.pk}">clear (unencrypted)' in html
    item = html.split(f'data-copy="{SnapshotCopy.objects.get().pk}"')[1].split("</li>")[0]
    assert "Unencrypted" in item


def test_the_panel_has_no_copy_control_without_targets(snapshot):
    assert not BackupTarget.objects.exists()
    html = panel(as_user(copy_user()), snapshot).content.decode()
    assert "No backup target to copy to yet." in html


def test_without_htmx_copy_to_goes_back_to_the_page(snapshot, bucket, recipient):
    target = s3_target(bucket, recipient)
    client = as_user(copy_user())
    response = client.post(copy_url(snapshot), {"target": target.pk})
    assert response.status_code == 302
    assert response["Location"] == f"/workloads/{snapshot.workload_id}/"
    assert SnapshotCopy.objects.get().state == SnapshotCopy.State.VERIFIED

    response = client.post(copy_url(snapshot), {"target": 999}, follow=True)
    assert "Choose a backup target to copy the snapshot to." in response.content.decode()
    assert SnapshotCopy.objects.count() == 1
