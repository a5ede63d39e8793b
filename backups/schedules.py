"""Backup policies: when a workload's scheduled snapshots are taken, and each run's record.

A policy belongs to a workload, a stage or a project; a workload follows its
own, else its stage's, else its project's (BackupPolicy.objects.for_workload).
When is a preset (hourly at a minute, daily or weekly at a time) or a cron
expression, read in the operator's time zone. engine/schedules.py runs them;
docs/schedules.md says how a run is found due, late or missed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterError, croniter
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.db import models
from django.utils import timezone
from django.utils.dates import WEEKDAYS
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from lib.keep import KeepRules
from snapshots.models import Snapshot
from workloads.jobs import Job, Progress, RecordedFailure
from workloads.models import Project, Stage, Workload

# The fields that say when runs are due: changing any of them restarts the schedule.
SCHEDULE_FIELDS = frozenset({"every", "minute", "at", "weekday", "cron", "time_zone"})


def _fires(expression: str) -> bool:
    """Whether a cron expression has a next and a previous time (31 February has neither)."""
    try:
        probe = croniter(expression, datetime(2026, 1, 1, tzinfo=UTC))
        probe.get_next(datetime)
        croniter(expression, datetime(2026, 1, 1, tzinfo=UTC)).get_prev(datetime)
    except (CroniterError, ValueError):
        return False
    return True


class BackupPolicyQuerySet(models.QuerySet):
    def for_workload(self, workload: Workload) -> BackupPolicy | None:
        """The policy `workload` follows: its own, else its stage's, else its project's."""
        for owner in ({"workload": workload}, {"stage_id": workload.stage_id},
                      {"project_id": workload.stage.project_id}):
            found = self.filter(**owner).first()
            if found is not None:
                return found
        return None


class BackupPolicy(models.Model):
    class Every(models.TextChoices):
        HOURLY = "hourly", _("Hourly")
        DAILY = "daily", _("Daily")
        WEEKLY = "weekly", _("Weekly")
        CRON = "cron", _("Cron expression")

    project = models.OneToOneField(Project, models.CASCADE, null=True, blank=True,
                                   related_name="backup_policy", verbose_name=_("project"))
    stage = models.OneToOneField(Stage, models.CASCADE, null=True, blank=True,
                                 related_name="backup_policy", verbose_name=_("stage"))
    workload = models.OneToOneField(Workload, models.CASCADE, null=True, blank=True,
                                    related_name="backup_policy", verbose_name=_("workload"))
    enabled = models.BooleanField(
        _("enabled"), default=True,
        help_text=_("Off: no scheduled snapshots (and none for the workloads that follow it)."))
    every = models.CharField(_("every"), max_length=8, choices=Every, default=Every.DAILY)
    minute = models.PositiveSmallIntegerField(
        _("minute"), default=0, validators=[MaxValueValidator(59)],
        help_text=_("Hourly: the minute of each hour."))
    at = models.TimeField(_("at"), default=time(3, 0),
                          help_text=_("Daily and weekly: the time of day."))
    weekday = models.PositiveSmallIntegerField(
        _("weekday"), default=0, validators=[MaxValueValidator(6)],
        help_text=_("Weekly: 0 is Monday, 6 Sunday."))
    cron = models.CharField(_("cron expression"), max_length=100, blank=True,
                            help_text=_("Five fields: minute hour day month weekday."))
    time_zone = models.CharField(_("time zone"), max_length=64, default="UTC",
                                 help_text=_("An IANA zone such as Europe/Berlin."))
    drill_every_days = models.PositiveSmallIntegerField(
        _("restore drill every (days)"), default=0, validators=[MaxValueValidator(365)],
        help_text=_("How often the newest verified copy is read back as a recovery would "
                    "read it; 0: never. Drills need the target's identity stored on this "
                    "host, which lets the host read its backups: opt in."))
    targets = models.ManyToManyField(
        "backups.BackupTarget", blank=True, related_name="policies",
        verbose_name=_("copy to"),
        help_text=_("Each scheduled snapshot is copied to these targets, beside what the "
                    "copy rules say."))
    # Retention of the scheduled snapshots, and separately of their copies on each target
    # (lib/keep.py, docs/retention.md). All 0: the plain counts (BERTH_SNAPSHOT_KEEP_*,
    # the targets' keep counts) apply instead.
    keep_last = models.PositiveIntegerField(_("keep last"), default=0)
    keep_hourly = models.PositiveIntegerField(_("keep hourly"), default=0)
    keep_daily = models.PositiveIntegerField(_("keep daily"), default=7)
    keep_weekly = models.PositiveIntegerField(_("keep weekly"), default=4)
    keep_monthly = models.PositiveIntegerField(_("keep monthly"), default=6)
    keep_yearly = models.PositiveIntegerField(_("keep yearly"), default=0)
    # Runs are due from here on; moved to now whenever the schedule changes, so that a new
    # or changed policy does not fire for times before it.
    active_since = models.DateTimeField(_("active since"), default=timezone.now,
                                        editable=False)
    created = models.DateTimeField(_("created"), default=timezone.now, editable=False)

    objects = BackupPolicyQuerySet.as_manager()

    class Meta:
        verbose_name = _("backup policy")
        verbose_name_plural = _("backup policies")
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(project__isnull=False, stage__isnull=True,
                                    workload__isnull=True)
                           | models.Q(project__isnull=True, stage__isnull=False,
                                      workload__isnull=True)
                           | models.Q(project__isnull=True, stage__isnull=True,
                                      workload__isnull=False)),
                name="backup_policy_has_one_owner",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.owner}: {self.describe()}"

    @property
    def owner(self) -> Project | Stage | Workload | None:
        return self.workload or self.stage or self.project

    def clean(self) -> None:
        if sum(x is not None for x in (self.project_id, self.stage_id, self.workload_id)) != 1:
            raise ValidationError(_("A policy belongs to one project, stage or workload."))
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValidationError({"time_zone": _("Not a time zone this host knows.")}) from None
        if self.time_zone not in available_timezones() and self.time_zone != "UTC":
            raise ValidationError({"time_zone": _("Not a time zone this host knows.")})
        if self.every == self.Every.CRON and (len(self.cron.split()) != 5
                                              or not croniter.is_valid(self.cron)):
            raise ValidationError({"cron": _("Five fields: minute hour day month weekday, "
                                             "e.g. 30 2 * * 1-5.")})
        if self.every == self.Every.CRON and not _fires(self.cron):
            raise ValidationError({"cron": _("This expression never fires (a date that does "
                                             "not exist, such as 31 February).")})

    def reschedule(self, changed: Iterable[str], *, now: datetime | None = None) -> bool:
        """Before saving an edit: restart the schedule at `now` if `changed` (the names of the
        fields the edit changed) names a schedule field. True if it did.

        The admin, the API and the pages all call this, so that a changed schedule never
        fires for times before the change (the tick would otherwise take the newest past
        time of the new schedule at once, as a late run).
        """
        if self.pk is None or not SCHEDULE_FIELDS & set(changed):
            return False
        self.active_since = now or timezone.now()
        return True

    def followers(self) -> models.QuerySet[Workload]:
        """The workloads that follow this policy (or would, once saved): its workload, or
        those of its stage or project without a nearer policy of their own."""
        workloads = Workload.objects.with_parents().order_by("pk")
        if self.workload_id is not None:
            return workloads.filter(pk=self.workload_id)
        workloads = workloads.filter(backup_policy__isnull=True)
        if self.stage_id is not None:
            return workloads.filter(stage_id=self.stage_id)
        return workloads.filter(stage__project_id=self.project_id,
                                stage__backup_policy__isnull=True)

    @property
    def owner_kind(self) -> str:
        """`workload`, `stage` or `project`: what the policy belongs to."""
        for kind in ("workload", "stage", "project"):
            if getattr(self, f"{kind}_id") is not None:
                return kind
        return ""

    def get_owner_kind_display(self) -> str:
        return {"workload": _("Workload"), "stage": _("Stage"),
                "project": _("Project")}.get(self.owner_kind, "")

    def get_weekday_name(self) -> str:
        return WEEKDAYS.get(self.weekday, "")

    def expression(self) -> str:
        """The schedule as a cron expression (in the policy's time zone)."""
        if self.every == self.Every.HOURLY:
            return f"{self.minute} * * * *"
        if self.every == self.Every.DAILY:
            return f"{self.at.minute} {self.at.hour} * * *"
        if self.every == self.Every.WEEKLY:
            # cron counts Sunday as 0; the policy counts Monday as 0.
            return f"{self.at.minute} {self.at.hour} * * {(self.weekday + 1) % 7}"
        return self.cron

    @property
    def keep_rules(self) -> KeepRules:
        return KeepRules(last=self.keep_last, hourly=self.keep_hourly, daily=self.keep_daily,
                         weekly=self.keep_weekly, monthly=self.keep_monthly,
                         yearly=self.keep_yearly)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def upcoming(self, moment: datetime | None = None) -> datetime | None:
        """The first scheduled time after `moment` (now), or None when the policy is off or
        its schedule can be read no more (a cron saved before it was checked)."""
        if not self.enabled:
            return None
        try:
            return self.following(moment or timezone.now())
        except (CroniterError, ValueError):
            return None

    def describe(self) -> str:
        return f"{self.expression()} ({self.time_zone})"

    def previous(self, moment: datetime) -> datetime:
        """The newest scheduled time at or before `moment` (aware, UTC)."""
        local = moment.astimezone(ZoneInfo(self.time_zone))
        hit = croniter(self.expression(), local + timedelta(seconds=1)).get_prev(datetime)
        return hit.astimezone(UTC)

    def following(self, moment: datetime) -> datetime:
        """The first scheduled time after `moment` (aware, UTC)."""
        local = moment.astimezone(ZoneInfo(self.time_zone))
        return croniter(self.expression(), local).get_next(datetime).astimezone(UTC)

    def readable_interval(self, moment: datetime) -> timedelta | None:
        """interval(), or None when the schedule can be read no more (see upcoming)."""
        try:
            return self.interval(moment)
        except (CroniterError, ValueError):
            return None

    def interval(self, moment: datetime) -> timedelta:
        """The time between the run before `moment` and the one after it."""
        return self.following(moment) - self.previous(moment)


class BackupRun(models.Model):
    """One scheduled run for one workload: when it was due, whether late, what it took."""

    class Outcome(models.TextChoices):
        STARTED = "started", _("Snapshot queued")
        REFUSED = "refused", _("Not taken")

    workload = models.ForeignKey(Workload, models.CASCADE, related_name="backup_runs",
                                 verbose_name=_("workload"))
    policy = models.ForeignKey(BackupPolicy, models.SET_NULL, null=True, blank=True,
                               related_name="runs", verbose_name=_("policy"))
    scheduled_for = models.DateTimeField(_("scheduled for"))
    started = models.DateTimeField(_("started"), default=timezone.now)
    late = models.BooleanField(
        _("late"), default=False,
        help_text=_("Run after Berth was down (or busy) past its time; runs it missed meanwhile "
                    "are not made up, this one stands for them."))
    missed = models.PositiveIntegerField(_("runs missed"), default=0)
    outcome = models.CharField(_("outcome"), max_length=10, choices=Outcome,
                               default=Outcome.STARTED)
    reason = models.CharField(_("reason"), max_length=200, blank=True)
    snapshot = models.ForeignKey(Snapshot, models.SET_NULL, null=True, blank=True,
                                 related_name="+", verbose_name=_("snapshot"))

    class Meta:
        ordering = ["-scheduled_for", "-pk"]
        verbose_name = _("scheduled backup run")
        verbose_name_plural = _("scheduled backup runs")
        constraints = [
            models.UniqueConstraint(fields=["workload", "scheduled_for"],
                                    name="one_run_per_workload_and_time"),
        ]

    def __str__(self) -> str:
        return f"{self.workload} @ {self.scheduled_for:%Y-%m-%d %H:%M}"


class RestoreDrill(Job, Progress, RecordedFailure):
    """A copy read back as a recovery would read it, to prove it restores.

    Downloaded, decrypted, checked against its sidecar's size and SHA-256 and
    extracted in full by the safe extractor into a scratch directory (which is
    removed); nothing is restored. engine/drills.py runs it.
    """

    class State(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", pgettext_lazy("drill state", "Running")
        PASSED = "passed", _("Restorable")
        FAILED = "failed", _("Failed")

    ACTIVE_STATES = (State.QUEUED, State.RUNNING)

    copy = models.ForeignKey("backups.SnapshotCopy", models.SET_NULL, null=True, blank=True,
                             related_name="drills", verbose_name=_("copy"))
    workload = models.ForeignKey(Workload, models.CASCADE, related_name="restore_drills",
                                 verbose_name=_("workload"))
    target = models.ForeignKey("backups.BackupTarget", models.CASCADE, related_name="drills",
                               verbose_name=_("backup target"))
    remote_key = models.CharField(_("object name"), max_length=1024)
    state = models.CharField(_("state"), max_length=10, choices=State, default=State.QUEUED)
    files = models.PositiveIntegerField(_("files checked"), default=0)
    created = models.DateTimeField(_("created"), default=timezone.now)
    started = models.DateTimeField(_("started"), null=True, blank=True)
    finished = models.DateTimeField(_("finished"), null=True, blank=True)

    class Meta:
        ordering = ["-created", "-pk"]
        verbose_name = _("restore drill")
        verbose_name_plural = _("restore drills")
        constraints = [
            models.UniqueConstraint(fields=["workload"],
                                    condition=models.Q(state__in=["queued", "running"]),
                                    name="one_active_drill_per_workload"),
        ]

    def __str__(self) -> str:
        return f"{self.workload}: {self.remote_key}"

    @property
    def duration(self) -> timedelta | None:
        if self.started is None or self.finished is None:
            return None
        return self.finished - self.started
