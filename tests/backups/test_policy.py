"""Copy policies: after a snapshot is ready, a copy to every target its rules name.

Real parts: real captures and imports of a workload's volumes, moto's S3 server.
"""

from __future__ import annotations

import io

import pytest

from backups.models import CopyRule, SnapshotCopy, copy_kind
from engine import captures, imports
from engine.locked import copy_policy
from snapshots import storage
from snapshots.models import Snapshot
from tests.backups.conftest import objects
from tests.backups.test_copies import s3_target
from tests.snapshots.conftest import add_volume, fill

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]


@pytest.fixture
def workload(make_workload):
    """A never-deployed workload with a volume holding a little data."""
    workload = make_workload()
    fill(add_volume(workload, "data", "/data"), {"index.html": b"<h1>copied</h1>"})
    return workload


def copies_of(snapshot: Snapshot) -> list[tuple[str, str]]:
    return [(c.target.name, c.state) for c in
            SnapshotCopy.objects.filter(snapshot=snapshot).select_related("target")]


def test_it_copies_a_manual_snapshot_to_the_workloads_target_verified(workload, bucket,
                                                                        recipient):
    target = s3_target(bucket, recipient)
    CopyRule.objects.create(workload=workload, target=target, kinds=["manual"])

    snapshot = captures.capture_snapshot(workload=workload)

    assert snapshot.is_ready
    row = SnapshotCopy.objects.get(snapshot=snapshot)
    assert (row.state, row.kind, row.taken) == ("verified", "manual", snapshot.created)
    assert row.user is None and row.attempts == 1
    assert f"berth/{row.remote_key}" in objects(bucket)


def test_a_kind_the_rule_does_not_name_is_not_copied(workload, bucket, recipient):
    CopyRule.objects.create(workload=workload, target=s3_target(bucket, recipient),
                            kinds=["pre_deploy", "scheduled"])

    snapshot = captures.capture_snapshot(workload=workload)

    assert snapshot.is_ready and copies_of(snapshot) == []
    assert objects(bucket) == []


def test_the_project_default_applies_to_a_workload_without_rules(workload, bucket, recipient):
    target = s3_target(bucket, recipient)
    CopyRule.objects.create(project=workload.stage.project, target=target, kinds=["manual"])

    snapshot = captures.capture_snapshot(workload=workload)

    assert copies_of(snapshot) == [(target.name, "verified")]


def test_a_workloads_own_rules_replace_its_projects(workload, bucket, recipient, tmp_path,
                                                   settings):
    share = tmp_path / "nas"
    share.mkdir()
    settings.BERTH_BACKUP_DIRECTORY_ROOTS, settings.BERTH_ABSOLUTE_VOLUME_ROOTS = [str(share)], []
    from backups.models import BackupTarget

    nas = BackupTarget.objects.create(name="nas", kind="directory", directory=str(share),
                                      recipients=recipient)
    CopyRule.objects.create(project=workload.stage.project, target=s3_target(bucket, recipient),
                            kinds=["manual"])
    CopyRule.objects.create(workload=workload, target=nas, kinds=["manual"])

    snapshot = captures.capture_snapshot(workload=workload)

    assert copies_of(snapshot) == [("nas", "verified")]
    assert objects(bucket) == []


def test_an_imported_snapshot_is_copied_by_the_imported_kind_only(workload, bucket, recipient):
    source = captures.capture_snapshot(workload=workload)
    data = storage.archive_path(workload.pk, source.archive).read_bytes()
    target = s3_target(bucket, recipient)
    rule = CopyRule.objects.create(workload=workload, target=target, kinds=["manual"])

    first = imports.import_file(workload=workload, source=io.BytesIO(data))
    assert (first.imported, first.kind, copy_kind(first)) == (True, "manual", "imported")
    assert copies_of(first) == []

    CopyRule.objects.filter(pk=rule.pk).update(kinds=["imported"])
    second = imports.import_file(workload=workload, source=io.BytesIO(data))
    assert copies_of(second) == [(target.name, "verified")]
    assert SnapshotCopy.objects.get(snapshot=second).kind == "imported"


def test_a_failure_to_queue_never_fails_the_snapshot(workload, bucket, recipient, monkeypatch):
    CopyRule.objects.create(workload=workload, target=s3_target(bucket, recipient),
                            kinds=["manual"])

    def broken(*args, **kwargs):
        raise RuntimeError("the broker is down")

    monkeypatch.setattr(copy_policy.taskqueue, "enqueue", broken)
    snapshot = captures.capture_snapshot(workload=workload)
    assert snapshot.is_ready
    # The row waits queued; no worker takes it, so the sweep fails it as lost and retries it.
    assert copies_of(snapshot) == [(f"s3-{bucket}", "queued")]

    monkeypatch.setattr(CopyRule.objects, "targets_for", broken)
    again = captures.capture_snapshot(workload=workload)
    assert again.is_ready and copies_of(again) == []


def test_a_copy_already_under_way_is_not_queued_twice(workload, bucket, recipient):
    target = s3_target(bucket, recipient)
    snapshot = captures.capture_snapshot(workload=workload)
    CopyRule.objects.create(workload=workload, target=target, kinds=["manual"])
    SnapshotCopy.of(snapshot, target).save()  # queued, by hand

    copy_policy.queue_copies(snapshot)

    assert copies_of(snapshot) == [(target.name, "queued")]


def test_every_kind_of_snapshot_is_matched_by_its_own_kind(workload, bucket, recipient):
    target = s3_target(bucket, recipient)
    rule = CopyRule.objects.create(workload=workload, target=target, kinds=["pre_restore"])
    pre_restore = Snapshot(workload=workload, kind="pre_restore")
    manual = Snapshot(workload=workload, kind="manual")
    assert CopyRule.objects.targets_for(pre_restore) == [target]
    assert CopyRule.objects.targets_for(manual) == []
    rule.kinds = ["scheduled", "manual"]
    rule.save()
    assert CopyRule.objects.targets_for(manual) == [target]


def test_a_pre_deploy_snapshot_is_copied_by_its_rule(docker, current_tag, workload, bucket,
                                                     recipient):
    from engine import deploys
    from workloads.models import DeployRecord, Workload

    Workload.objects.filter(pk=workload.pk).update(auto_backup_before_deploy=True)
    target = s3_target(bucket, recipient)
    CopyRule.objects.create(project=workload.stage.project, target=target, kinds=["pre_deploy"])

    record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)

    assert record.outcome == DeployRecord.Outcome.SUCCEEDED
    snapshot = Snapshot.objects.get(deploy=record)
    assert copies_of(snapshot) == [(target.name, "verified")]
    assert SnapshotCopy.objects.get(snapshot=snapshot).kind == "pre_deploy"
