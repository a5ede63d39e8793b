"""The pre-deploy snapshot's budget: past its bytes or its time it is abandoned, and the deploy
goes on (fail open); other captures have no budget."""

from __future__ import annotations

import io
import os
import time

import pytest
from django.contrib.auth.models import User
from django.test import Client

from engine import captures, deploys
from engine.locked import capture
from lib import locks, runtime
from snapshots import writer
from snapshots.archive_format import Limits
from snapshots.errors import OverBudget
from snapshots.models import Snapshot
from tests.snapshots.conftest import add_volume, archive_files, fill, leftovers
from workloads.models import DeployRecord, EventLog, Workload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]
Reason, Outcome = DeployRecord.Reason, DeployRecord.Outcome
SPARSE = 10 << 30


@pytest.fixture
def data_workload(make_workload) -> Workload:
    workload = make_workload(auto_backup_before_deploy=True)
    fill(add_volume(workload, "data", "/data"), {"index.html": b"<h1>before</h1>"})
    return workload


def sparse_volume(workload: Workload) -> str:
    """A 10 GiB file that takes no disk (its apparent size is what an archive would hold)."""
    path = add_volume(workload, "big", "/big") / "disk.img"
    with open(path, "wb"):
        pass
    os.truncate(path, SPARSE)
    return str(path)


def assert_abandoned(workload: Workload, record: DeployRecord, params: dict) -> Snapshot:
    """The deploy went on; its snapshot failed over budget and left no file behind."""
    assert record.outcome == Outcome.SUCCEEDED, record.failure_code
    assert all(c.running for c in runtime.list_containers(workload.pk))
    record.refresh_from_db()
    assert record.backup_failure == DeployRecord.BackupFailure.OVER_BUDGET
    snapshot = Snapshot.objects.get(workload=workload, kind=Snapshot.Kind.PRE_DEPLOY)
    assert snapshot.deploy == record
    assert (snapshot.state, snapshot.failure_code) == ("failed", "over_budget")
    assert snapshot.failure_params == params
    assert archive_files(workload) == [] and leftovers() == []
    return snapshot


def test_it_abandons_a_snapshot_over_its_size_budget_and_deploys(
    docker, current_tag, data_workload, settings
):
    settings.BERTH_PRE_DEPLOY_BACKUP_MAX_BYTES = 1 << 20
    big = sparse_volume(data_workload)

    record = deploys.dispatch(workload=data_workload, reason=Reason.MANUAL)

    snapshot = assert_abandoned(data_workload, record, {"limit": 1 << 20})
    assert snapshot.failure_text == (
        "The snapshot would hold more than its budget of 1048576 bytes "
        "(BERTH_PRE_DEPLOY_BACKUP_MAX_BYTES); it was abandoned."
    )
    warnings = [e.text for e in data_workload.events.filter(level=EventLog.Level.WARNING)]
    assert (
        f"The snapshot before deploy #{record.pk} was abandoned: it would hold more than its "
        "budget of 1048576 bytes (BERTH_PRE_DEPLOY_BACKUP_MAX_BYTES). The deploy went on "
        "without it."
    ) in warnings
    assert f"Snapshot #{snapshot.pk} failed; the snapshots panel says why." in warnings
    assert os.stat(big).st_size == SPARSE  # the data itself is left alone
    client = Client()
    client.force_login(User.objects.create_superuser("root-admin", password="x"))
    [listed] = client.get(f"/api/workloads/{data_workload.pk}/snapshots").json()["results"]
    assert (listed["id"], listed["failure_code"]) == (snapshot.pk, "over_budget")
    ledger = client.get(f"/api/workloads/{data_workload.pk}/deploys").json()["results"]
    assert ledger[0]["backup_failure"] == "over_budget"
    page = client.get(f"/workloads/{data_workload.pk}/").content.decode()
    assert "went over its time or size budget and was abandoned" in page


def test_it_abandons_a_snapshot_over_its_time_budget_and_deploys(
    docker, current_tag, data_workload, settings, monkeypatch
):
    """A slow capture (each file takes a tenth of a second) against a one-second budget."""
    settings.BERTH_PRE_DEPLOY_BACKUP_TIMEOUT = 1
    fill(add_volume(data_workload, "many", "/many"),
         {f"file-{n:02}": b"x" * 1000 for n in range(40)})
    real = capture._Progress.__call__

    def slow(self, done):
        time.sleep(0.1)
        real(self, done)

    monkeypatch.setattr(capture._Progress, "__call__", slow)
    record = deploys.dispatch(workload=data_workload, reason=Reason.MANUAL)

    assert_abandoned(data_workload, record, {"seconds": 1})
    warning = data_workload.events.filter(level=EventLog.Level.WARNING).order_by("id").last()
    assert warning.text == (
        f"The snapshot before deploy #{record.pk} was abandoned: it took longer than its budget "
        "of 1 s (BERTH_PRE_DEPLOY_BACKUP_TIMEOUT). The deploy went on without it."
    )


