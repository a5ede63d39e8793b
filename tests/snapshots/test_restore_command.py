"""manage.py restore and manage.py recover, called as an operator would."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from engine.locked import recovery
from snapshots import journal, storage
from snapshots.models import RestoreJob
from tests.snapshots.restoring import journals, strays, trees

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]


def test_it_restores_with_a_progress_bar(snapshotted):
    workload, paths, snapshot, wanted = snapshotted
    out = io.StringIO()

    call_command("restore", str(workload), str(snapshot.pk), "--confirm", workload.path,
                 stdout=out)

    text = out.getvalue()
    job = RestoreJob.objects.get()
    assert f"Restoring snapshot #{snapshot.pk}" in text
    assert "[##############################] 100%" in text
    assert "Unpacking the snapshot beside the volumes" in text
    assert f"Restore #{job.pk}: Restored." in text
    assert f"The previous data is snapshot #{job.pre_restore_snapshot_id}." in text
    assert trees(paths) == wanted


@pytest.mark.parametrize("confirm", ["", "WEB", "other", "web"])
def test_it_needs_the_path_to_confirm(confirm, snapshotted):
    workload, paths, snapshot, _wanted = snapshotted
    before = trees(paths)
    expected = f"--confirm must be the workload's path, '{workload.path}'"
    with pytest.raises(CommandError, match=expected):
        call_command("restore", str(workload.pk), str(snapshot.pk), "--confirm", confirm,
                     stdout=io.StringIO())
    assert trees(paths) == before and not RestoreJob.objects.exists()


def test_it_refuses_another_workloads_snapshot(snapshotted, make_workload):
    workload, _paths, snapshot, _wanted = snapshotted
    other = make_workload(slug="other")
    with pytest.raises(CommandError, match=f"has no snapshot #{snapshot.pk}"):
        call_command("restore", str(other.pk), str(snapshot.pk), "--confirm", other.path,
                     stdout=io.StringIO())


def test_a_failed_restore_is_an_error_that_says_why(snapshotted):
    workload, paths, snapshot, _wanted = snapshotted
    storage.archive_path(workload.pk, snapshot.archive).write_bytes(b"not the archive")
    before = trees(paths)
    with pytest.raises(CommandError, match="failed; nothing was changed: The archive of snapshot"):
        call_command("restore", str(workload.pk), str(snapshot.pk), "--confirm", workload.path,
                     stdout=io.StringIO())
    assert trees(paths) == before and strays(paths) == [] and journals() == []


def test_recover_restores_finishes_a_committed_journal_step_by_step(snapshotted, monkeypatch):
    """The sweep, called in-process on a journal left at the commit (as a crash leaves it)."""
    from engine import restores as engine

    workload, paths, snapshot, wanted = snapshotted
    job = RestoreJob.objects.create(workload=workload, snapshot=snapshot)

    def stop_after_commit(*args, **kwargs):
        raise RuntimeError("stopped after the commit")

    with monkeypatch.context() as patch:
        patch.setattr(recovery, "finish_forward", stop_after_commit)
        engine.restore(workload=workload, snapshot=snapshot, job=job)
    job.refresh_from_db()
    assert job.state == RestoreJob.State.RUNNING
    [name] = journals()
    assert journal.load(journal.directory() / name).committed
    assert trees(paths) == wanted  # swapped, not yet finished

    out = io.StringIO()
    call_command("recover", stdout=out)

    assert f"Restore #{job.pk} of workload {workload.pk}: finishing it." in out.getvalue()
    assert "Recovered 1 interrupted operation(s): restore #" in out.getvalue()
    job.refresh_from_db()
    assert job.outcome == RestoreJob.Outcome.SUCCEEDED and job.pre_restore_snapshot_id
    assert "Berth finished it afterwards" in job.reason_text
    assert journals() == [] and strays(paths) == [] and trees(paths) == wanted
    again = io.StringIO()
    call_command("recover", stdout=again)
    assert "Nothing was interrupted." in again.getvalue()
