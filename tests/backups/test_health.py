"""Backup health (backups/health.py) on a controlled clock, from rows made directly: no
capture, no S3. The API's GET /api/workloads/{id}/backup-health and the dashboard's marks
read the same answer."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from backups import health
from backups.models import BackupPolicy, BackupRun, BackupTarget, SnapshotCopy
from snapshots.models import Snapshot
from workloads.models import Workload

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)
LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def workload(make_workload) -> Workload:
    made = make_workload()
    Workload.objects.filter(pk=made.pk).update(created=at("2026-01-01T00:00:00"))
    return Workload.objects.with_parents().get(pk=made.pk)


@pytest.fixture
def target(db) -> BackupTarget:
    return BackupTarget.objects.create(name="offsite", kind="s3", bucket="berth-health",
                                       unencrypted=True)


def policy_for(owner, *, active_since: datetime = LONG_AGO, **fields) -> BackupPolicy:
    kind = type(owner).__name__.lower()
    policy = BackupPolicy.objects.create(**{kind: owner}, **fields)
    BackupPolicy.objects.filter(pk=policy.pk).update(active_since=active_since)
    return BackupPolicy.objects.get(pk=policy.pk)


def snapshot(workload, created: datetime, *, kind=Snapshot.Kind.SCHEDULED,
             state=Snapshot.State.READY) -> Snapshot:
    return Snapshot.objects.create(workload=workload, kind=kind, state=state, created=created)


def copy(workload, target, snap, state, finished: datetime, code: str = "") -> SnapshotCopy:
    return SnapshotCopy.objects.create(snapshot=snap, workload=workload, target=target,
                                       state=state, kind=snap.kind, taken=snap.created,
                                       failure_code=code, finished=finished)


def test_it_says_nothing_is_expected_without_a_policy(workload):
    found = health.health(workload, now=NOW)
    assert found.policy is None and found.follows == ""
    assert (found.stale, found.failing, found.next_run, found.mark) == (False, False, None, "none")
    assert found.last_drill is None  # a placeholder until restore drills exist


def test_a_workload_on_schedule_is_not_stale(workload):
    policy_for(workload.stage.project, every="daily", at=time(3, 0))
    snapshot(workload, at("2026-12-10T03:00:05"))
    snap = snapshot(workload, at("2026-12-10T09:00:00"), kind=Snapshot.Kind.MANUAL)

    found = health.health(workload, now=NOW)

    assert found.follows == "project"
    assert found.last_backup == snap  # the newest ready snapshot of any kind
    assert found.next_run == at("2026-12-11T03:00:00")
    assert found.expected_within == timedelta(days=2)
    assert (found.overdue, found.stale, found.mark) == (False, False, "ok")


def test_no_scheduled_snapshot_within_twice_the_interval_is_stale(workload):
    policy_for(workload, every="daily", at=time(3, 0))
    snapshot(workload, at("2026-12-08T03:00:00"))  # 57 hours before NOW
    snapshot(workload, at("2026-12-10T11:00:00"), kind=Snapshot.Kind.MANUAL)  # not scheduled
    snapshot(workload, at("2026-12-10T03:00:00"), state=Snapshot.State.FAILED)

    found = health.health(workload, now=NOW)

    assert found.overdue and found.stale and found.mark == "stale"
    # Just inside the window it is not.
    assert not health.health(workload, now=at("2026-12-10T02:59:00")).stale


def test_a_new_policy_is_not_stale_before_it_could_have_run_twice(workload):
    policy_for(workload, every="hourly", active_since=NOW - timedelta(minutes=90))
    assert not health.health(workload, now=NOW).stale
    assert health.health(workload, now=NOW + timedelta(minutes=31)).stale


def test_a_disabled_policy_expects_nothing(workload):
    policy_for(workload, every="hourly", enabled=False)
    found = health.health(workload, now=NOW)
    assert (found.stale, found.next_run, found.mark) == (False, None, "none")


def test_the_last_copy_failing_makes_it_stale(workload, target):
    policy_for(workload, every="daily", at=time(3, 0))
    snap = snapshot(workload, at("2026-12-10T03:00:00"))
    verified = copy(workload, target, snap, SnapshotCopy.State.VERIFIED, at("2026-12-10T03:05:00"))
    assert not health.health(workload, now=NOW).stale

    failed = copy(workload, target, snap, SnapshotCopy.State.FAILED, at("2026-12-10T04:00:00"),
                  "no_bucket")
    copy(workload, target, snap, SnapshotCopy.State.QUEUED, None)  # under way: not finished

    found = health.health(workload, now=NOW)
    assert found.last_copy == failed and found.copy_failed
    assert found.last_verified_copy == verified
    assert found.stale and not found.overdue

    # A later verified copy clears it.
    copy(workload, target, snap, SnapshotCopy.State.VERIFIED, at("2026-12-10T05:00:00"))
    assert not health.health(workload, now=NOW).stale


def test_a_refused_or_failed_run_is_failing_and_late_runs_show(workload):
    policy = policy_for(workload, every="daily", at=time(3, 0))
    BackupRun.objects.create(workload=workload, policy=policy, scheduled_for=at(
        "2026-12-09T03:00:00"), started=at("2026-12-09T03:00:10"))
    failed = snapshot(workload, at("2026-12-10T05:00:00"), state=Snapshot.State.FAILED)
    run = BackupRun.objects.create(workload=workload, policy=policy,
                                   scheduled_for=at("2026-12-10T03:00:00"),
                                   started=at("2026-12-10T05:00:00"), late=True, missed=0,
                                   snapshot=failed)

    found = health.health(workload, now=NOW)

    assert found.last_run == run and found.last_run.late
    assert found.failing and found.mark == "failing"
    BackupRun.objects.filter(pk=run.pk).update(snapshot=None, outcome="refused",
                                               reason="A snapshot is already under way.")
    assert health.health(workload, now=NOW).failing


def test_a_workload_follows_its_own_then_its_stage_then_its_project(workload):
    policy_for(workload.stage.project, every="daily")
    assert health.health(workload, now=NOW).follows == "project"
    policy_for(workload.stage, every="hourly")
    assert health.health(workload, now=NOW).follows == "stage"
    own = policy_for(workload, every="weekly")
    assert health.health(workload, now=NOW).policy == own


def test_many_workloads_take_a_fixed_number_of_queries(make_workload, target,
                                                      django_assert_num_queries):
    def some(count: int) -> list[Workload]:
        for _ in range(count):
            made = make_workload()
            policy_for(made, every="hourly")
            snap = snapshot(made, NOW - timedelta(minutes=30))
            copy(made, target, snap, SnapshotCopy.State.FAILED, NOW, "unreachable")
        return list(Workload.objects.with_parents())

    # The policies; the newest run, ready snapshot, scheduled snapshot, finished copy,
    # verified copy and finished drill per workload: seven queries, for two workloads or six.
    two = some(2)
    with django_assert_num_queries(7):
        found = health.health_of(two, now=NOW)
    assert all(h.stale and not h.overdue for h in found.values())
    six = some(4)
    with django_assert_num_queries(7):
        assert len(health.health_of(six, now=NOW)) == 6


def test_a_policy_that_wants_drills_is_stale_without_a_recent_one(make_workload, target):
    from backups.models import RestoreDrill

    workload = make_workload()
    Workload.objects.filter(pk=workload.pk).update(created=LONG_AGO)
    workload.refresh_from_db()
    policy = policy_for(workload, every="daily", drill_every_days=7)
    assert health.health(workload, now=NOW).drill_stale  # active long ago, never drilled
    copy = SnapshotCopy.objects.create(workload=workload, target=target,
                                       state=SnapshotCopy.State.VERIFIED)
    drill = RestoreDrill.objects.create(copy=copy, workload=workload, target=target,
                                        remote_key="k", state=RestoreDrill.State.PASSED,
                                        finished=NOW - timedelta(days=3))
    found = health.health(workload, now=NOW)
    assert found.last_drill == drill and not found.drill_stale
    RestoreDrill.objects.filter(pk=drill.pk).update(state=RestoreDrill.State.FAILED)
    assert health.health(workload, now=NOW).mark == "failing"
    assert policy.drill_every_days == 7
