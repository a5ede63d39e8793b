"""The deploy ledger: one row per dispatch, and the build log of a git deploy."""

from __future__ import annotations

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from lib import giturls, owners
from workloads.jobs import Job, acting_user
from workloads.models.secret_versions import SecretVersion
from workloads.models.workloads import Workload


class DeployInProgress(Exception):
    """Another deploy of the workload is queued or running (single flight)."""

    def __init__(self, active: DeployRecord | None) -> None:
        super().__init__(_("Another deploy of this workload is already queued or running."))
        self.active = active


# A rollback with data is a restore's redeploy: it runs under the lock the restore holds,
# so, like a restore's, it is exempt from the one-active-deploy rule (a deploy requested
# meanwhile waits for the lock with its row queued).
ROLLBACK_WITH_DATA = ("code+data", "code+configuration+data")


class DeployRecordQuerySet(models.QuerySet):
    def active(self) -> DeployRecordQuerySet:
        return self.filter(outcome__in=DeployRecord.ACTIVE)

    def fail_interrupted(self) -> int:
        """Fail these rows as `interrupted`: their worker is gone (the caller knows how)."""
        return self.update(outcome=DeployRecord.Outcome.FAILED,
                           failure_code=DeployRecord.Failure.INTERRUPTED, finished=timezone.now())


