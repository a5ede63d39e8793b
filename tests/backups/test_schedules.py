"""Scheduled backups: policies, the tick with a controlled clock, and django-q2's scheduler.

Real parts: the capture (a real workload's volume), moto's S3 server for the
copies, django-q2's own scheduler function (tasks run synchronously under
the test settings, so what it enqueues runs at once).
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from django_q.models import Schedule

from backups.models import BackupPolicy, BackupRun, SnapshotCopy
from engine import schedules
from snapshots.models import Snapshot
from tests.backups.conftest import s3_target
from tests.snapshots.conftest import add_volume, fill

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def data_workload(make_workload):
    workload = make_workload()
    fill(add_volume(workload, "data", "/data"), {"a.txt": b"scheduled"})
    # Created "long ago", so that the policy's times are not before the workload.
    type(workload).objects.filter(pk=workload.pk).update(created=at("2026-01-01T00:00:00"))
    workload.refresh_from_db()
    return workload


def policy_for(owner, **fields) -> BackupPolicy:
    kind = type(owner).__name__.lower()
    policy = BackupPolicy(**{kind: owner}, **fields)
    policy.full_clean()
    policy.save()
    BackupPolicy.objects.filter(pk=policy.pk).update(
        active_since=fields.get("active_since", at("2026-01-01T00:00:00")))
    return BackupPolicy.objects.get(pk=policy.pk)


def test_presets_are_cron_expressions_in_the_operators_zone(workload):
    daily = BackupPolicy(workload=workload, every="daily", at=time(3, 0),
                         time_zone="Europe/Berlin")
    assert daily.expression() == "0 3 * * *"
    # 03:00 in Berlin is 01:00 UTC in summer and 02:00 UTC in winter.
    assert daily.previous(at("2026-07-01T12:00:00")) == at("2026-07-01T01:00:00")
    assert daily.previous(at("2026-12-01T12:00:00")) == at("2026-12-01T02:00:00")
    weekly = BackupPolicy(workload=workload, every="weekly", at=time(4, 30), weekday=0)
    assert weekly.expression() == "30 4 * * 1"  # Monday
    assert weekly.following(at("2026-12-06T12:00:00")) == at("2026-12-07T04:30:00")
    hourly = BackupPolicy(workload=workload, every="hourly", minute=15)
    assert hourly.previous(at("2026-12-06T10:15:00")) == at("2026-12-06T10:15:00")


@pytest.mark.parametrize(("fields", "field"), [
    ({"every": "cron", "cron": "not a cron"}, "cron"),
    ({"every": "cron", "cron": "* * * * * *"}, "cron"),
    ({"time_zone": "Mars/Olympus"}, "time_zone"),
])
def test_a_bad_schedule_is_refused(workload, fields, field):
    with pytest.raises(ValidationError) as caught:
        BackupPolicy(workload=workload, **fields).full_clean()
    assert field in caught.value.message_dict


def test_a_policy_has_exactly_one_owner(workload):
    with pytest.raises(ValidationError):
        BackupPolicy(workload=workload, stage=workload.stage).full_clean()
    with pytest.raises(ValidationError):
        BackupPolicy().full_clean()


def test_the_workload_follows_its_own_then_its_stage_then_its_project(workload):
    project = policy_for(workload.stage.project, every="daily")
    assert BackupPolicy.objects.for_workload(workload) == project
    stage = policy_for(workload.stage, every="hourly")
    assert BackupPolicy.objects.for_workload(workload) == stage
    own = policy_for(workload, every="weekly")
    assert BackupPolicy.objects.for_workload(workload) == own


def test_a_due_run_takes_a_scheduled_snapshot_and_copies_it_once(data_workload, bucket,
                                                                 recipient):
    policy = policy_for(data_workload, every="daily", at=time(3, 0),
                        active_since=at("2026-12-06T00:00:00"))
    policy.targets.add(s3_target(bucket, recipient))

    assert schedules.tick(now=at("2026-12-06T02:59:00")) == []
    [run] = schedules.tick(now=at("2026-12-06T03:00:20"))

    assert (run.scheduled_for, run.late, run.missed) == (at("2026-12-06T03:00:00"), False, 0)
    snapshot = Snapshot.objects.get(pk=run.snapshot_id)
    assert snapshot.kind == Snapshot.Kind.SCHEDULED and snapshot.state == Snapshot.State.READY
    [copy] = SnapshotCopy.objects.filter(snapshot=snapshot)
    assert copy.state == SnapshotCopy.State.VERIFIED, copy.failure_code
    # The next ticks of the same day find nothing due.
    assert schedules.tick(now=at("2026-12-06T03:01:00")) == []
    assert schedules.tick(now=at("2026-12-06T23:59:00")) == []
    assert schedules.next_run(data_workload, now=at("2026-12-06T04:00:00")) == \
        at("2026-12-07T03:00:00")


def test_berth_down_over_scheduled_times_runs_once_when_back_and_says_late(data_workload):
    policy_for(data_workload, every="hourly", minute=0,
               active_since=at("2026-12-06T10:30:00"))

    [run] = schedules.tick(now=at("2026-12-06T14:10:00"))

    assert run.scheduled_for == at("2026-12-06T14:00:00")
    assert run.late and run.missed == 3  # 11:00, 12:00 and 13:00 never ran
    assert Snapshot.objects.filter(kind=Snapshot.Kind.SCHEDULED).count() == 1
    assert schedules.tick(now=at("2026-12-06T14:11:00")) == []


def test_a_new_policy_does_not_fire_for_times_before_it(data_workload):
    policy_for(data_workload, every="daily", at=time(3, 0),
               active_since=at("2026-12-06T09:00:00"))
    assert schedules.tick(now=at("2026-12-06T09:01:00")) == []
    assert [r.scheduled_for for r in schedules.tick(now=at("2026-12-07T03:00:05"))] == [
        at("2026-12-07T03:00:00")]


def test_a_disabled_policy_and_a_busy_workload(data_workload):
    policy = policy_for(data_workload, every="hourly", enabled=False)
    assert schedules.tick(now=at("2026-12-06T10:00:10")) == []
    BackupPolicy.objects.filter(pk=policy.pk).update(enabled=True)
    Snapshot.objects.create(workload=data_workload, kind=Snapshot.Kind.SCHEDULED)  # queued
    [run] = schedules.tick(now=at("2026-12-06T10:00:10"))
    assert run.outcome == BackupRun.Outcome.REFUSED and "already" in run.reason


def test_django_q2s_scheduler_fires_the_tick(data_workload):
    from django_q.scheduler import scheduler

    now = timezone.now()
    policy_for(data_workload, every="cron", cron="* * * * *",
               active_since=now - timedelta(minutes=3))
    tick = Schedule.objects.get(name="berth-backup-schedules")
    assert (tick.func, tick.schedule_type, tick.cron) == (
        "engine.tasks.run_schedule_tick", Schedule.CRON, "* * * * *")
    Schedule.objects.filter(pk=tick.pk).update(next_run=now - timedelta(seconds=5))

    scheduler()  # what the cluster's scheduler runs; the task runs at once (sync)

    [run] = BackupRun.objects.all()
    assert run.snapshot.kind == Snapshot.Kind.SCHEDULED
    assert Schedule.objects.get(pk=tick.pk).next_run > now


# --- retention by age ----------------------------------------------------------------------

def scheduled_rows(workload, times: list[str]) -> list[Snapshot]:
    rows = []
    for when in times:
        rows.append(Snapshot.objects.create(
            workload=workload, kind=Snapshot.Kind.SCHEDULED, state=Snapshot.State.READY,
            created=at(when), archive=f"scheduled-{when}.tar.zst"))
    return rows


TIMES = ["2026-12-03T03:00:00", "2026-12-03T15:00:00", "2026-12-04T03:00:00",
         "2026-12-04T15:00:00", "2026-12-05T03:00:00", "2026-12-05T15:00:00"]


def test_scheduled_snapshots_are_kept_by_age_as_the_policy_says(workload):
    from engine.locked import retention

    policy_for(workload, every="daily", keep_daily=2, keep_weekly=0, keep_monthly=0)
    rows = scheduled_rows(workload, TIMES)
    manual = Snapshot.objects.create(workload=workload, state=Snapshot.State.READY,
                                     created=at("2026-12-01T00:00:00"))

    retention.prune(workload)

    left = set(Snapshot.objects.filter(workload=workload).values_list("pk", flat=True))
    # The newest of each of the two newest days; the manual one follows its own count.
    assert left == {rows[5].pk, rows[3].pk, manual.pk}


def test_without_keep_rules_the_plain_count_applies(workload, settings):
    from engine.locked import retention

    settings.BERTH_SNAPSHOT_KEEP = settings.BERTH_SNAPSHOT_KEEP | {"scheduled": 4}
    policy_for(workload, every="daily", keep_daily=0, keep_weekly=0, keep_monthly=0)
    rows = scheduled_rows(workload, TIMES)
    retention.prune(workload)
    assert set(Snapshot.objects.values_list("pk", flat=True)) == {r.pk for r in rows[2:]}


def test_a_targets_scheduled_copies_are_kept_by_age_and_never_the_last(workload, bucket):
    from engine import copy_upkeep

    policy_for(workload, every="daily", keep_daily=1, keep_weekly=0, keep_monthly=0)
    target = s3_target(bucket)
    copies = [SnapshotCopy.objects.create(
        workload=workload, target=target, state=SnapshotCopy.State.VERIFIED,
        kind="scheduled", taken=at(when), remote_key=f"k/{i}.tar.zst")
        for i, when in enumerate(TIMES)]

    stale = copy_upkeep.stale_copies(target=target, workload_id=workload.pk)

    assert {row.pk for row in stale} == {c.pk for c in copies[:5]}


# --- loud when it fails ------------------------------------------------------------------

@pytest.fixture
def told(request):
    """A channel on a real local webhook receiver that wants the backup events."""
    from alerts.models import NotificationChannel
    from tests.alerts.conftest import Webhook

    hook = Webhook()
    hook.start()
    channel = NotificationChannel(name="ops", events=["backup_failed", "backup_missed"])
    channel.set_apprise_url(hook.url)
    channel.save()
    yield hook
    hook.stop()


def test_the_dead_mans_switch_fires_with_no_tick_at_all_and_once(data_workload, told):
    from engine import sweep

    policy_for(data_workload, every="hourly", active_since=at("2026-12-06T08:00:00"))

    sweep.recover_all(now=at("2026-12-06T09:30:00"))  # 1.5 h: within twice the interval
    assert told.received == []
    sweep.recover_all(now=at("2026-12-06T10:30:00"))  # no tick ever ran: 2.5 h of silence
    sweep.recover_all(now=at("2026-12-06T10:31:00"))
    assert len(told.received) == 1
    assert "No scheduled snapshot has succeeded" in str(told.received[0]["body"])


def test_a_failed_scheduled_snapshot_is_told(data_workload, told):
    # A pre-backup hook with nothing to run in (the workload is not running) aborts it.
    type(data_workload).objects.filter(pk=data_workload.pk).update(pre_backup_hook="true")
    policy_for(data_workload, every="hourly", active_since=at("2026-12-06T08:00:00"))
    [run] = schedules.tick(now=at("2026-12-06T09:00:10"))
    run.snapshot.refresh_from_db()
    assert run.snapshot.state == Snapshot.State.FAILED
    assert len(told.received) == 1
    assert f"Scheduled snapshot #{run.snapshot_id} failed" in str(told.received[0]["body"])


def test_the_admin_restarts_a_changed_schedule_only(client, workload):
    from django.contrib.auth.models import User

    policy = policy_for(workload, every="daily", at=time(3, 0))
    client.force_login(User.objects.create_superuser("ada-admin", password="x" * 20))
    url = f"/admin/backups/backuppolicy/{policy.pk}/change/"
    form = {"workload": workload.pk, "enabled": "on", "every": "daily", "minute": "0",
            "at": "03:00:00", "weekday": "0", "cron": "", "time_zone": "UTC",
            "keep_last": "0", "keep_hourly": "0", "keep_daily": "3", "keep_weekly": "4",
            "keep_monthly": "6", "keep_yearly": "0"}

    assert client.post(url, form).status_code == 302
    policy.refresh_from_db()
    assert (policy.keep_daily, policy.active_since) == (3, at("2026-01-01T00:00:00"))

    assert client.post(url, form | {"at": "04:00:00"}).status_code == 302
    policy.refresh_from_db()
    assert policy.active_since > timezone.now() - timedelta(minutes=1)


@pytest.mark.parametrize("cron", ["0 0 31 2 *", "0 0 31 4,6,9,11 *"])
def test_a_cron_that_never_fires_is_refused(workload, cron, api_as):
    from django.contrib.auth.models import User

    with pytest.raises(ValidationError) as caught:
        BackupPolicy(workload=workload, every="cron", cron=cron).full_clean()
    assert "never fires" in str(caught.value)
    admin = api_as(User.objects.create_superuser("ada-admin", password="x"))
    answer = admin.post("/api/backup-policies", {"workload": workload.pk, "every": "cron",
                                                 "cron": cron}, format="json")
    assert answer.status_code == 400 and "cron" in answer.json()
    assert not BackupPolicy.objects.exists()


def test_a_policy_keeps_its_owner(workload, api_as):
    from django.contrib.auth.models import User

    policy = policy_for(workload, every="daily")
    admin = api_as(User.objects.create_superuser("ada-admin", password="x"))
    answer = admin.patch(f"/api/backup-policies/{policy.pk}",
                         {"workload": None, "project": workload.stage.project_id},
                         format="json")
    assert answer.status_code == 400
    policy.refresh_from_db()
    assert policy.workload_id == workload.pk and policy.project_id is None


def test_a_daily_time_the_clocks_repeat_runs_once(data_workload):
    # 02:30 happens twice in Berlin on 25 October 2026 (00:30 and 01:30 UTC).
    policy_for(data_workload, every="daily", at=time(2, 30), time_zone="Europe/Berlin",
               active_since=at("2026-10-24T12:00:00"))
    assert [r.scheduled_for for r in schedules.tick(now=at("2026-10-25T00:30:10"))] == [
        at("2026-10-25T00:30:00")]
    assert schedules.tick(now=at("2026-10-25T01:30:10")) == []
    assert schedules.tick(now=at("2026-10-25T03:00:00")) == []
    assert len(schedules.tick(now=at("2026-10-26T01:30:10"))) == 1  # the next day: CET
