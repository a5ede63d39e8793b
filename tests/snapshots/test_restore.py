"""The restore engine without containers: all or nothing, pre-flight refusals, hostile archives."""

from __future__ import annotations

import io
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from engine import captures, restores, sweep
from lib import exchange
from snapshots import journal, reservations, storage, writer
from snapshots.errors import CaptureError, PreflightError
from snapshots.models import RestoreJob, Snapshot
from tests.snapshots import hostile
from tests.snapshots.conftest import add_volume, fill
from tests.snapshots.restoring import (
    OLD,
    OLD_CONFIG,
    failing_journal_writes,
    journals,
    replace_content,
    restore_left_committed,
    snapshot_from_bytes,
    snapshot_trees,
    strays,
    trees,
)
from tests.snapshots.trees import LIMITS, describe
from workloads.models import EventLog, VolumeMount, Workload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]
Outcome = RestoreJob.Outcome


def assert_untouched(workload: Workload, paths: list[Path], before: list[dict]) -> None:
    assert trees(paths) == before, "the live data changed"
    assert strays(paths) == [], "staging or aside directories were left behind"
    assert journals() == [], "a journal was left behind"
    assert not Snapshot.objects.filter(workload=workload, kind="pre_restore").exists()


def refused(job: RestoreJob, match: str) -> None:
    job.refresh_from_db()
    assert job.state == RestoreJob.State.FINISHED and job.outcome == Outcome.FAILED
    assert match in job.reason_text, job.reason_text


# --- the happy path -----------------------------------------------------------------------

def test_it_restores_every_volume_and_keeps_the_previous_data(snapshotted, tmp_path):
    workload, paths, snapshot, wanted = snapshotted
    previous = trees(paths)

    job = restores.restore(workload=workload, snapshot=snapshot)

    job.refresh_from_db()
    assert (job.state, job.phase, job.outcome) == ("finished", "done", Outcome.SUCCEEDED)
    assert trees(paths) == wanted
    assert job.bytes_done == job.bytes_total == snapshot.data_bytes
    kept = job.pre_restore_snapshot
    assert kept.kind == Snapshot.Kind.PRE_RESTORE and kept.is_ready
    assert snapshot_trees(kept, tmp_path / "kept") == previous
    assert [v["target"] for v in kept.volumes] == ["/data", "/config"]
    assert strays(paths) == [] and journals() == []
    assert job.deploy is None  # never deployed: nothing to start
    assert workload.events.filter(message__startswith="Restored snapshot").exists()


def test_it_swaps_with_two_renames_where_the_filesystem_cannot_exchange(
    snapshotted, monkeypatch
):
    workload, paths, snapshot, wanted = snapshotted
    monkeypatch.setattr(exchange, "supported", lambda directory: False)
    swaps = []
    monkeypatch.setattr(exchange, "exchange", lambda *a: swaps.append(a))

    job = restores.restore(workload=workload, snapshot=snapshot)

    job.refresh_from_db()
    assert job.outcome == Outcome.SUCCEEDED, job.reason_text
    assert trees(paths) == wanted and swaps == []
    assert strays(paths) == [] and journals() == []


def test_a_volume_without_a_directory_gets_the_snapshots_data(snapshotted):
    workload, paths, snapshot, wanted = snapshotted
    subprocess.run(["rm", "-rf", str(paths[1])], check=True)

    job = restores.restore(workload=workload, snapshot=snapshot)

    job.refresh_from_db()
    assert job.outcome == Outcome.SUCCEEDED, job.reason_text
    assert trees(paths) == wanted
    assert job.pre_restore_snapshot.volumes[1]["files"] == 0  # it was empty before


