"""Retention and file lifetimes: rows and archives go together, after commit, from everywhere."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone

from engine import captures
from engine.locked import retention
from snapshots import storage
from snapshots.models import Snapshot
from tests.snapshots.conftest import archive_files
from workloads.models import DeployRecord, Workload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]
Kind = Snapshot.Kind


def fake(workload: Workload, kind: str = Kind.MANUAL, *, age_hours: float = 0,
         deploy: DeployRecord | None = None) -> Snapshot:
    """A ready snapshot with a (small) archive file, without capturing anything."""
    name = storage.new_archive_name(kind)
    path = storage.archive_path(workload.pk, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"archive")
    return Snapshot.objects.create(
        workload=workload, kind=kind, state=Snapshot.State.READY, archive=name, size=7,
        created=timezone.now() - timedelta(hours=age_hours), deploy=deploy,
    )


def exists(snapshot: Snapshot) -> bool:
    return storage.archive_path(snapshot.workload_id, snapshot.archive).exists()


def test_it_keeps_the_newest_n_of_each_kind(workload, settings):
    settings.BERTH_SNAPSHOT_KEEP = {"manual": 2, "pre_deploy": 1, "pre_restore": 1,
                                    "scheduled": 1}
    settings.BERTH_SNAPSHOT_PRE_RESTORE_MIN_AGE_HOURS = 0
    manual = [fake(workload, age_hours=10 - i) for i in range(4)]
    pre_deploy = [fake(workload, Kind.PRE_DEPLOY, age_hours=10 - i) for i in range(2)]

    assert retention.prune(workload) == 3

    kept = set(Snapshot.objects.values_list("pk", flat=True))
    assert kept == {manual[2].pk, manual[3].pk, pre_deploy[1].pk}
    assert [exists(s) for s in manual] == [False, False, True, True]
    assert [exists(s) for s in pre_deploy] == [False, True]


def test_a_young_pre_restore_snapshot_is_never_pruned(workload, settings):
    settings.BERTH_SNAPSHOT_KEEP = settings.BERTH_SNAPSHOT_KEEP | {"pre_restore": 1}
    settings.BERTH_SNAPSHOT_PRE_RESTORE_MIN_AGE_HOURS = 24
    old = fake(workload, Kind.PRE_RESTORE, age_hours=48)
    young = [fake(workload, Kind.PRE_RESTORE, age_hours=h) for h in (5, 3, 1)]
    retention.prune(workload)
    assert set(Snapshot.objects.values_list("pk", flat=True)) == {s.pk for s in young}
    assert not exists(old)


def test_the_pre_deploy_snapshot_of_the_newest_successful_deploy_is_kept(workload, settings):
    settings.BERTH_SNAPSHOT_KEEP = settings.BERTH_SNAPSHOT_KEEP | {"pre_deploy": 1}
    ok = DeployRecord.open(workload=workload, reason="manual")
    DeployRecord.objects.filter(pk=ok.pk).update(outcome=DeployRecord.Outcome.SUCCEEDED)
    failed = DeployRecord.open(workload=workload, reason="manual")
    DeployRecord.objects.filter(pk=failed.pk).update(outcome=DeployRecord.Outcome.FAILED)
    linked = fake(workload, Kind.PRE_DEPLOY, age_hours=5, deploy=ok)
    stale = fake(workload, Kind.PRE_DEPLOY, age_hours=4)
    newest = fake(workload, Kind.PRE_DEPLOY, age_hours=1, deploy=failed)

    retention.prune(workload)

    assert set(Snapshot.objects.values_list("pk", flat=True)) == {linked.pk, newest.pk}
    assert not exists(stale)


def test_failed_rows_are_kept_only_a_few(workload):
    for _ in range(retention.KEEP_FAILED + 3):
        Snapshot.objects.create(workload=workload, state=Snapshot.State.FAILED)
    retention.prune(workload)
    assert Snapshot.objects.filter(state=Snapshot.State.FAILED).count() == retention.KEEP_FAILED


def test_a_capture_prunes(volume_workload, settings):
    workload, _paths = volume_workload
    settings.BERTH_SNAPSHOT_KEEP = settings.BERTH_SNAPSHOT_KEEP | {"manual": 2}
    taken = [captures.capture_snapshot(workload=workload) for _ in range(3)]
    assert list(Snapshot.objects.values_list("pk", flat=True)) == [taken[2].pk, taken[1].pk]
    assert archive_files(workload) == sorted(s.archive for s in taken[1:])


def test_old_leftovers_are_swept_and_fresh_ones_kept(workload):
    kept = fake(workload)
    directory = storage.workload_dir(workload.pk)
    old_temp = directory / ".tmp-dead.tar.zst"
    fresh_temp = directory / ".tmp-running.tar.zst"
    orphan = directory / storage.new_archive_name("manual")
    for path in (old_temp, fresh_temp, orphan):
        path.write_bytes(b"x")
    day_ago = time.time() - storage.LEFTOVER_SECONDS - 60
    for path in (old_temp, orphan):
        os.utime(path, (day_ago, day_ago))
    old_upload = storage.uploads_dir() / ".upload-dead.tar.zst"
    old_upload.parent.mkdir(parents=True, exist_ok=True)
    old_upload.write_bytes(b"x")
    os.utime(old_upload, (day_ago, day_ago))

    retention.prune(workload)

    assert archive_files(workload) == sorted([".tmp-running.tar.zst", kept.archive])
    assert not old_upload.exists()


# --- files go with their rows, after commit ---------------------------------------------------

def test_deleting_a_snapshot_removes_its_file_after_commit(workload):
    snapshot = fake(workload)
    with transaction.atomic():
        snapshot.delete()
        assert exists(snapshot)  # not before the commit
    assert not exists(snapshot)


def test_a_rolled_back_delete_keeps_the_file(workload):
    snapshot = fake(workload)
    with pytest.raises(RuntimeError), transaction.atomic():
        Snapshot.objects.filter(pk=snapshot.pk).delete()
        raise RuntimeError("roll back")
    assert Snapshot.objects.filter(pk=snapshot.pk).exists() and exists(snapshot)


def test_deleting_a_workload_removes_its_snapshot_directory(workload):
    snapshots = [fake(workload), fake(workload, Kind.PRE_DEPLOY)]
    (storage.workload_dir(workload.pk) / ".tmp-x.tar.zst").write_bytes(b"x")
    workload.stage.project.delete()  # the cascade from the top
    assert not any(exists(s) for s in snapshots)
    assert not storage.workload_dir(workload.pk).exists()


def test_an_admin_delete_removes_the_files(admin_user, make_workload):
    # One at a time: the admin has no bulk delete of snapshots.
    first, second = make_workload(), make_workload()
    doomed = [fake(first), fake(second)]
    survivor = fake(first)
    client = Client()
    client.force_login(admin_user)
    for snapshot in doomed:
        response = client.post(f"/admin/snapshots/snapshot/{snapshot.pk}/delete/",
                               {"post": "yes", "confirm": snapshot.workload.path})
        assert response.status_code == 302
    assert not any(exists(s) for s in doomed) and exists(survivor)


def test_an_admin_delete_of_a_workload_removes_its_snapshots(admin_user, make_workload):
    first, second = make_workload(), make_workload()
    doomed, survivor = fake(first), fake(second)
    client = Client()
    client.force_login(admin_user)
    response = client.post(f"/admin/workloads/workload/{first.pk}/delete/",
                           {"post": "yes", "confirm": first.path})
    assert response.status_code == 302
    assert not exists(doomed) and exists(survivor)
    assert not storage.workload_dir(first.pk).exists()


def test_a_stored_name_cannot_point_elsewhere(workload):
    for name in ("../../secret_key", "/etc/passwd", ".tmp-x.tar.zst", "a/b.tar.zst"):
        with pytest.raises(ValueError):
            storage.archive_path(workload.pk, name)
    Snapshot.objects.create(workload=workload, state=Snapshot.State.READY,
                            archive="../../secret_key").delete()
    assert (storage.root().parent / "secret_key").exists()


def test_imports_never_push_captured_snapshots_out(api_as, volume_workload, settings):
    """A user who may import but not delete cannot evict real snapshots by importing."""
    from django.contrib.auth.models import Permission, User
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.snapshots import hostile

    workload, _paths = volume_workload
    settings.BERTH_SNAPSHOT_KEEP = settings.BERTH_SNAPSHOT_KEEP | {"manual": 3}
    settings.BERTH_SNAPSHOT_KEEP_IMPORTED = 2
    real = [captures.capture_snapshot(workload=workload) for _ in range(3)]
    user = User.objects.create_user("snap-only", password="x")
    user.user_permissions.add(Permission.objects.get(codename="snapshot_workload"),
                              Permission.objects.get(codename="view_snapshot"))
    api = api_as(user)
    assert api.delete(f"/api/workloads/{workload.pk}/snapshots/{real[0].pk}",
                      HTTP_X_CONFIRM_DELETE=workload.path).status_code == 403
    data = hostile.zst(hostile.tar(hostile.manifest_member(hostile.manifest([(0, 1, 0)] * 2)),
                                   hostile.directory("volumes/0"), hostile.directory("volumes/1")))
    imported = []
    for _ in range(4):
        response = api.post(f"/api/workloads/{workload.pk}/snapshots/import",
                            {"archive": SimpleUploadedFile("a", data)}, format="multipart")
        assert response.status_code == 201, response.content
        imported.append(response.json()["id"])
    left = set(Snapshot.objects.values_list("pk", flat=True))
    assert {s.pk for s in real} <= left  # every captured snapshot is still there
    assert left & set(imported) == set(imported[-2:])  # imports keep their own count
    # and a capture does not count the imports against the manual ones
    newer = captures.capture_snapshot(workload=workload)
    left = set(Snapshot.objects.values_list("pk", flat=True))
    assert {newer.pk, real[2].pk, real[1].pk} <= left and real[0].pk not in left
    assert left & set(imported) == set(imported[-2:])