class DeployRecord(Job):
    """One dispatch of a workload: queued, then running, then succeeded or failed.

    A failure is kept as a code from a fixed set and its fixed message; the raw
    error (which can carry credentials) only goes to the server log, redacted.
    """

    state_field = "outcome"

    class Reason(models.TextChoices):
        MANUAL = "manual", _("Manual")
        API = "api", _("API")
        ROLLBACK = "rollback", _("Rollback")
        RESTORE = "restore", _("Restore")
        AUTO = "auto", _("Automatic")

    class RollbackRestored(models.TextChoices):
        """What a rollback brought back (blank on every other deploy)."""

        CODE = "code", _("Code")
        CODE_CONFIGURATION = "code+configuration", _("Code and configuration")
        CODE_DATA = "code+data", _("Code and data")
        CODE_CONFIGURATION_DATA = "code+configuration+data", _("Code, configuration and data")

    class Outcome(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", pgettext_lazy("deploy outcome", "Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")

    class Failure(models.TextChoices):
        ENGINE_UNREACHABLE = "engine_unreachable", _("The Docker engine is unreachable.")
        PULL_FAILED = "pull_failed", _(
            "The image could not be pulled (check the reference, the registry and its credential)."
        )
        CREATE_FAILED = "create_failed", _("The new containers could not be created.")
        START_FAILED = "start_failed", _(
            "The new containers did not start; the previous ones were restarted."
        )
        LOCK_TIMEOUT = "lock_timeout", _("Another deploy of this workload did not finish in time.")
        INVALID_CONFIG = "invalid_config", _("The workload's configuration is not valid.")
        FETCH_FAILED = "fetch_failed", _(
            "The repository could not be fetched (check the URL, the network and the credential)."
        )
        UNKNOWN_REF = "unknown_ref", _("The repository has no branch, tag or commit of that name.")
        COMMIT_MISSING = "commit_missing", _(
            "The commit no longer exists in the repository (force-pushed away and "
            "garbage-collected), and its image is gone from the engine."
        )
        BUILD_FAILED = "build_failed", _(
            "The image could not be built; the build log shows the failing step."
        )
        # Split out of pull_failed and start_failed (which stay, for older rows
        # and for what the engine reports in no way Berth knows).
        IMAGE_NOT_FOUND = "image_not_found", _(
            "The registry has no image of that name and tag (check the reference)."
        )
        REGISTRY_AUTH_FAILED = "registry_auth_failed", _(
            "The registry refused the credential, or wants one (check the workload's registry "
            "credential)."
        )
        REGISTRY_UNREACHABLE = "registry_unreachable", _(
            "The registry could not be reached (check its address and the network)."
        )
        PORT_IN_USE = "port_in_use", _(
            "A host port the workload publishes is already in use; the previous containers "
            "were restarted."
        )
        EXITED_AT_START = "exited_at_start", _(
            "A new container exited right after it started; the previous ones were restarted."
        )
        OUT_OF_MEMORY = "out_of_memory", _(
            "A new container ran out of memory right after it started (raise the workload's "
            "memory limit); the previous ones were restarted."
        )
        UNHEALTHY = "unhealthy", _(
            "A new container's health check failed, or had not passed in time, after it "
            "started; the previous ones were restarted."
        )
        INTERNAL = "internal", _("Berth hit an internal error; the server log has the details.")
        INTERRUPTED = "interrupted", _(
            "The deploy was interrupted (its worker stopped) before it finished."
        )

    ACTIVE = (Outcome.QUEUED, Outcome.RUNNING)
    FINISHED = (Outcome.SUCCEEDED, Outcome.FAILED)

    class BackupFailure(models.TextChoices):
        """Why a deploy that should have been preceded by a snapshot went on without one."""

        SETTING_UNREADABLE = "setting_unreadable", _(
            "The backup-before-deploy setting could not be read; no snapshot was taken."
        )
        CAPTURE_FAILED = "capture_failed", _(
            "The snapshot before this deploy failed; the deploy went on without it."
        )
        OVER_BUDGET = "over_budget", _(
            "The snapshot before this deploy went over its time or size budget and was "
            "abandoned; the deploy went on without it."
        )

    workload = models.ForeignKey(
        Workload, models.CASCADE, related_name="deploys", verbose_name=_("workload")
    )
    reason = models.CharField(_("reason"), max_length=10, choices=Reason)
    source_kind = models.CharField(_("source kind"), max_length=10, choices=Workload.SourceKind)
    requested_reference = models.CharField(_("requested reference"), max_length=512, blank=True)
    pinned_reference = models.CharField(_("pinned reference"), max_length=512, blank=True)
    repository = models.CharField(
        _("repository"),
        max_length=giturls.MAX_URL_LENGTH,
        blank=True,
        help_text=_("The repository a git deploy was built from (never with a credential)."),
    )
    image_id = models.CharField(
        _("image id"),
        max_length=100,
        blank=True,
        help_text=_("The image a git deploy built or reused (sha256:…)."),
    )
    outcome = models.CharField(
        _("outcome"), max_length=10, choices=Outcome, default=Outcome.QUEUED
    )
    failure_code = models.CharField(_("failure"), max_length=20, choices=Failure, blank=True)
    exit_code = models.IntegerField(
        _("exit code"), null=True, blank=True,
        help_text=_("The exit code of a new container that exited at start."),
    )
    backup_failure = models.CharField(
        _("backup failure"), max_length=20, choices=BackupFailure, blank=True,
        help_text=_("Set when the snapshot before this deploy should have been taken and was not."),
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, verbose_name=_("user")
    )
    rolled_back_from = models.ForeignKey(
        "self",
        models.SET_NULL,
        null=True,
        blank=True,
        related_name="rollbacks",
        verbose_name=_("rolled back to deploy"),
        help_text=_("The earlier deploy whose pinned reference this rollback replayed."),
    )
    rollback_restored = models.CharField(
        _("rollback restored"), max_length=40, choices=RollbackRestored, blank=True, default="",
        help_text=_("What a rollback brought back: the code, and perhaps the configuration "
                    "and the data."),
    )
    # What the deploy ran (workloads/configuration.py); null on rows written
    # before deploys recorded it ("configuration not recorded"). Secrets are
    # only named here: their values are kept in SecretVersion, linked below so
    # that a version goes with the last row that refers to it.
    configuration = models.JSONField(_("configuration"), null=True, blank=True, editable=False)
    secret_versions = models.ManyToManyField(
        SecretVersion, blank=True, related_name="deploys", verbose_name=_("secret versions")
    )
    created = models.DateTimeField(_("requested"), default=timezone.now)
    started = models.DateTimeField(_("started"), null=True, blank=True)
    finished = models.DateTimeField(_("finished"), null=True, blank=True)

    objects = DeployRecordQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name = _("deploy")
        verbose_name_plural = _("deploys")
        indexes = [models.Index(fields=["workload", "-created"], name="deploy_history_idx")]
        constraints = [
            # Single flight: one queued or running deploy per workload, enforced
            # by the database so that two web workers cannot both queue one.
            # A restore's redeploy runs under the lock it already holds and is
            # exempt: a deploy requested during a restore waits for it.
            models.UniqueConstraint(
                fields=["workload"],
                condition=Q(outcome__in=["queued", "running"]) & ~Q(reason="restore")
                & ~Q(rollback_restored__in=ROLLBACK_WITH_DATA),
                name="one_active_deploy_per_workload",
            )
        ]

    def __str__(self) -> str:
        return f"{self.workload} #{self.pk} ({self.outcome})"

    @classmethod
    def open(
        cls, *, workload: Workload, reason: str, user=None, reference: str = "",
        rolled_back_from: DeployRecord | None = None, owner: str = "",
        rollback_restored: str = "",
    ) -> DeployRecord:
        """Add a queued record and prune the workload's history to the newest N.

        Raises DeployInProgress while another deploy of the workload is queued
        or running (a restore's redeploy excepted). One transaction, so the
        ledger never holds more than BERTH_DEPLOY_HISTORY_KEEP finished rows of
        a workload, not even for a moment; unfinished rows are never pruned.
        `owner`: the process that runs it, when it is run in-process (a command).
        `rollback_restored`: what a rollback brings back (RollbackRestored).
        The secret versions no remaining row refers to go with the pruned rows.
        """
        try:
            with transaction.atomic():
                record = cls.objects.create(
                    workload=workload,
                    reason=reason,
                    source_kind=workload.source_kind,
                    requested_reference=reference or workload.source_reference,
                    user=acting_user(user),
                    rolled_back_from=rolled_back_from,
                    rollback_restored=rollback_restored,
                    owner=owner,
                )
                stale = (
                    cls.objects.filter(workload=workload, outcome__in=cls.FINISHED)
                    .order_by("-created", "-id")
                    .values_list("pk", flat=True)[settings.BERTH_DEPLOY_HISTORY_KEEP:]
                )
                cls.objects.filter(pk__in=list(stale)).delete()
                SecretVersion.objects.filter(workload=workload).unreferenced().delete()
        except IntegrityError:
            active = cls.objects.filter(workload=workload).active().first()
            raise DeployInProgress(active) from None
        return record

    def keep_configuration(self, snapshot: dict, versions: list[SecretVersion]) -> None:
        """Record what this deploy runs, and link the secret versions its snapshot names."""
        # One transaction: a snapshot naming a version the row does not hold
        # would let the version be pruned under it.
        with transaction.atomic():
            self.configuration = snapshot
            self.save(update_fields=["configuration"])
            self.secret_versions.set(versions)

    @property
    def configuration_recorded(self) -> bool:
        return self.configuration is not None

    @property
    def is_git(self) -> bool:
        return self.source_kind == Workload.SourceKind.GIT

    @property
    def git_ref(self) -> str:
        """The ref a git deploy asked for (`main`, also for a replay of `main@<sha>`)."""
        return self.requested_reference.partition("@")[0] if self.is_git else ""

    @property
    def commit(self) -> str:
        return self.pinned_reference if self.is_git else ""

    @property
    def short_commit(self) -> str:
        return self.commit[:12]

    @property
    def short_image_id(self) -> str:
        return self.image_id.removeprefix("sha256:")[:12]

    @property
    def commit_url(self) -> str | None:
        return giturls.commit_url(self.repository, self.commit) if self.commit else None

    @property
    def replay_reference(self) -> str:
        """The reference that makes dispatch() run exactly this deploy again.

        An image deploy's pinned `repo@sha256:…`; a git deploy's `ref@<commit>`.
        Both contain "@", which is how dispatch() tells a replay from a
        reference to resolve anew.
        """
        if self.is_git and self.pinned_reference:
            return f"{self.git_ref}@{self.pinned_reference}"
        return self.pinned_reference

    @property
    def short_reference(self) -> str:
        """`repo@sha256:0123456789ab` or `main@0123456789ab` pinned, else the requested one."""
        if self.is_git:
            sha = self.pinned_reference or self.requested_reference.partition("@")[2]
            return f"{self.git_ref}@{sha[:12]}" if sha else self.git_ref
        reference = self.pinned_reference or self.requested_reference
        repo, at, digest = reference.partition("@")
        if not at:
            return reference
        algorithm, _colon, value = digest.partition(":")
        return f"{repo.rsplit('/', 1)[-1]}@{algorithm}:{value[:12]}"

    @property
    def can_be_rolled_back_to(self) -> bool:
        return self.outcome == self.Outcome.SUCCEEDED and bool(self.pinned_reference)

    @property
    def failure_message(self) -> str:
        if not self.failure_code:
            return ""
        message = str(self.Failure(self.failure_code).label)
        if self.exit_code is not None:
            message = _("%(message)s Exit code: %(code)d.") % {
                "message": message, "code": self.exit_code}
        return message

    @property
    def keeps_failed_containers(self) -> bool:
        """Whether the engine may still hold this deploy's exited containers, for their logs."""
        return self.failure_code in (self.Failure.EXITED_AT_START, self.Failure.OUT_OF_MEMORY,
                                     self.Failure.UNHEALTHY)

    @property
    def duration(self):
        if self.started and self.finished:
            return self.finished - self.started
        return None

    @property
    def is_finished(self) -> bool:
        return self.outcome in {self.Outcome.SUCCEEDED, self.Outcome.FAILED}

    def claim(self) -> bool:
        """Move a queued record to running; False if another worker got there first."""
        return self.move(only_from=[self.Outcome.QUEUED], field="outcome",
                         outcome=self.Outcome.RUNNING, started=timezone.now(),
                         owner=owners.current())

    def succeed(self, pinned_reference: str, image_id: str = "") -> None:
        self.outcome = self.Outcome.SUCCEEDED
        self.pinned_reference = pinned_reference
        self.image_id = image_id
        self.finished = timezone.now()
        self.save(update_fields=["outcome", "pinned_reference", "image_id", "finished"])

    @property
    def backup_failure_message(self) -> str:
        return self.BackupFailure(self.backup_failure).label if self.backup_failure else ""

    def note_backup_failure(self, code: str) -> None:
        self.backup_failure = self.BackupFailure(code).value
        self.save(update_fields=["backup_failure"])

    def fail(self, code: str, pinned_reference: str = "", image_id: str = "",
             exit_code: int | None = None) -> None:
        self.outcome = self.Outcome.FAILED
        self.failure_code = self.Failure(code).value
        self.exit_code = exit_code
        self.pinned_reference = pinned_reference
        self.image_id = image_id
        self.finished = timezone.now()
        self.save(update_fields=["outcome", "failure_code", "exit_code", "pinned_reference",
                                 "image_id", "finished"])


class DeployLog(models.Model):
    """The bounded build log of a git deploy: what the fetch and the build printed.

    This is the one place where output Berth did not write reaches the
    database. That is acceptable because it is the build's own output (the
    operator's Dockerfile steps and git's report), with every known secret of
    the workload and any `user:password@` in a URL masked before it is
    stored; the repository credential never enters the build context (the
    context is exported from the commit's objects) and is passed to git only
    as an environment variable. Only the tail (BERTH_BUILD_LOG_KIB) is kept.
    """

    deploy = models.OneToOneField(
        DeployRecord,
        models.CASCADE,
        primary_key=True,
        related_name="build_log",
        verbose_name=_("deploy"),
    )
    text = models.TextField(_("log"), blank=True)
    truncated = models.BooleanField(_("truncated"), default=False)
    failed_step = models.CharField(_("failed step"), max_length=300, blank=True)
    updated = models.DateTimeField(_("updated"), default=timezone.now)

    class Meta:
        verbose_name = _("build log")
        verbose_name_plural = _("build logs")

    def __str__(self) -> str:
        return f"build log of deploy #{self.deploy_id}"