def test_tampered_manifest_paths_are_never_used(two_volumes, tmp_path, settings):
    """The manifest says /etc-like paths; the data goes to the configured volumes only."""
    workload, paths = two_volumes
    decoy = tmp_path / "decoy"
    (decoy / "etc").mkdir(parents=True)
    (decoy / "etc" / "passwd").write_text("root:x:0:0")
    before_decoy = describe(decoy)
    wanted = trees(paths)
    scans = writer.scan_volumes([str(p) for p in paths], LIMITS)
    manifest = writer.build_manifest(
        created="2026-11-26T00:00:00+00:00", workload={"id": 999, "name": "evil"},
        consistency="stop", scans=scans,
        volumes=[{"scope": "absolute", "source": str(decoy / "etc"), "target": "/etc"},
                 {"scope": "absolute", "source": "/", "target": "/"}],
    )
    data = archive_bytes(manifest, scans)
    snapshot = snapshot_from_bytes(workload, data, manifest)
    replace_content(paths[0], OLD)
    replace_content(paths[1], OLD_CONFIG)

    job = restores.restore(workload=workload, snapshot=snapshot)

    job.refresh_from_db()
    assert job.outcome == Outcome.SUCCEEDED, job.reason_text
    assert trees(paths) == wanted
    assert describe(decoy) == before_decoy


def archive_bytes(manifest: dict, scans) -> bytes:
    out = io.BytesIO()
    writer.write_archive(out, manifest, scans)
    return out.getvalue()


# --- pre-flight: refused before anything is touched ----------------------------------------

def test_a_snapshot_with_more_volumes_than_the_workload_now_has_is_refused(snapshotted):
    workload, paths, snapshot, _wanted = snapshotted
    workload.volumes.order_by("id").last().delete()
    before = trees(paths)

    job = restores.restore(workload=workload, snapshot=snapshot)

    refused(job, "holds volume 1, but the workload now has only 1 volume")
    assert_untouched(workload, paths, before)


def test_a_current_volume_the_snapshot_lacks_is_refused(snapshotted):
    workload, paths, snapshot, _wanted = snapshotted
    extra = add_volume(workload, "extra", "/extra")
    before = trees([*paths, extra])

    job = restores.restore(workload=workload, snapshot=snapshot)

    refused(job, "volume /extra is not in the snapshot")
    assert_untouched(workload, [*paths, extra], before)


def test_a_symlinked_volume_is_refused(snapshotted, tmp_path):
    workload, paths, snapshot, _wanted = snapshotted
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("keep")
    subprocess.run(["rm", "-rf", str(paths[1])], check=True)
    paths[1].symlink_to(elsewhere)
    before = [describe(paths[0]), describe(elsewhere)]

    job = restores.restore(workload=workload, snapshot=snapshot)

    job.refresh_from_db()
    assert job.outcome == Outcome.FAILED
    assert "symbolic link" in job.reason_text or "not valid" in job.reason_text
    assert [describe(paths[0]), describe(elsewhere)] == before
    assert paths[1].is_symlink() and journals() == [] and strays(paths) == []


def test_volumes_sharing_a_host_directory_are_refused(make_workload):
    workload = make_workload()
    outer = add_volume(workload, "data", "/data")
    inner = add_volume(workload, "data/inner", "/inner")
    fill(inner, {"f": b"x"})
    snapshot = captures.capture_snapshot(workload=workload)
    before = trees([outer])

    job = restores.restore(workload=workload, snapshot=snapshot)

    refused(job, "share a host directory")
    assert_untouched(workload, [outer], before)


def test_another_workloads_volume_inside_a_target_is_refused(snapshotted, make_workload):
    workload, paths, snapshot, _wanted = snapshotted
    # Saved around the validation that refuses overlapping volumes (an older
    # configuration, or a row written by hand): the restore must still refuse.
    other = Workload.objects.create(stage=workload.stage, name="Other", slug="other",
                                    image=workload.image)
    VolumeMount.objects.create(workload=other, scope="stage", source="data/sub",
                               target="/shared")
    before = trees(paths)

    job = restores.restore(workload=workload, snapshot=snapshot)

    refused(job, f"is also a volume of {other}")
    assert_untouched(workload, paths, before)