def test_within_its_budget_the_snapshot_is_taken_as_before(
    docker, current_tag, data_workload, settings
):
    settings.BERTH_PRE_DEPLOY_BACKUP_MAX_BYTES = len(b"<h1>before</h1>")  # exactly the data

    record = deploys.dispatch(workload=data_workload, reason=Reason.MANUAL)

    assert record.outcome == Outcome.SUCCEEDED
    record.refresh_from_db()
    assert record.backup_failure == ""
    snapshot = record.pre_deploy_snapshot
    assert snapshot.is_ready and snapshot.failure_code == ""
    assert archive_files(data_workload) == [snapshot.archive]
    assert not data_workload.events.filter(level=EventLog.Level.WARNING).exists()


def test_the_time_budget_stops_the_write_and_removes_its_temporary_file(
    data_workload, monkeypatch
):
    """The clock passes the deadline once the archive is being written (a temporary file
    exists): the write stops, the file goes, the row fails over budget."""
    fill(add_volume(data_workload, "more", "/more"), {"blob": os.urandom(3 << 20)})
    now = [0.0]
    seen: list[list[str]] = []
    real = writer.write_archive

    def late(*args, **kwargs):
        seen.append(archive_files(data_workload))
        now[0] = 1000.0
        return real(*args, **kwargs)

    monkeypatch.setattr(writer, "write_archive", late)
    budget = writer.Budget.starting_now(max_bytes=1 << 30, seconds=60, clock=lambda: now[0])
    with locks.workload_lock(data_workload.pk):
        snapshot = capture.capture_locked(workload=data_workload, kind=Snapshot.Kind.PRE_DEPLOY,
                                          budget=budget)

    assert [len(files) for files in seen] == [1]  # the temporary archive, while writing
    assert (snapshot.state, snapshot.failure_code) == ("failed", "over_budget")
    snapshot.refresh_from_db()
    assert snapshot.failure_params == {"seconds": 60}
    assert archive_files(data_workload) == [] and leftovers() == []


def test_the_byte_budget_is_checked_while_writing_too(tmp_path):
    """A scan taken without the budget: the write stops before the member that would pass
    it, and never finishes that file."""
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "big").write_bytes(os.urandom(3 << 20))
    scans = writer.scan_volumes([str(tmp_path / "v")], Limits.from_settings())
    done: list[int] = []
    budget = writer.Budget.starting_now(max_bytes=(1 << 20) + 1, seconds=60)

    with pytest.raises(OverBudget) as caught:
        writer.write_archive(io.BytesIO(), {"volumes": []}, scans, progress=done.append,
                             budget=budget)

    assert caught.value.code == "over_budget" and caught.value.params == {"limit": (1 << 20) + 1}
    assert done == []  # the file was never finished


def test_the_scan_gives_up_at_the_budget(tmp_path):
    (tmp_path / "v").mkdir()
    for n in range(3):
        (tmp_path / "v" / f"f{n}").write_bytes(b"x" * 100)
    budget = writer.Budget.starting_now(max_bytes=250, seconds=60)
    with pytest.raises(OverBudget) as caught:
        writer.scan_volumes([str(tmp_path / "v")], Limits.from_settings(), budget)
    assert caught.value.params == {"limit": 250}
    assert writer.scan_volumes([str(tmp_path / "v")], Limits.from_settings(),
                               writer.Budget.starting_now(max_bytes=300, seconds=60))


def test_other_captures_have_no_budget(data_workload, settings):
    settings.BERTH_PRE_DEPLOY_BACKUP_MAX_BYTES = 1
    settings.BERTH_PRE_DEPLOY_BACKUP_TIMEOUT = 1
    snapshot = captures.capture_snapshot(workload=data_workload)
    snapshot.refresh_from_db()
    assert snapshot.state == Snapshot.State.READY, snapshot.failure_text
    assert snapshot.failure_code == ""


def test_a_volume_of_symlinks_only_is_held_to_the_budget_and_the_entry_cap(tmp_path):
    # A container can fill its own volume with entries a snapshot skips (review finding).
    import itertools

    from snapshots import writer
    from snapshots.archive_format import Limits
    from snapshots.errors import CaptureError, OverBudget

    volume = tmp_path / "vol"
    volume.mkdir()
    for n in range(3000):
        os.symlink("/nowhere", volume / f"l{n:05d}")
    limits = Limits(**{**vars(Limits.from_settings()), "max_entries": 1000})
    ticks = itertools.chain([0.0, 5.0], itertools.repeat(1e9))  # then long past 10 s
    budget = writer.Budget.starting_now(max_bytes=1 << 40, seconds=10,
                                        clock=lambda: next(ticks))

    with pytest.raises(OverBudget):
        writer.scan_volumes([str(volume)], Limits.from_settings(), budget)
    with pytest.raises(CaptureError, match="BERTH_SNAPSHOT_MAX_ENTRIES"):
        writer.scan_volumes([str(volume)], limits, None)
