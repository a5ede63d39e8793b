"""Deleting a local snapshot keeps its copies on backup targets, unless asked to remove them:
the API's `?with_copies=1` and `manage.py delete_snapshot --with-copies`, on real S3."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command

from backups.models import SnapshotCopy
from engine import copies
from lib import offsite
from snapshots.models import Snapshot
from tests.backups.conftest import objects
from tests.backups.test_copies import s3_target
from tests.snapshots.restoring import snapshot_from_bytes
from tests.snapshots.trees import archive_of

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]


@pytest.fixture
def copied(make_workload, tmp_path, bucket, recipient) -> SnapshotCopy:
    """A verified copy on the bucket of a ready snapshot."""
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "index.html").write_bytes(b"<h1>deleted?</h1>")
    data = archive_of([volume])
    volumes = [{"scope": "absolute", "source": "/v", "target": "/v", "bytes": len(data),
                "files": 1}]
    snapshot = snapshot_from_bytes(make_workload(), data, {"volumes": volumes})
    row = copies.request_copy(snapshot=snapshot, target=s3_target(bucket, recipient))
    row.refresh_from_db()
    assert row.state == "verified" and len(objects(bucket)) == 2
    return row


def url(row: SnapshotCopy) -> str:
    return f"/api/workloads/{row.workload_id}/snapshots/{row.snapshot_id}"


def confirmed(row: SnapshotCopy) -> dict:
    return {"HTTP_X_CONFIRM_DELETE": row.workload.path}


@pytest.fixture
def may_delete_copies(operator):
    operator.user_permissions.add(Permission.objects.get(codename="delete_snapshotcopy"))
    return operator


def test_a_deleted_snapshot_keeps_its_copies(api_as, operator, copied, bucket):
    answer = api_as(operator).delete(url(copied), **confirmed(copied))

    assert answer.status_code == 204
    copied.refresh_from_db()
    assert (copied.snapshot_id, copied.state) == (None, "verified")
    assert len(objects(bucket)) == 2


def test_with_copies_it_removes_them_from_their_targets(api_as, may_delete_copies, copied,
                                                       bucket):
    snapshot_id = copied.snapshot_id

    answer = api_as(may_delete_copies).delete(url(copied) + "?with_copies=1", **confirmed(copied))

    assert answer.status_code == 204, answer.content
    assert not Snapshot.objects.filter(pk=snapshot_id).exists()
    copied.refresh_from_db()
    assert copied.state == "removed" and copied.removed is not None
    assert objects(bucket) == []


def test_removing_copies_needs_its_permission_and_a_clear_value(api_as, operator, copied,
                                                               bucket):
    refused = api_as(operator).delete(url(copied) + "?with_copies=1", **confirmed(copied))
    assert refused.status_code == 403
    operator.user_permissions.add(Permission.objects.get(codename="delete_snapshotcopy"))
    unclear = api_as(operator).delete(url(copied) + "?with_copies=perhaps", **confirmed(copied))
    assert unclear.status_code == 400 and "with_copies" in unclear.json()

    copied.refresh_from_db()
    assert copied.snapshot_id is not None and copied.state == "verified"
    assert len(objects(bucket)) == 2


def test_a_target_that_refuses_the_removal_keeps_the_snapshot(api_as, may_delete_copies, copied,
                                                              bucket, monkeypatch):
    def refused(store, name):
        raise offsite.OffsiteError("no_delete", "AccessDenied for key id ...")

    monkeypatch.setattr(offsite.S3Store, "delete", refused)
    answer = api_as(may_delete_copies).delete(url(copied) + "?with_copies=1", **confirmed(copied))

    assert answer.status_code == 502
    assert "may not delete" in answer.json()["detail"]
    assert "AccessDenied" not in answer.content.decode()
    copied.refresh_from_db()
    assert copied.snapshot_id is not None and copied.state == "verified"
    assert len(objects(bucket)) == 2


def test_a_copy_under_way_blocks_a_delete_with_copies(api_as, may_delete_copies, copied, bucket):
    SnapshotCopy.objects.filter(pk=copied.pk).update(state="uploading")
    answer = api_as(may_delete_copies).delete(url(copied) + "?with_copies=1", **confirmed(copied))
    assert answer.status_code == 409 and "under way" in answer.json()["detail"]
    assert Snapshot.objects.filter(pk=copied.snapshot_id).exists()


def test_the_command_keeps_copies_unless_asked(copied, bucket):
    out = io.StringIO()
    call_command("delete_snapshot", str(copied.workload_id), str(copied.snapshot_id), stdout=out)
    copied.refresh_from_db()
    assert (copied.snapshot_id, copied.state) == (None, "verified")
    assert len(objects(bucket)) == 2
    assert "its copies" not in out.getvalue()


def test_the_command_removes_copies_with_with_copies(copied, bucket, monkeypatch):
    out = io.StringIO()
    snapshot_id = copied.snapshot_id

    def unreachable(store, name):
        raise offsite.OffsiteError("unreachable")

    with monkeypatch.context() as patched:
        patched.setattr(offsite.S3Store, "delete", unreachable)
        with pytest.raises(CommandError, match="could not be removed"):
            call_command("delete_snapshot", str(copied.workload_id), str(snapshot_id),
                         "--with-copies", stdout=out)
    assert Snapshot.objects.filter(pk=snapshot_id).exists()

    call_command("delete_snapshot", str(copied.workload_id), str(snapshot_id), "--with-copies",
                 stdout=out)

    assert not Snapshot.objects.filter(pk=snapshot_id).exists()
    copied.refresh_from_db()
    assert copied.state == "removed"
    assert objects(bucket) == []
    assert "and its copies on backup targets" in out.getvalue()