def test_a_target_inside_another_workloads_volume_is_refused(snapshotted):
    workload, paths, snapshot, _wanted = snapshotted
    # Another workload's project volume named like this workload's stage holds this
    # workload's stage volumes (renaming a stage could once do this): restoring them would
    # change that workload's data.
    other = Workload.objects.create(stage=workload.stage, name="Other", slug="other",
                                    image=workload.image)
    VolumeMount.objects.create(workload=other, scope="project", source=workload.stage.slug,
                               target="/all")
    before = trees(paths)

    job = restores.restore(workload=workload, snapshot=snapshot)

    refused(job, f"a volume of {other}")
    assert "lies inside" in job.reason_text
    assert_untouched(workload, paths, before)


@pytest.mark.parametrize("where", ["data-dir-parent", "data-dir", "inside-data-dir",
                                   "volumes-root", "code"])
def test_a_volume_over_berths_own_files_is_refused(where, snapshotted, settings):
    """An `absolute` volume could name Berth's own directories: swapping them would move
    its database, journals and archives away and then delete them."""
    workload, paths, snapshot, _wanted = snapshotted
    data_dir = Path(settings.DATA_DIR)
    source = {"data-dir-parent": data_dir.parent, "data-dir": data_dir,
              "inside-data-dir": data_dir / "locks", "volumes-root": data_dir / "volumes",
              "code": Path(settings.BASE_DIR)}[where]
    first = workload.volumes.order_by("id").first()
    VolumeMount.objects.filter(pk=first.pk).update(scope="absolute", source=str(source))
    def own() -> tuple:
        database = Path(str(settings.DATABASES["default"]["NAME"]))
        inode = database.stat().st_ino if database.is_absolute() else None  # SQLite's file
        return inode, sorted(os.listdir(data_dir)), trees(paths[1:])

    before = own()

    job = restores.restore(workload=workload, snapshot=snapshot)

    job.refresh_from_db()
    assert job.outcome == Outcome.FAILED
    # The volume policy (lib/paths.py) already refuses such a host path;
    # the restore's own check stands behind it for rows saved around it.
    assert any(reason in job.reason_text for reason in (
        "Berth's own files", "Berth's data directory", "has a host path that is not valid"
    ))
    assert own() == before
    assert journals() == []


def test_a_mount_point_volume_is_refused(snapshotted):
    workload, paths, snapshot, _wanted = snapshotted
    mounted = mount_tmpfs(paths[1], "1m")
    try:
        (paths[1] / "on-tmpfs").write_text("mounted data")
        before = trees(paths)
        job = restores.restore(workload=workload, snapshot=snapshot)
        refused(job, "mount point")
        assert_untouched(workload, paths, before)
    finally:
        unmount(mounted)


def test_a_damaged_archive_is_refused(snapshotted):
    workload, paths, snapshot, _wanted = snapshotted
    archive = storage.archive_path(workload.pk, snapshot.archive)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    before = trees(paths)

    job = restores.restore(workload=workload, snapshot=snapshot)

    refused(job, "does not match its recorded size and SHA-256")
    assert_untouched(workload, paths, before)


def test_a_missing_archive_is_refused(snapshotted):
    workload, paths, snapshot, _wanted = snapshotted
    storage.archive_path(workload.pk, snapshot.archive).unlink()
    before = trees(paths)
    job = restores.restore(workload=workload, snapshot=snapshot)
    refused(job, "is missing")
    assert_untouched(workload, paths, before)


def test_a_snapshot_of_another_workload_or_not_ready_cannot_even_be_queued(
    snapshotted, make_workload
):
    workload, _paths, snapshot, _wanted = snapshotted
    with pytest.raises(Snapshot.DoesNotExist):
        restores.request_restore(workload=make_workload(), snapshot=snapshot)
    failed = Snapshot.objects.create(workload=workload, state=Snapshot.State.FAILED)
    with pytest.raises(PreflightError, match="not ready"):
        restores.request_restore(workload=workload, snapshot=failed)
    assert not RestoreJob.objects.exists()


