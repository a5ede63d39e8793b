"""Remote retention: after a copy is verified, the older ones beyond the target's counts go,
from the real S3 server (object and sidecar) and as rows marked `removed`."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from backups.models import BackupTarget, SnapshotCopy
from engine import copies, copy_upkeep
from lib import offsite
from snapshots.models import Snapshot
from tests.backups.conftest import S3_ENDPOINT, S3_KEY_ID, S3_SECRET, objects
from tests.backups.test_copies import s3_target
from tests.snapshots.restoring import snapshot_from_bytes
from tests.snapshots.trees import archive_of

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]


@pytest.fixture
def data(tmp_path) -> bytes:
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "index.html").write_bytes(b"<h1>kept a while</h1>")
    return archive_of([volume])


@pytest.fixture
def snap(data):
    """A ready snapshot of `workload`, of `kind`, taken `hours` ago."""

    def make(workload, kind: str = "manual", *, hours: int) -> Snapshot:
        volumes = [{"scope": "absolute", "source": "/v", "target": "/v", "bytes": len(data),
                    "files": 1}]
        snapshot = snapshot_from_bytes(workload, data, {"volumes": volumes})
        Snapshot.objects.filter(pk=snapshot.pk).update(
            kind=kind, created=timezone.now() - timedelta(hours=hours))
        snapshot.refresh_from_db()
        return snapshot

    return make


def copy(snapshot, target) -> SnapshotCopy:
    row = copies.request_copy(snapshot=snapshot, target=target)
    row.refresh_from_db()
    assert row.failure_code == "", row.failure_code  # verified (and perhaps pruned since)
    return row


def keys(*rows: SnapshotCopy) -> list[str]:
    """The objects of these copies on the bucket: each copy and its sidecar."""
    return sorted(name for row in rows for name in (
        f"berth/{row.remote_key}", f"berth/{row.remote_key.removesuffix('.tar.zst.age')}.json.age"))


def states(*rows: SnapshotCopy) -> list[str]:
    for row in rows:
        row.refresh_from_db()
    return [row.state for row in rows]


def test_it_keeps_the_newest_copies_of_each_kind_on_the_target(make_workload, snap, bucket,
                                                               recipient):
    target = s3_target(bucket, recipient, keep_manual=2, keep_pre_deploy=1)
    workload = make_workload()
    manual = [copy(snap(workload, hours=10 - i), target) for i in range(3)]
    pre_deploy = [copy(snap(workload, "pre_deploy", hours=8 - i), target) for i in range(2)]
    assert sorted(objects(bucket)) == keys(*manual[1:], pre_deploy[1])

    newest = copy(snap(workload, hours=0), target)

    assert states(*manual, newest) == ["removed", "removed", "verified", "verified"]
    assert states(*pre_deploy) == ["removed", "verified"]
    assert sorted(objects(bucket)) == keys(manual[2], newest, pre_deploy[1])
    assert manual[0].removed is not None and manual[0].snapshot_id is not None  # kept locally


def test_it_orders_copies_by_when_their_snapshots_were_taken(make_workload, snap, bucket,
                                                             recipient):
    target = s3_target(bucket, recipient, keep_manual=1)
    workload = make_workload()
    recent = copy(snap(workload, hours=1), target)
    older = copy(snap(workload, hours=5), target)  # copied later, taken earlier: pruned at once
    assert states(recent, older) == ["verified", "removed"]
    assert sorted(objects(bucket)) == keys(recent)


def test_other_workloads_and_targets_count_apart_and_zero_keeps_all(make_workload, snap, bucket,
                                                                    recipient):
    target = s3_target(bucket, recipient, keep_manual=1)
    other = BackupTarget(name="everything", kind="s3", endpoint_url=S3_ENDPOINT,
                         region="us-east-1", bucket=bucket, prefix="all",
                         access_key_id=S3_KEY_ID, recipients=recipient, keep_manual=0)
    other.set_secret_access_key(S3_SECRET)
    other.save()
    first, second = make_workload(), make_workload()
    a = copy(snap(first, hours=3), target)
    b = copy(snap(second, hours=2), target)
    kept_all = [copy(snap(first, hours=h), other) for h in (9, 8, 7)]
    assert states(a, b, *kept_all) == ["verified"] * 5
    assert len(objects(bucket)) == 10


def test_a_removal_the_target_refuses_leaves_the_copy_verified(make_workload, snap, bucket,
                                                               recipient, monkeypatch):
    target = s3_target(bucket, recipient, keep_manual=1)
    workload = make_workload()
    old = copy(snap(workload, hours=3), target)

    def refused(store, name):
        raise offsite.OffsiteError("no_delete", "AccessDenied")

    monkeypatch.setattr(offsite.S3Store, "delete", refused)
    new = copy(snap(workload, hours=1), target)  # verified, whatever retention could do
    assert states(old, new) == ["verified", "verified"]
    assert sorted(objects(bucket)) == keys(old, new)

    monkeypatch.undo()
    assert copy_upkeep.prune(target=target, workload_id=workload.pk) == 1  # the next time
    assert states(old, new) == ["removed", "verified"]
    assert sorted(objects(bucket)) == keys(new)


def test_the_last_verified_copy_of_a_workload_stays(make_workload, snap, bucket, recipient):
    target = s3_target(bucket, recipient, keep_manual=1)
    snapshot = snap(make_workload(), hours=1)
    first = copy(snapshot, target)
    again = copy(snapshot, target)  # the same snapshot copied again: the newer copy counts
    assert states(first, again) == ["removed", "verified"]
    assert sorted(objects(bucket)) == keys(again)
