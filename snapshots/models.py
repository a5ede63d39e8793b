"""Snapshots: point-in-time archives of a workload's volumes, one row per archive."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext, gettext_noop, pgettext_lazy
from django.utils.translation import gettext_lazy as _

from lib import owners
from snapshots import journal
from snapshots.errors import SnapshotError, storable
from workloads.jobs import Job, Progress, task_lost_before
from workloads.models import DeployRecord, Workload


class SnapshotQuerySet(models.QuerySet):
    def ready(self) -> SnapshotQuerySet:
        return self.filter(state=Snapshot.State.READY)

    def active(self) -> SnapshotQuerySet:
        return self.filter(state__in=Snapshot.ACTIVE_STATES)


class Snapshot(Job, Progress):
    class Kind(models.TextChoices):
        MANUAL = "manual", _("Manual")
        PRE_DEPLOY = "pre_deploy", _("Before deploy")
        PRE_RESTORE = "pre_restore", _("Before restore")
        SCHEDULED = "scheduled", _("Scheduled")

    class State(models.TextChoices):
        QUEUED = "queued", _("Queued")
        CAPTURING = "capturing", _("Capturing")
        READY = "ready", _("Ready")
        FAILED = "failed", _("Failed")

    class FailureCode(models.TextChoices):
        """Failures a caller acts on; the others have only their message."""

        OVER_BUDGET = "over_budget", _("Over its budget")

    ACTIVE_STATES = (State.QUEUED, State.CAPTURING)

    workload = models.ForeignKey(
        Workload, models.CASCADE, related_name="snapshots", verbose_name=_("workload")
    )
    kind = models.CharField(_("kind"), max_length=12, choices=Kind, default=Kind.MANUAL)
    state = models.CharField(_("state"), max_length=10, choices=State, default=State.QUEUED)
    imported = models.BooleanField(
        _("imported"), default=False, help_text=_("Uploaded rather than captured here.")
    )
    archive = models.CharField(
        _("archive file"), max_length=100, blank=True,
        help_text=_("The file's name in the workload's snapshot directory."),
    )
    size = models.BigIntegerField(_("archive size"), default=0)
    sha256 = models.CharField(_("SHA-256"), max_length=64, blank=True)
    manifest = models.JSONField(_("manifest"), default=dict, blank=True)
    data_bytes = models.BigIntegerField(_("data size"), default=0)
    file_count = models.PositiveIntegerField(_("files"), default=0)
    volume_count = models.PositiveSmallIntegerField(_("volumes"), default=0)
    skipped_count = models.PositiveIntegerField(_("skipped entries"), default=0)
    changed_count = models.PositiveIntegerField(
        _("changed while captured"), default=0,
        help_text=_("Files whose size changed while a live capture read them."),
    )
    much_smaller = models.BooleanField(
        _("much smaller than the last one"), default=False,
        help_text=_("Holds much less data than the workload's previous snapshot."),
    )
    failure = models.TextField(_("failure"), blank=True)
    failure_params = models.JSONField(default=dict, blank=True)
    failure_code = models.CharField(_("failure code"), max_length=20, choices=FailureCode,
                                    blank=True)
    deploy = models.OneToOneField(
        DeployRecord, models.SET_NULL, null=True, blank=True, related_name="pre_deploy_snapshot",
        verbose_name=_("deploy"), help_text=_("The deploy this snapshot was taken before."),
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, verbose_name=_("user")
    )
    created = models.DateTimeField(_("created"), default=timezone.now)
    finished = models.DateTimeField(_("finished"), null=True, blank=True)

    objects = SnapshotQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name = _("snapshot")
        verbose_name_plural = _("snapshots")
        indexes = [models.Index(fields=["workload", "-created"], name="snapshot_workload_idx")]
        constraints = [
            # One manual capture queued or running per workload, also across processes.
            models.UniqueConstraint(
                fields=["workload"],
                condition=Q(kind="manual", state__in=["queued", "capturing"]),
                name="one_active_manual_snapshot",
            )
        ]

    def __str__(self) -> str:
        return f"{self.workload} snapshot #{self.pk} ({self.kind}, {self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES

    @property
    def is_ready(self) -> bool:
        return self.state == self.State.READY

    @property
    def failure_text(self) -> str:
        """Why it failed, in the active language."""
        if not self.failure:
            return ""
        error = SnapshotError(self.failure, **self.failure_params)
        try:
            return str(error)
        except (KeyError, TypeError, ValueError):
            return gettext(self.failure)

    @property
    def skipped(self) -> list[dict]:
        return list(self.manifest.get("skipped", []))

    @property
    def volumes(self) -> list[dict]:
        return list(self.manifest.get("volumes", []))

    def claim(self) -> bool:
        """Move a queued row to capturing; False if another worker got there first."""
        return self.move(only_from=[self.State.QUEUED], state=self.State.CAPTURING,
                         owner=owners.current())

    def succeed(self, *, archive: str, size: int, sha256: str, manifest: dict,
                changed: int = 0) -> bool:
        """Record the finished archive; False if the row was deleted meanwhile."""
        volumes = manifest["volumes"]
        self.state = self.State.READY
        self.archive, self.size, self.sha256, self.manifest = archive, size, sha256, manifest
        self.data_bytes = sum(v["bytes"] for v in volumes)
        self.file_count = sum(v["files"] for v in volumes)
        self.volume_count = len(volumes)
        self.skipped_count = manifest.get("skipped_count", 0)
        self.changed_count = changed
        self.bytes_done = self.bytes_total = self.data_bytes
        self.much_smaller = self._is_much_smaller()
        self.finished = timezone.now()
        fields = [
            "state", "archive", "size", "sha256", "manifest", "data_bytes", "file_count",
            "volume_count", "skipped_count", "changed_count", "bytes_done", "bytes_total",
            "much_smaller", "finished",
        ]
        values = {name: getattr(self, name) for name in fields}
        return bool(Snapshot.objects.filter(pk=self.pk).update(**values))

    def _is_much_smaller(self) -> bool:
        previous = (
            Snapshot.objects.ready().filter(workload_id=self.workload_id)
            .exclude(pk=self.pk).order_by("-created", "-id").first()
        )
        if previous is None or not previous.data_bytes:
            return False
        return self.data_bytes * 100 < previous.data_bytes * settings.BERTH_SNAPSHOT_SHRINK_PERCENT

    def fail(self, error: SnapshotError, *, only_from: str | None = None) -> bool:
        """Mark the row failed (only if it is still in state `only_from`, when given)."""
        return self.move(
            only_from=[only_from] if only_from is not None else self.State.values,
            state=self.State.FAILED, failure=error.message, failure_code=error.code,
            failure_params=_jsonable(error.params), finished=timezone.now(),
        )

    @classmethod
    def fail_interrupted(cls, *, workload: Workload | None, lock_held: bool) -> int:
        """Mark the workload's unfinished captures that cannot still be running as failed.

        A row is claimed (queued → capturing) only under the workload's lock,
        which the capture then holds until it is done, so a caller that holds
        the lock knows every capturing row is dead (its process was killed).
        Without the lock, only queued rows no worker took that are older than
        BERTH_TASK_LOST_AFTER are known dead (their task was lost); a capturing
        row's age says nothing, as captures have no task timeout.
        """
        if lock_held:
            stale = Q(state=cls.State.CAPTURING)
        else:
            stale = Q(state=cls.State.QUEUED, owner="", created__lt=task_lost_before())
        rows = cls.objects.filter(stale)
        if workload is not None:
            rows = rows.filter(workload=workload)
        return rows.update(
            state=cls.State.FAILED, finished=timezone.now(), failure_params={},
            failure=gettext_noop("The capture was interrupted before it finished."),
        )


def _jsonable(params: dict) -> dict:
    return {k: storable(v) if isinstance(v, str) else v if isinstance(v, int | float | bool)
            else storable(str(v)) for k, v in params.items()}


class RestoreJobQuerySet(models.QuerySet):
    def active(self) -> RestoreJobQuerySet:
        return self.filter(state__in=RestoreJob.ACTIVE_STATES)


class RestoreJob(Job, Progress):
    """One restore of a snapshot onto its workload's live volumes (engine/locked/restore.py).

    `state` says whether it is waiting, running or over; `phase` where it is;
    `outcome` how it ended. While one is queued or running no other may start
    for the same workload: a partial unique index says so to every process.
    """

    class State(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", pgettext_lazy("restore state", "Running")
        FINISHED = "finished", _("Finished")

    class Phase(models.TextChoices):
        QUEUED = "queued", _("Waiting to start")
        PREFLIGHT = "preflight", _("Checking the snapshot and the volumes")
        EXTRACTING = "extracting", _("Unpacking the snapshot beside the volumes")
        STOPPING = "stopping", _("Stopping the workload")
        SWAPPING = "swapping", _("Swapping the volumes")
        STARTING = "starting", _("Starting the workload")
        ARCHIVING = "archiving", _("Keeping the previous data as a snapshot")
        ROLLING_BACK = "rolling_back", _("Putting the previous data back")
        DONE = "done", _("Done")

    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded", _("Restored")
        NOT_STARTED = "not_started", _("Restored, but the workload did not start")
        FAILED = "failed", _("Failed; the volumes were left as they were")

    ACTIVE_STATES = (State.QUEUED, State.RUNNING)

    workload = models.ForeignKey(
        Workload, models.CASCADE, related_name="restores", verbose_name=_("workload")
    )
    snapshot = models.ForeignKey(
        Snapshot, models.SET_NULL, null=True, blank=True, related_name="restores",
        verbose_name=_("snapshot"), help_text=_("The snapshot restored."),
    )
    state = models.CharField(_("state"), max_length=10, choices=State, default=State.QUEUED)
    phase = models.CharField(_("phase"), max_length=12, choices=Phase, default=Phase.QUEUED)
    outcome = models.CharField(_("outcome"), max_length=12, choices=Outcome, blank=True)
    reason = models.TextField(
        _("reason"), blank=True,
        help_text=_("Why it failed, or what the operator should know about its outcome."),
    )
    reason_params = models.JSONField(default=dict, blank=True)
    pre_restore_snapshot = models.ForeignKey(
        Snapshot, models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("pre-restore snapshot"),
        help_text=_("The data the volumes held before, kept as a snapshot."),
    )
    deploy = models.ForeignKey(
        DeployRecord, models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("redeploy"), help_text=_("The deploy that brought the workload back."),
    )
    rollback_to = models.ForeignKey(
        DeployRecord, models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("rolled back to deploy"),
        help_text=_("A rollback with data: the earlier deploy whose code comes back with the "
                    "data from before it ran."),
    )
    rollback_reference = models.CharField(
        _("rollback reference"), max_length=512, blank=True,
        help_text=_("A rollback with data: the pinned reference the workload runs after the "
                    "swap (kept here too, in case its deploy is pruned from the history)."),
    )
    rollback_configuration = models.BooleanField(
        _("rolls back the configuration"), default=False,
        help_text=_("A rollback with data: the configuration that deploy ran is set back too, "
                    "once the data is swapped and just before the redeploy."),
    )
    kept_paths = models.JSONField(
        _("kept directories"), default=list, blank=True,
        help_text=_("Directories holding the previous data that could not be archived."),
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, verbose_name=_("user")
    )
    created = models.DateTimeField(_("requested"), default=timezone.now)
    started = models.DateTimeField(_("started"), null=True, blank=True)
    finished = models.DateTimeField(_("finished"), null=True, blank=True)

    objects = RestoreJobQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name = _("restore")
        verbose_name_plural = _("restores")
        indexes = [models.Index(fields=["workload", "-created"], name="restore_workload_idx")]
        constraints = [
            # Single flight: one restore queued or running per workload, in every process.
            models.UniqueConstraint(
                fields=["workload"], condition=Q(state__in=["queued", "running"]),
                name="one_active_restore_per_workload",
            )
        ]

    def __str__(self) -> str:
        return f"{self.workload} restore #{self.pk} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES

    @property
    def reason_text(self) -> str:
        """The reason in the active language."""
        if not self.reason:
            return ""
        try:
            return str(SnapshotError(self.reason, **self.reason_params))
        except (KeyError, TypeError, ValueError):
            return gettext(self.reason)

    def claim(self) -> bool:
        """Queued → running; False if another worker got there first. Call under the lock."""
        return self.move(only_from=[self.State.QUEUED], state=self.State.RUNNING,
                         phase=self.Phase.PREFLIGHT, started=timezone.now(),
                         owner=owners.current())

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        RestoreJob.objects.filter(pk=self.pk).update(phase=phase)

    def link(self, **fields: object) -> None:
        """Record the redeploy or the pre-restore snapshot as soon as they exist."""
        for name, value in fields.items():
            setattr(self, name, value)
        RestoreJob.objects.filter(pk=self.pk).update(**fields)

    def finish(self, outcome: str, reason: str = "", params: dict | None = None,
               kept_paths: list[str] | None = None, *, only_queued: bool = False) -> bool:
        """Mark the job over; False if it already was (a second sweep changes nothing).

        `only_queued`: only a job nobody has claimed yet (a refusal made
        before the claim must never end a restore that another worker runs).
        """
        return self.move(
            only_from=[self.State.QUEUED] if only_queued else self.ACTIVE_STATES,
            state=self.State.FINISHED, phase=self.Phase.DONE, outcome=outcome, reason=reason,
            reason_params=_jsonable(params or {}), kept_paths=list(kept_paths or []),
            finished=timezone.now(),
        )

    @classmethod
    def fail_dead(cls, *, workload: Workload | None, lock_held: bool) -> int:
        """Mark the workload's restores that cannot still be running as failed.

        A job is claimed (queued → running) only under the workload's lock,
        which the restore holds to the end, so a caller holding the lock knows
        a running job is dead — after the recovery of its journal, if it had
        one, so call this only once that is done. Without the lock, only queued
        jobs no worker took that are older than BERTH_TASK_LOST_AFTER are known
        dead (their task was lost).
        """
        if lock_held:
            # A job with a journal on disk, readable or not, is the recovery's
            # to close, by what the journal and the volumes say.
            assert workload is not None, "the lock is a workload's"
            running = cls.objects.filter(workload=workload, state=cls.State.RUNNING)
            dead = Q(pk__in=[pk for pk in running.values_list("pk", flat=True)
                             if not journal.exists(workload.pk, pk)])
        else:
            dead = Q(state=cls.State.QUEUED, owner="", created__lt=task_lost_before())
        rows = cls.objects.filter(dead)
        if workload is not None:
            rows = rows.filter(workload=workload)
        return rows.update(
            state=cls.State.FINISHED, phase=cls.Phase.DONE, outcome=cls.Outcome.FAILED,
            finished=timezone.now(), reason_params={},
            reason=gettext_noop("The restore was interrupted before it changed anything."),
        )