def test_a_second_restore_while_one_is_active_is_busy(snapshotted):
    workload, _paths, snapshot, _wanted = snapshotted
    first = RestoreJob.objects.create(workload=workload, snapshot=snapshot)
    with pytest.raises(restores.RestoreBusy) as caught:
        restores.request_restore(workload=workload, snapshot=snapshot)
    assert caught.value.active == first
    assert RestoreJob.objects.count() == 1


# --- hostile archives: refused while extracting, live data byte-identical -------------------

CASES = [case for case in hostile.corpus("/placeholder") if case.volume_count == 1]


@pytest.mark.parametrize("name", [case.name for case in CASES])
def test_a_hostile_snapshot_fails_before_live_data_is_touched(name, make_workload, tmp_path):
    workload = make_workload()
    path = add_volume(workload, "data", "/data")
    fill(path, OLD)
    canary = tmp_path / "canary"
    (canary / "sub").mkdir(parents=True)
    (canary / "keep.txt").write_text("the canary")
    case = next(c for c in hostile.corpus(str(canary)) if c.name == name)
    snapshot = snapshot_from_bytes(workload, case.data, hostile.manifest())
    before, before_canary = trees([path]), describe(canary)

    job = restores.restore(workload=workload, snapshot=snapshot, limits=case.limits)

    job.refresh_from_db()
    assert job.outcome == Outcome.FAILED and job.reason_text
    assert_untouched(workload, [path], before)
    assert describe(canary) == before_canary
    assert not os.path.lexists("/pwned") and not os.path.lexists(tmp_path / "pwned")


# --- full disk --------------------------------------------------------------------------------

def mount_tmpfs(where: Path, size: str) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"SKIPPED: cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    return where


def unmount(where: Path) -> None:
    subprocess.run(["umount", str(where)], check=True)


@pytest.fixture
def small_disk():
    """A 6 MiB tmpfs in a temporary directory, unmounted and removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="berth-small-disk-"))
    mounted = mount_tmpfs(base / "fs", "6m")
    yield mounted
    unmount(mounted)
    subprocess.run(["rm", "-rf", str(base)], check=True)


def test_a_target_on_a_full_filesystem_is_refused_in_pre_flight(small_disk, make_workload,
                                                                  settings):
    settings.BERTH_SNAPSHOT_RESERVE_BYTES = 0
    workload = make_workload()
    VolumeMount.objects.create(workload=workload, scope="absolute", source=str(small_disk / "v"),
                               target="/data")
    live = small_disk / "v"
    live.mkdir()
    (live / "big.bin").write_bytes(os.urandom(4 << 20))
    snapshot = captures.capture_snapshot(workload=workload)  # the archive lives on the big disk
    assert snapshot.is_ready, snapshot.failure_text
    with open(live / "big.bin", "r+b") as fh:  # changed since, and still 4 MiB on the tmpfs
        fh.write(b"changed since")
    before = trees([live])

    job = restores.restore(workload=workload, snapshot=snapshot)

    refused(job, "Not enough free space on the filesystem of")
    assert_untouched(workload, [live], before)


def test_a_snapshot_that_fits_on_the_small_filesystem_is_restored(small_disk, make_workload,
                                                                   settings):
    settings.BERTH_SNAPSHOT_RESERVE_BYTES = 0
    workload = make_workload()
    VolumeMount.objects.create(workload=workload, scope="absolute", source=str(small_disk / "v"),
                               target="/data")
    live = small_disk / "v"
    live.mkdir()
    (live / "a.bin").write_bytes(os.urandom(1 << 20))
    wanted = trees([live])
    snapshot = captures.capture_snapshot(workload=workload)
    (live / "a.bin").write_bytes(b"changed")

    job = restores.restore(workload=workload, snapshot=snapshot)

    job.refresh_from_db()
    assert job.outcome == Outcome.SUCCEEDED, job.reason_text
    assert trees([live]) == wanted and strays([live]) == []


def test_pre_flight_counts_what_other_extractions_have_reserved(small_disk, make_workload,
                                                                settings):
    settings.BERTH_SNAPSHOT_RESERVE_BYTES = 0
    workload = make_workload()
    VolumeMount.objects.create(workload=workload, scope="absolute", source=str(small_disk / "v"),
                               target="/data")
    live = small_disk / "v"
    live.mkdir()
    (live / "a.bin").write_bytes(os.urandom(1 << 20))
    snapshot = captures.capture_snapshot(workload=workload)
    (live / "a.bin").write_bytes(b"changed")
    before = trees([live])
    # Another extraction (an import, say) has promised itself 5 of the tmpfs' 6 MiB.
    device = os.stat(small_disk).st_dev
    fd = os.open(small_disk, os.O_RDONLY)
    try:
        other = reservations.reserve({device: fd}, [reservations.Need(device, 5 << 20, 1)],
                                     reserve_bytes=0, reserve_inodes=0)
    finally:
        os.close(fd)

    job = restores.restore(workload=workload, snapshot=snapshot)

    refused(job, "Not enough free space on the filesystem of")
    assert_untouched(workload, [live], before)
    other.release()
    job = restores.restore(workload=workload, snapshot=snapshot)
    job.refresh_from_db()
    assert job.outcome == Outcome.SUCCEEDED, job.reason_text


# --- failures after pre-flight are undone -----------------------------------------------------

def second_exchange_fails(monkeypatch) -> list[str]:
    """The first volume swaps; the second one's renameat2 fails with EIO. Returns the calls."""
    real = exchange.exchange
    calls = []

    def second_fails(first: str, second: str) -> None:
        if ".berth-probe-" in second:  # the once-per-filesystem support probe
            return real(first, second)
        calls.append(second)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        real(first, second)

    monkeypatch.setattr(exchange, "exchange", second_fails)
    return calls


