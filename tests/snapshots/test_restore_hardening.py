"""Regression tests for the adversarial review of restore: each test names the finding it pins.

No containers here (the `snapshotted` workload was never deployed); the
crash tests in test_restore_crash.py cover the same paths with a running
workload and a killed process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from django.db import connection

from engine import deploys, queue, restores, sweep, tasks
from engine.locked import capture, recovery
from lib import exchange, locks, taskqueue
from snapshots import journal
from snapshots.models import RestoreJob
from tests.conftest import REPO_ROOT, child_env
from tests.snapshots.restoring import (
    failing_journal_writes,
    journals,
    restore_left_committed,
    strays,
    trees,
)
from workloads.models import DeployRecord

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]
Outcome = RestoreJob.Outcome


def queued(workload, snapshot) -> RestoreJob:
    """A queued job, as request_restore() makes it, without handing it to the (synchronous)
    test worker."""
    return RestoreJob.objects.create(workload=workload, snapshot=snapshot,
                                     bytes_total=snapshot.data_bytes)


def on_disk(workload_id: int, job_id: int) -> journal.Journal:
    return journal.load(journal.path_for(workload_id, job_id))


# --- finding 2: a COMMIT record whose write failed ------------------------------------------

def test_a_commit_that_could_not_be_written_is_rolled_back(snapshotted, monkeypatch):
    workload, paths, snapshot, _wanted = snapshotted
    before = trees(paths)
    failing_journal_writes(monkeypatch, journal.COMMIT)

    job = restores.restore(workload=workload, snapshot=snapshot)

    job.refresh_from_db()
    assert job.outcome == Outcome.FAILED and "No space left" in job.reason_text
    assert trees(paths) == before and strays(paths) == [] and journals() == []


def test_a_commit_that_reached_the_disk_despite_its_error_is_overruled_by_the_rollback(
    snapshotted, monkeypatch
):
    """The rename of the COMMIT record happened, its directory's fsync failed: the restore
    rolls back, and the ROLLBACK record that follows it on disk says so to any later reader."""
    workload, paths, snapshot, _wanted = snapshotted
    before = trees(paths)
    seen: list[list[str]] = []
    real = journal.write

    def write(record) -> None:
        real(record)
        seen.append([s["step"] for s in record.steps])
        if record.steps[-1]["step"] == journal.COMMIT:
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(journal, "write", write)

    job = restores.restore(workload=workload, snapshot=snapshot)

    job.refresh_from_db()
    assert job.outcome == Outcome.FAILED and trees(paths) == before and journals() == []
    committed = [i for i, steps in enumerate(seen) if journal.COMMIT in steps]
    assert len(committed) == 1  # the COMMIT record was on disk for a moment …
    following = seen[committed[0] + 1]
    assert following[-1] == journal.ROLLBACK and journal.COMMIT not in following  # … no more


def test_commit_followed_by_rollback_is_not_committed():
    record = journal.Journal(job=1, workload=1, snapshot=1, reference="", targets=[])
    record.steps = [{"step": journal.SWAP}, {"step": journal.COMMIT}]
    assert record.committed
    record.steps.append({"step": journal.ROLLBACK})
    assert not record.committed


def test_when_neither_commit_nor_rollback_can_be_written_nothing_moves_until_the_sweep(
    snapshotted, monkeypatch
):
    workload, paths, snapshot, wanted = snapshotted
    before = trees(paths)
    with monkeypatch.context() as patch:
        failing_journal_writes(patch, journal.COMMIT, journal.ROLLBACK)
        job = restores.restore(workload=workload, snapshot=snapshot)

    job.refresh_from_db()
    assert job.state == RestoreJob.State.RUNNING  # left to the sweep, not guessed
    assert trees(paths) == wanted  # every volume still swapped: all on one side
    assert not on_disk(workload.pk, job.pk).committed

    report = sweep.recover_all()

    assert report.recovered == [f"restore #{job.pk}"] and not report.problems
    job.refresh_from_db()
    assert job.outcome == Outcome.FAILED
    assert trees(paths) == before and strays(paths) == [] and journals() == []


# --- finding 3: temporary files of other restores ---------------------------------------

def test_temporary_journal_files_are_removed_only_by_their_workloads_lock_holder(snapshotted):
    workload, _paths, _snapshot, _wanted = snapshotted
    folder = journal.directory()
    folder.mkdir(parents=True, exist_ok=True)
    mine = folder / f".workload-{workload.pk}-job-7.json.tmp-0123abcd"
    other = folder / f".workload-{workload.pk + 1000}-job-8.json.tmp-0123abcd"
    mine.write_text("{")
    other.write_text("{")

    assert journal.scan().temps  # listing removes nothing
    assert mine.exists() and other.exists()
    with locks.workload_lock(workload.pk):
        recovery.recover_workload(workload)

    assert not mine.exists()
    assert other.exists()  # another workload's restore may be writing it right now
    other.unlink()


# --- finding 4: one unreadable journal -------------------------------------------------------

def test_an_unreadable_journal_concerns_only_its_own_workload(snapshotted, make_workload):
    workload, _paths, _snapshot, _wanted = snapshotted
    other = make_workload()
    broken = journal.path_for(workload.pk, 99)
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_text('{"format": "berth-restore-journal"}')
    try:
        with locks.workload_lock(other.pk):
            assert recovery.recover_workload(other) == 0  # the other workload is not hurt

        with locks.workload_lock(workload.pk), pytest.raises(recovery.RecoveryError,
                                                             match="cannot be read"):
            recovery.recover_workload(workload)

        record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
        record.refresh_from_db()
        assert record.outcome == DeployRecord.Outcome.FAILED  # recorded, not left claimed
        assert record.failure_code == DeployRecord.Failure.INTERNAL

        report = sweep.recover_all()
        assert len(report.problems) == 1 and "cannot be read" in report.problems[0]
    finally:
        broken.unlink()


# --- finding 5: the sweep on a full disk -----------------------------------------------------

def test_the_sweep_finishes_a_committed_restore_when_the_journal_cannot_be_written(
    snapshotted, monkeypatch
):
    workload, paths, snapshot, wanted = snapshotted
    job = restore_left_committed(monkeypatch, workload, snapshot)

    with monkeypatch.context() as patch:
        failing_journal_writes(patch, journal.RECOVER, journal.REDEPLOY, journal.TIDY,
                               journal.ARCHIVE)
        report = sweep.recover_all()

    assert report.recovered == [f"restore #{job.pk}"] and not report.problems
    job.refresh_from_db()
    assert job.outcome == Outcome.SUCCEEDED and job.pre_restore_snapshot.is_ready
    assert trees(paths) == wanted and strays(paths) == [] and journals() == []


# --- finding 6: jobs with a journal are the recovery's to close ------------------------------

def test_a_job_whose_journal_cannot_be_read_is_not_closed_as_if_nothing_happened(
    snapshotted, monkeypatch
):
    workload, paths, snapshot, wanted = snapshotted
    job = restore_left_committed(monkeypatch, workload, snapshot)
    path = journal.path_for(workload.pk, job.pk)
    good = path.read_bytes()
    path.write_bytes(b"{ damaged")

    report = sweep.recover_all()

    job.refresh_from_db()
    assert report.problems and job.state == RestoreJob.State.RUNNING
    assert trees(paths) == wanted

    path.write_bytes(good)  # an operator repaired it
    report = sweep.recover_all()

    job.refresh_from_db()
    assert not report.problems and job.outcome == Outcome.SUCCEEDED
    assert job.pre_restore_snapshot.is_ready and strays(paths) == [] and journals() == []


def test_a_committed_journal_of_a_job_already_marked_is_still_finished(snapshotted,
                                                                       monkeypatch):
    workload, paths, snapshot, wanted = snapshotted
    job = restore_left_committed(monkeypatch, workload, snapshot)
    RestoreJob.objects.filter(pk=job.pk).update(state=RestoreJob.State.FINISHED,
                                                outcome=Outcome.FAILED)

    sweep.recover_all()

    job.refresh_from_db()
    assert job.pre_restore_snapshot is not None and job.pre_restore_snapshot.is_ready
    assert trees(paths) == wanted and strays(paths) == [] and journals() == []


# --- finding 1: no task timeout, no recovery in web requests, a sweep every minute ------------

def test_berths_tasks_are_handed_to_the_worker_without_a_timeout(monkeypatch):
    """django-q2 itself is not run here: this checks what Berth asks of it (the broker call is
    replaced to capture its arguments). django-q2 reads timeout -1 as "no timeout"."""
    handed = []
    monkeypatch.setattr(taskqueue, "async_task", lambda *a, **kw: handed.append((a, kw)))
    queue.enqueue(queue.RESTORE, 5, name="restore-5")
    queue.enqueue(queue.CAPTURE, 6, name="snapshot-6")
    queue.enqueue(queue.DEPLOY, 7, name="deploy-7")

    assert [args for args, _kw in handed] == [
        ("engine.tasks.run_restore", 5), ("engine.tasks.run_capture", 6),
        ("engine.tasks.run_deploy", 7),
    ]
    assert [kw["timeout"] for _args, kw in handed] == [-1, -1, -1]
    # Each path names a task function that exists.
    assert all(callable(getattr(tasks, args[0].rsplit(".", 1)[1])) for args, _kw in handed)


@pytest.mark.django_db(transaction=True)  # child processes read what it wrote
def test_a_web_request_never_recovers_a_journal_and_the_sweep_process_does(snapshotted,
                                                                           monkeypatch):
    """The sweep runs as its own process (`recover --every`), as `make run` starts it."""
    workload, paths, snapshot, wanted = snapshotted
    killed = restore_left_committed(monkeypatch, workload, snapshot)
    staged = strays(paths)

    with pytest.raises(restores.RestoreBusy) as busy:
        restores.request_restore(workload=workload, snapshot=snapshot)

    assert busy.value.active.pk == killed.pk
    assert strays(paths) == staged and len(journals()) == 1  # nothing recovered here

    sweeper = subprocess.Popen(
        [sys.executable, "manage.py", "recover", "--every", "1"], cwd=REPO_ROOT,
        env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while journals() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        sweeper.send_signal(signal.SIGTERM)
        output, _ = sweeper.communicate(timeout=60)

    assert sweeper.returncode == 0, output
    assert "Sweep stopped." in output
    killed.refresh_from_db()
    assert killed.outcome == Outcome.SUCCEEDED, output
    assert journals() == [] and strays(paths) == [] and trees(paths) == wanted


def test_a_second_delivery_that_gives_up_waiting_does_not_end_the_running_restore(
    snapshotted, settings
):
    workload, _paths, snapshot, _wanted = snapshotted
    job = queued(workload, snapshot)
    RestoreJob.objects.filter(pk=job.pk).update(state=RestoreJob.State.RUNNING)
    job.refresh_from_db()
    settings.BERTH_DEPLOY_LOCK_TIMEOUT = 0.2
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with locks.workload_lock(workload.pk):
            held.set()
            release.wait(10)
        connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    try:
        restores.restore(workload=workload, snapshot=snapshot, job=job)
    finally:
        release.set()
        thread.join()

    job.refresh_from_db()
    assert job.state == RestoreJob.State.RUNNING  # still the first delivery's


# --- finding 7: a deploy waits for a restore of any length --------------------------------

def hold_lock_for(workload_id: int, seconds: float) -> threading.Thread:
    held = threading.Event()

    def holder() -> None:
        with locks.workload_lock(workload_id):
            held.set()
            time.sleep(seconds)
        connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(10)
    return thread


def test_the_lock_wait_goes_on_while_the_caller_wants_it(db, settings):
    settings.BERTH_DEPLOY_LOCK_TIMEOUT = 0.3
    thread = hold_lock_for(424242, 1.5)
    asked = []
    try:
        with locks.workload_lock(424242, keep_waiting=lambda: asked.append(1) or True):
            assert locks.is_held(424242)
    finally:
        thread.join()
    assert asked  # the timeout passed and the caller chose to wait on


def test_the_lock_wait_ends_at_the_timeout_without_a_reason_to_wait(db, settings):
    settings.BERTH_DEPLOY_LOCK_TIMEOUT = 0.3
    thread = hold_lock_for(424243, 1.5)
    try:
        with pytest.raises(locks.LockTimeout), \
                locks.workload_lock(424243, keep_waiting=lambda: False):
            pass
    finally:
        thread.join()


def test_a_deploy_keeps_waiting_while_a_restore_of_its_workload_is_active(snapshotted):
    workload, _paths, snapshot, _wanted = snapshotted
    waiting = deploys._restore_running(workload)
    assert not waiting()
    queued(workload, snapshot)
    assert waiting()


# --- finding 8: the low ones ---------------------------------------------------------------

def test_probe_directories_of_dead_processes_are_removed(tmp_path):
    dead = tmp_path / ".berth-probe-999999999-0123456789ab-a"
    alive = tmp_path / f".berth-probe-{os.getpid()}-0123456789ab-b"
    dead.mkdir()
    alive.mkdir()
    exchange.forget_probes()

    exchange.supported(str(tmp_path))

    assert not dead.exists() and alive.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name]
    exchange.forget_probes()


def test_a_failed_archive_after_the_redeploy_does_not_redeploy_again(snapshotted,
                                                                     monkeypatch):
    """The emergency redeploy is for a redeploy that never ran, not for a second one."""
    workload, paths, snapshot, wanted = snapshotted
    redeploys = []
    monkeypatch.setattr(recovery, "redeploy",
                        lambda record, job, workload, committed: redeploys.append(job.pk)
                        or job.link(deploy=DeployRecord.open(
                            workload=workload, reason=DeployRecord.Reason.RESTORE)))

    def broken(**kwargs):
        raise RuntimeError("archive broke")

    monkeypatch.setattr(capture, "capture_copies_locked", broken)

    job = restores.restore(workload=workload, snapshot=snapshot)

    assert len(redeploys) == 1, redeploys
    assert trees(paths) == wanted
    job.refresh_from_db()
    assert job.state == RestoreJob.State.RUNNING  # the rest is the sweep's


# --- the second review ----------------------------------------------------------------------

def test_a_lock_lost_after_the_commit_stops_everything_until_the_next_holder(snapshotted,
                                                                              monkeypatch):
    """After the commit the restore checks the lock before each step; found lost, it changes
    nothing more (no redeploy, no archive, no removal) and the sweep finishes it."""
    workload, paths, snapshot, wanted = snapshotted
    real = journal.Journal.record
    lost = []

    def record(self, step, **details):
        real(self, step, **details)
        if step == journal.COMMIT:
            lost.append(True)

    monkeypatch.setattr(journal.Journal, "record", record)
    monkeypatch.setattr(locks, "still_held", lambda workload_id: not lost)
    job = restores.restore(workload=workload, snapshot=snapshot)

    job.refresh_from_db()
    assert job.state == RestoreJob.State.RUNNING and job.deploy is None
    assert job.pre_restore_snapshot is None
    assert trees(paths) == wanted and len(strays(paths)) == 2  # the old data, untouched
    steps = [s["step"] for s in on_disk(workload.pk, job.pk).steps]
    assert steps[-1] == journal.COMMIT

    lost.clear()
    sweep.recover_all()

    job.refresh_from_db()
    assert job.outcome == Outcome.SUCCEEDED and job.pre_restore_snapshot.is_ready
    assert strays(paths) == [] and journals() == []


def test_one_workloads_unremovable_temporary_file_does_not_stop_the_sweep(snapshotted,
                                                                          make_workload,
                                                                          monkeypatch):
    workload, paths, snapshot, wanted = snapshotted
    job = restore_left_committed(monkeypatch, workload, snapshot)
    other = make_workload()
    stuck = journal.directory() / f".workload-{other.pk}-job-3.json.tmp-deadbeef"
    stuck.mkdir()  # unlink() fails on it: IsADirectoryError
    try:
        report = sweep.recover_all()
    finally:
        stuck.rmdir()

    assert report.recovered == [f"restore #{job.pk}"]
    assert len(report.problems) == 1 and f"workload {other.pk}" in report.problems[0]
    job.refresh_from_db()
    assert job.outcome == Outcome.SUCCEEDED and trees(paths) == wanted


def test_a_journal_the_sweep_keeps_refusing_is_noted_once(snapshotted, monkeypatch):
    workload, paths, snapshot, _wanted = snapshotted
    job = restore_left_committed(monkeypatch, workload, snapshot)
    hidden = paths[0].with_name("hidden")
    paths[0].rename(hidden)  # someone moved a volume by hand: no restore leaves this
    try:
        for _ in range(3):
            report = sweep.recover_all()
            assert len(report.problems) == 1
        steps = [s["step"] for s in on_disk(workload.pk, job.pk).steps]
        assert steps.count(journal.RECOVER) == 1
    finally:
        hidden.rename(paths[0])
    assert not sweep.recover_all().problems


def test_a_planted_journal_cannot_name_a_directory_outside_the_volumes(snapshotted, tmp_path,
                                                                        settings):
    """Only paths where Berth keeps volumes are accepted; a journal naming /etc-like
    directories is refused as unreadable and nothing is renamed."""
    workload, _paths, _snapshot, _wanted = snapshotted
    settings.BERTH_ABSOLUTE_VOLUME_ROOTS = []  # tmp_path is then no place for a volume
    victim = tmp_path / "etc"
    victim.mkdir()
    (victim / "passwd").write_text("root:x:0:0")
    staging = victim.with_name(".berth-restore-9-0-0123abcd.new")
    staging.mkdir()
    planted = journal.Journal(
        job=9, workload=workload.pk, snapshot=1, reference="",
        targets=[journal.Target(
            index=0, live=str(victim), staging=str(staging),
            aside=str(victim.with_name(".berth-restore-9-0-0123abcd.old")), mode=journal.EXCHANGE,
            live_id=journal.identity(str(staging)), staging_id=journal.identity(str(victim)),
        )],
        steps=[{"step": journal.PREPARE}, {"step": journal.SWAP, "index": 0}],
    )
    journal.write(planted)

    report = sweep.recover_all()

    assert report.problems and "not where Berth keeps volumes" in report.problems[0]
    assert (victim / "passwd").read_text() == "root:x:0:0" and staging.is_dir()
    planted.path.unlink()


def test_a_volume_whose_parents_are_missing_too_is_made_and_restored(snapshotted):
    workload, paths, snapshot, wanted = snapshotted
    stage_dir = paths[0].parent
    subprocess.run(["rm", "-rf", str(stage_dir)], check=True)

    job = restores.restore(workload=workload, snapshot=snapshot)

    job.refresh_from_db()
    assert job.outcome == Outcome.SUCCEEDED, job.reason_text
    assert trees(paths) == wanted


# --- the third review ------------------------------------------------------------------------

def test_a_journal_is_never_brought_back_or_overwritten_by_a_process_that_lost_it(db):
    from lib import paths

    live = os.path.join(paths.volumes_root(), "p", "s", "data")
    staging, aside = (os.path.join(os.path.dirname(live), f".berth-restore-31-0-0123abcd.{e}")
                      for e in ("new", "old"))
    record = journal.Journal(job=31, workload=31, snapshot=1, reference="", targets=[
        journal.Target(index=0, live=live, staging=staging, aside=aside, mode=journal.EXCHANGE,
                       live_id=[1, 2]),
    ])
    journal.write(record)
    record.steps.append({"step": journal.PREPARE})
    journal.write(record)  # its own file: fine

    other = journal.load(record.path)  # another process recovers it …
    other.record(journal.RECOVER)
    other.record(journal.ROLLBACK)  # (two writes: the file system may hand out an inode again)
    with pytest.raises(journal.JournalTaken):
        record.record(journal.EXTRACTED)  # … so this one must not write over it
    with pytest.raises(journal.JournalTaken):
        journal.remove(record)  # … nor remove it
    assert [s["step"] for s in journal.load(record.path).steps][-2:] == [
        journal.RECOVER, journal.ROLLBACK]

    journal.remove(other)  # … and finishes it
    with pytest.raises(journal.JournalTaken):
        other.record(journal.CLEANED)
    assert not record.path.exists()  # not brought back


def test_an_archive_whose_record_was_lost_is_not_taken_twice(snapshotted, monkeypatch):
    workload, paths, snapshot, wanted = snapshotted
    with monkeypatch.context() as patch:
        failing_journal_writes(patch, journal.ARCHIVED)
        job = restores.restore(workload=workload, snapshot=snapshot)
    job.refresh_from_db()
    assert job.state == RestoreJob.State.RUNNING and job.pre_restore_snapshot.is_ready

    report = sweep.recover_all()

    assert not report.problems
    job.refresh_from_db()
    assert job.outcome == Outcome.SUCCEEDED
    assert workload.snapshots.filter(kind="pre_restore").count() == 1
    assert trees(paths) == wanted and strays(paths) == [] and journals() == []


def test_a_refusal_after_progress_leaves_the_journal_as_it_was(snapshotted, monkeypatch):
    """The previous data was removed by hand before it was archived: every sweep refuses,
    and after the first one the journal stops changing."""
    workload, paths, snapshot, _wanted = snapshotted
    job = restore_left_committed(monkeypatch, workload, snapshot)
    for name in strays(paths):
        subprocess.run(["rm", "-rf", str(paths[0].parent / name)], check=True)

    lengths = []
    for _ in range(4):
        report = sweep.recover_all()
        assert len(report.problems) == 1 and "missing" in report.problems[0]
        lengths.append(len(on_disk(workload.pk, job.pk).steps))
    assert lengths[1] == lengths[2] == lengths[3]


def test_a_planted_journal_cannot_reach_out_through_a_symlink(snapshotted, tmp_path, settings):
    workload, paths, _snapshot, _wanted = snapshotted
    settings.BERTH_ABSOLUTE_VOLUME_ROOTS = []  # tmp_path is then no place for a volume
    outside = tmp_path / "outside"
    (outside / "victim").mkdir(parents=True)
    link = paths[0].parent / "escape"
    link.symlink_to(outside)  # as a container could make inside its own volume
    live = link / "victim"
    planted = journal.Journal(
        job=12, workload=workload.pk, snapshot=1, reference="",
        targets=[journal.Target(
            index=0, live=str(live), staging=str(link / ".berth-restore-12-0-0123abcd.new"),
            aside=str(link / ".berth-restore-12-0-0123abcd.old"), mode=journal.EXCHANGE,
            live_id=journal.identity(str(live)),
        )],
        steps=[{"step": journal.PREPARE}],
    )
    journal.write(planted)
    try:
        with pytest.raises(journal.JournalError, match="not where Berth keeps volumes"):
            journal.load(planted.path)
    finally:
        planted.path.unlink()
        link.unlink()


# --- the fourth review -----------------------------------------------------------------------

def test_a_journal_written_before_the_generation_token_is_recovered(snapshotted, monkeypatch):
    workload, paths, snapshot, wanted = snapshotted
    job = restore_left_committed(monkeypatch, workload, snapshot)
    path = journal.path_for(workload.pk, job.pk)
    raw = json.loads(path.read_bytes())
    del raw["generation"]
    path.write_text(json.dumps(raw))

    report = sweep.recover_all()

    assert report.recovered == [f"restore #{job.pk}"] and not report.problems
    job.refresh_from_db()
    assert job.outcome == Outcome.SUCCEEDED and trees(paths) == wanted and journals() == []


def test_a_journal_named_by_an_older_berth_is_adopted_and_recovered(snapshotted, monkeypatch):
    """Berth used to name journals job-<id>.json: the sweep renames them, then recovers."""
    workload, paths, snapshot, wanted = snapshotted
    job = restore_left_committed(monkeypatch, workload, snapshot)
    path = journal.path_for(workload.pk, job.pk)
    raw = json.loads(path.read_bytes())
    del raw["generation"]
    (path.parent / f"job-{job.pk}.json").write_text(json.dumps(raw))
    path.unlink()

    report = sweep.recover_all()

    assert report.recovered == [f"restore #{job.pk}"] and not report.problems
    job.refresh_from_db()
    assert job.outcome == Outcome.SUCCEEDED and trees(paths) == wanted
    assert journals() == [] and strays(paths) == []


def test_a_journal_taken_by_another_writer_is_a_recovery_error_for_lock_holders(snapshotted,
                                                                                monkeypatch):
    workload, _paths, snapshot, _wanted = snapshotted
    restore_left_committed(monkeypatch, workload, snapshot)
    real = journal.write

    def taken(record) -> None:
        raise journal.JournalTaken("changed under it")

    monkeypatch.setattr(journal, "write", taken)
    with locks.workload_lock(workload.pk), pytest.raises(recovery.RecoveryError):
        recovery.recover_workload(workload)
    monkeypatch.setattr(journal, "write", real)
    assert not sweep.recover_all().problems
