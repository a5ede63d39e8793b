"""capture_snapshot() and friends: the archive, the row, failures, progress and the lock."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from engine import captures
from engine.locked import capture
from lib import locks
from snapshots import storage, writer
from snapshots.archive_format import Limits
from snapshots.models import Snapshot
from tests.snapshots.conftest import add_volume, archive_files, fill
from tests.snapshots.trees import describe, extract_bytes
from workloads.models import EventLog

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]


def test_it_captures_every_volume_into_one_archive(volume_workload, operator, tmp_path):
    workload, paths = volume_workload
    before = [describe(p) for p in paths]

    snapshot = captures.capture_snapshot(workload=workload, user=operator)

    snapshot.refresh_from_db()
    assert snapshot.state == Snapshot.State.READY, snapshot.failure_text
    assert (snapshot.kind, snapshot.user, snapshot.volume_count) == ("manual", operator, 2)
    path = storage.archive_path(workload.pk, snapshot.archive)
    data = path.read_bytes()
    assert snapshot.size == len(data) == path.stat().st_size
    assert snapshot.sha256 == hashlib.sha256(data).hexdigest()
    assert snapshot.file_count == 3 and snapshot.data_bytes == 14 + 500 + 10
    assert snapshot.bytes_done == snapshot.bytes_total == snapshot.data_bytes
    assert archive_files(workload) == [snapshot.archive]  # no temporary file left
    manifest = snapshot.manifest
    assert manifest["workload"] == {"id": workload.pk, "name": workload.name,
                                    "path": str(workload)}
    assert [(v["index"], v["scope"], v["source"], v["target"]) for v in manifest["volumes"]] == [
        (0, "stage", "data", "/data"), (1, "stage", "config", "/config")]

    extract_bytes(data, tmp_path / "s", 2)
    assert [describe(tmp_path / "s" / "volumes" / str(i)) for i in range(2)] == before
    event = workload.events.get()
    assert event.text == f"Took snapshot #{snapshot.pk} (Manual)."


def test_skipped_entries_are_counted_and_listed(volume_workload):
    workload, paths = volume_workload
    (paths[0] / "link").symlink_to("/etc/passwd")
    snapshot = captures.capture_snapshot(workload=workload)
    assert snapshot.skipped_count == 1
    assert snapshot.skipped == [{"volume": 0, "path": "link", "type": "symlink",
                                 "reason": "only regular files and directories are stored"}]


def test_a_failed_capture_leaves_no_file_and_says_why(volume_workload, settings):
    workload, paths = volume_workload
    settings.BERTH_SNAPSHOT_MAX_FILE_BYTES = 100

    snapshot = captures.capture_snapshot(workload=workload)

    snapshot.refresh_from_db()
    assert snapshot.state == Snapshot.State.FAILED
    assert snapshot.failure_text == (
        "sub/notes.txt is larger than the per-file limit (BERTH_SNAPSHOT_MAX_FILE_BYTES)."
    )
    assert snapshot.archive == "" and archive_files(workload) == []
    event = workload.events.get()
    assert event.level == EventLog.Level.WARNING
    assert event.text == f"Snapshot #{snapshot.pk} failed; the snapshots panel says why."


def test_a_write_error_leaves_no_temporary_file(volume_workload, monkeypatch):
    workload, _paths = volume_workload

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "write_archive", full_disk)
    snapshot = captures.capture_snapshot(workload=workload)
    assert snapshot.state == Snapshot.State.FAILED
    assert snapshot.failure_text == "The archive could not be written (No space left on device)."
    assert archive_files(workload) == []


def test_an_unexpected_error_is_a_failed_row_not_a_crash(volume_workload, monkeypatch):
    workload, _paths = volume_workload
    monkeypatch.setattr(writer, "scan_volumes", lambda *a: 1 / 0)
    snapshot = captures.capture_snapshot(workload=workload)
    assert snapshot.state == Snapshot.State.FAILED
    assert "internal error" in snapshot.failure_text


def test_a_volume_whose_path_escapes_fails_clearly(make_workload, settings):
    workload = make_workload()
    path = add_volume(workload, "data", "/data")
    path.rmdir()
    path.symlink_to("/etc")  # planted after the volume was configured
    snapshot = captures.capture_snapshot(workload=workload)
    assert snapshot.state == Snapshot.State.FAILED
    assert snapshot.failure_text == "The volume /data has a host path that is not valid."


def test_progress_is_visible_while_it_runs(make_workload, monkeypatch):
    workload = make_workload()
    fill(add_volume(workload, "data", "/data"), {f"f{i}": b"x" * 200_000 for i in range(5)})
    monkeypatch.setattr(capture, "PROGRESS_SECONDS", 0)
    seen: list[tuple[int, int]] = []
    real = Snapshot.report_progress

    def watch(self, done):
        real(self, done)
        row = Snapshot.objects.get(pk=self.pk)
        seen.append((row.bytes_done, row.bytes_total))

    monkeypatch.setattr(Snapshot, "report_progress", watch)
    captures.capture_snapshot(workload=workload)
    assert seen and all(total == 1_000_000 for _, total in seen)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert 0 < seen[0][0] < 1_000_000


def test_it_waits_for_the_workload_lock_and_gives_up_clearly(volume_workload, settings):
    workload, _paths = volume_workload
    settings.BERTH_DEPLOY_LOCK_TIMEOUT = 1
    held, release = threading.Event(), threading.Event()

    def hold():
        with locks.workload_lock(workload.pk):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(5)
    try:
        snapshot = captures.capture_snapshot(workload=workload)
    finally:
        release.set()
        thread.join()
    assert snapshot.state == Snapshot.State.FAILED
    assert "did not finish in time" in snapshot.failure_text


def test_capture_locked_needs_the_lock(volume_workload):
    workload, _paths = volume_workload
    with pytest.raises(locks.LockNotHeld):
        capture.capture_locked(workload=workload, kind=Snapshot.Kind.PRE_DEPLOY)


def test_a_capture_marks_an_interrupted_one_failed(volume_workload):
    workload, _paths = volume_workload
    dead = Snapshot.objects.create(workload=workload, state=Snapshot.State.CAPTURING)
    captures.capture_snapshot(workload=workload)
    dead.refresh_from_db()
    assert dead.state == Snapshot.State.FAILED
    assert dead.failure_text == "The capture was interrupted before it finished."


def test_a_long_capture_is_never_counted_lost_while_it_holds_the_lock(volume_workload,
                                                                      settings):
    """Captures have no task timeout: a capturing row is dead only when its lock is free."""
    from datetime import timedelta

    from django.utils import timezone

    workload, _paths = volume_workload
    long_ago = timezone.now() - timedelta(seconds=settings.BERTH_TASK_LOST_AFTER + 1)
    capturing = Snapshot.objects.create(workload=workload, state=Snapshot.State.CAPTURING,
                                        created=long_ago)
    Snapshot.fail_interrupted(workload=workload, lock_held=False)
    capturing.refresh_from_db()
    assert capturing.state == Snapshot.State.CAPTURING

    capturing.delete()
    lost = Snapshot.objects.create(workload=workload, state=Snapshot.State.QUEUED,
                                   created=long_ago)
    Snapshot.fail_interrupted(workload=workload, lock_held=False)
    lost.refresh_from_db()
    assert lost.state == Snapshot.State.FAILED  # its task never reached a worker


def test_a_row_deleted_during_the_capture_takes_its_file_along(volume_workload, monkeypatch):
    workload, _paths = volume_workload
    real = Snapshot.succeed

    def deleted_meanwhile(self, **kwargs):
        Snapshot.objects.filter(pk=self.pk).delete()
        return real(self, **kwargs)

    monkeypatch.setattr(Snapshot, "succeed", deleted_meanwhile)
    captures.capture_snapshot(workload=workload)
    assert archive_files(workload) == []


def test_much_smaller_than_the_last_one_is_flagged(volume_workload, settings):
    workload, paths = volume_workload
    settings.BERTH_SNAPSHOT_SHRINK_PERCENT = 50
    first = captures.capture_snapshot(workload=workload)
    (paths[0] / "sub" / "notes.txt").write_bytes(b"n")  # 524 bytes of data become 25
    second = captures.capture_snapshot(workload=workload)
    (paths[0] / "sub" / "notes.txt").write_bytes(b"n" * 10)
    third = captures.capture_snapshot(workload=workload)
    assert [s.much_smaller for s in (first, second, third)] == [False, True, False]


def test_a_never_deployed_volume_is_captured_empty(make_workload):
    workload = make_workload()
    path = add_volume(workload, "data", "/data")
    path.rmdir()
    snapshot = captures.capture_snapshot(workload=workload)
    assert snapshot.is_ready
    assert snapshot.manifest["volumes"][0]["missing"] is True
    assert not Path(path).exists()  # a capture never creates volume directories


def test_the_caps_come_from_the_settings(settings):
    settings.BERTH_SNAPSHOT_MAX_ENTRIES = 7
    assert Limits.from_settings().max_entries == 7


def test_a_workload_without_volumes_has_nothing_to_snapshot(make_workload):
    snapshot = captures.capture_snapshot(workload=make_workload())
    assert snapshot.state == Snapshot.State.FAILED
    assert snapshot.failure_text == "This workload has no volumes to snapshot."