def test_a_failure_half_way_through_the_swap_puts_every_volume_back(snapshotted, monkeypatch):
    workload, paths, snapshot, _wanted = snapshotted
    before = trees(paths)
    calls = second_exchange_fails(monkeypatch)

    job = restores.restore(workload=workload, snapshot=snapshot)

    refused(job, "could not be prepared or swapped (Input/output error)")
    # The first volume was swapped and then swapped back (a third call).
    assert len(calls) == 3
    assert_untouched(workload, paths, before)
    assert EventLog.objects.filter(workload=workload, level="warning").exists()


def test_when_archiving_the_previous_data_fails_it_is_kept_and_said_where(snapshotted,
                                                                         monkeypatch):
    workload, paths, snapshot, wanted = snapshotted
    previous = trees(paths)

    def broken(*args, **kwargs):
        raise CaptureError("The disk for snapshots is full.")

    monkeypatch.setattr(writer, "scan_volumes", broken)

    job = restores.restore(workload=workload, snapshot=snapshot)

    job.refresh_from_db()
    assert job.outcome == Outcome.SUCCEEDED and trees(paths) == wanted
    assert len(job.kept_paths) == 2
    assert "could not be archived" in job.reason_text
    for kept in job.kept_paths:
        assert kept in job.reason_text
    assert [describe(Path(p)) for p in job.kept_paths] == previous
    assert all(Path(p).name.endswith(".old") for p in job.kept_paths)
    assert journals() == []


def test_an_unreadable_journal_is_refused_by_the_sweep(db, settings):
    folder = journal.directory()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "workload-3-job-3.json").write_text('{"format": "berth-restore-journal"}')
    try:
        report = sweep.recover_all()
        assert report.problems and "cannot be read" in report.problems[0]
    finally:
        (folder / "workload-3-job-3.json").unlink()


def test_a_journal_that_cannot_take_the_rollback_still_puts_everything_back(
    snapshotted, monkeypatch
):
    workload, paths, snapshot, _wanted = snapshotted
    before = trees(paths)
    second_exchange_fails(monkeypatch)
    failing_journal_writes(monkeypatch, journal.ROLLBACK)

    job = restores.restore(workload=workload, snapshot=snapshot)

    refused(job, "Input/output error")
    assert_untouched(workload, paths, before)


def test_a_journal_that_fails_after_the_commit_is_finished_by_the_sweep(snapshotted,
                                                                         monkeypatch):
    workload, paths, snapshot, wanted = snapshotted
    job = restore_left_committed(monkeypatch, workload, snapshot)
    job.refresh_from_db()
    assert job.state == RestoreJob.State.RUNNING  # left for the recovery, not guessed
    assert trees(paths) == wanted and len(journals()) == 1

    report = sweep.recover_all()

    assert report.recovered == [f"restore #{job.pk}"] and not report.problems
    job.refresh_from_db()
    assert job.outcome == Outcome.SUCCEEDED and job.pre_restore_snapshot.is_ready
    assert trees(paths) == wanted and strays(paths) == [] and journals() == []


def test_a_restore_killed_on_this_workload_is_recovered_before_the_next_one_runs(snapshotted,
                                                                                monkeypatch):
    workload, paths, snapshot, wanted = snapshotted
    first = restore_left_committed(monkeypatch, workload, snapshot)
    assert len(journals()) == 1

    second = restores.restore(workload=workload, snapshot=snapshot)

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.outcome == Outcome.SUCCEEDED  # finished from its journal first
    assert second.outcome == Outcome.SUCCEEDED
    assert journals() == [] and strays(paths) == []


def test_a_snapshot_of_reordered_volumes_is_refused(snapshotted):
    """Removing and re-adding /data puts it after /config: index 0 now means /config.

    Restoring by index alone would put the snapshot's /data files into /config.
    """
    workload, paths, snapshot, _wanted = snapshotted
    data = workload.volumes.get(target="/data")
    source = data.source
    data.delete()
    VolumeMount.objects.create(workload=workload, scope="stage", source=source, target="/data")
    before = [describe(p) for p in paths]

    job = restores.restore(workload=workload, snapshot=snapshot)

    refused(job, "mounted at /data when the snapshot was taken and is mounted at /config now")
    assert [describe(p) for p in paths] == before


def test_a_lock_lost_before_the_journal_refuses_the_restore(snapshotted, monkeypatch):
    from lib import locks

    workload, paths, snapshot, _wanted = snapshotted
    before = trees(paths)
    monkeypatch.setattr(locks, "still_held", lambda workload_id: False)

    job = restores.restore(workload=workload, snapshot=snapshot)

    refused(job, "The workload's lock was lost")
    assert_untouched(workload, paths, before)


def test_a_lock_lost_later_stops_the_restore_and_leaves_it_to_the_next_holder(snapshotted,
                                                                               monkeypatch):
    """The lock is found lost after extracting, before the containers stop: nothing more is
    changed (another process could hold the lock); the next holder rolls the restore back."""
    from lib import locks

    workload, paths, snapshot, _wanted = snapshotted
    before = trees(paths)
    real = journal.Journal.record
    lost = []

    def record(self, step, **details):
        real(self, step, **details)
        if step == journal.EXTRACTED:
            lost.append(True)

    with monkeypatch.context() as patch:
        patch.setattr(journal.Journal, "record", record)
        patch.setattr(locks, "still_held", lambda workload_id: not lost)
        job = restores.restore(workload=workload, snapshot=snapshot)

    job.refresh_from_db()
    assert job.state == RestoreJob.State.RUNNING and len(journals()) == 1
    assert trees(paths) == before  # the containers were never stopped, nothing swapped

    report = sweep.recover_all()

    assert report.recovered == [f"restore #{job.pk}"]
    refused(job, "lost the workload's lock")
    assert_untouched(workload, paths, before)


def test_a_capture_finishes_a_killed_restore_before_reading_the_volumes(snapshotted,
                                                                         monkeypatch):
    workload, paths, snapshot, wanted = snapshotted
    job = restore_left_committed(monkeypatch, workload, snapshot)
    assert len(journals()) == 1

    taken = captures.capture_snapshot(workload=workload)

    job.refresh_from_db()
    assert job.outcome == Outcome.SUCCEEDED and journals() == []
    assert taken.is_ready and trees(paths) == wanted
