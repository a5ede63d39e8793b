"""Berth's domain: projects, stages, workloads and what they own."""

from __future__ import annotations

import json
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext, pgettext_lazy
from django.utils.translation import gettext_lazy as _

from lib import crypto, gitcache, giturls, paths, references

SLUG_VALIDATOR = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$",
    _("Use 1–40 lowercase letters, digits and hyphens, not starting or ending with a hyphen."),
)
ENV_NAME_VALIDATOR = RegexValidator(
    r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
    _("Use letters, digits and underscores, not starting with a digit."),
)


class Project(models.Model):
    name = models.CharField(_("name"), max_length=100)
    slug = models.CharField(_("slug"), max_length=40, unique=True, validators=[SLUG_VALIDATOR])
    created = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        ordering = ["slug"]
        verbose_name = _("project")
        verbose_name_plural = _("projects")

    def __str__(self) -> str:
        return self.name


class Stage(models.Model):
    project = models.ForeignKey(
        Project, models.CASCADE, related_name="stages", verbose_name=_("project")
    )
    name = models.CharField(_("name"), max_length=100)
    slug = models.CharField(_("slug"), max_length=40, validators=[SLUG_VALIDATOR])
    created = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        ordering = ["project__slug", "slug"]
        verbose_name = _("stage")
        verbose_name_plural = _("stages")
        constraints = [
            models.UniqueConstraint(fields=["project", "slug"], name="stage_slug_unique_in_project")
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.slug}"


class RegistryCredential(models.Model):
    """A login for a private registry. The password is stored encrypted and never shown."""

    name = models.CharField(_("name"), max_length=100, unique=True)
    registry = models.CharField(
        _("registry"), max_length=255, help_text=_("Host and port, e.g. registry.example.com:5000")
    )
    username = models.CharField(_("username"), max_length=255)
    password_encrypted = models.TextField(editable=False, blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("registry credential")
        verbose_name_plural = _("registry credentials")
        permissions = [
            ("use_registrycredential", _("Can attach registry credentials to workloads")),
        ]

    def __str__(self) -> str:
        return self.name

    def set_password(self, raw: str) -> None:
        self.password_encrypted = crypto.encrypt(raw) if raw else ""

    def get_password(self) -> str:
        return crypto.decrypt(self.password_encrypted) if self.password_encrypted else ""

    @property
    def has_password(self) -> bool:
        return bool(self.password_encrypted)


class WorkloadQuerySet(models.QuerySet):
    def with_parents(self) -> WorkloadQuerySet:
        return self.select_related("stage__project", "registry_credential")


class SnapshotConsistency(models.TextChoices):
    STOP = "stop", _("Stop the containers")
    LIVE = "live", _("Live (no downtime)")


class Workload(models.Model):
    class SourceKind(models.TextChoices):
        IMAGE = "image", _("Image")
        GIT = "git", _("Git repository")

    class State(models.TextChoices):
        NEW = "new", _("Never deployed")
        DEPLOYING = "deploying", _("Deploying")
        RUNNING = "running", pgettext_lazy("workload state", "Running")
        FAILED = "failed", _("Last deploy failed")

    stage = models.ForeignKey(
        Stage, models.CASCADE, related_name="workloads", verbose_name=_("stage")
    )
    name = models.CharField(_("name"), max_length=100)
    slug = models.CharField(_("slug"), max_length=40, validators=[SLUG_VALIDATOR])
    source_kind = models.CharField(
        _("source kind"), max_length=10, choices=SourceKind, default=SourceKind.IMAGE
    )
    image = models.CharField(
        _("image reference"),
        max_length=255,
        blank=True,
        help_text=_("Repository and tag, e.g. 127.0.0.1:5000/team/app:1.4"),
    )
    registry_credential = models.ForeignKey(
        RegistryCredential,
        models.PROTECT,
        null=True,
        blank=True,
        related_name="workloads",
        verbose_name=_("registry credential"),
    )
    git_url = models.CharField(
        _("repository URL"),
        max_length=giturls.MAX_URL_LENGTH,
        blank=True,
        help_text=_(
            "https://, ssh:// or file://. A credential pasted into the URL is moved to the "
            "write-only repository credential."
        ),
    )
    git_ref = models.CharField(
        _("git ref"),
        max_length=giturls.MAX_REF_LENGTH,
        blank=True,
        default="main",
        help_text=_("A branch, a tag or a commit id."),
    )
    git_dockerfile = models.CharField(
        _("Dockerfile path"),
        max_length=giturls.MAX_PATH_LENGTH,
        blank=True,
        default="Dockerfile",
        help_text=_("Relative to the build context."),
    )
    git_context = models.CharField(
        _("build context"),
        max_length=giturls.MAX_PATH_LENGTH,
        blank=True,
        default=".",
        help_text=_("A directory of the repository; '.' (or empty) is its root."),
    )
    build_args = models.JSONField(
        _("build arguments"),
        default=dict,
        blank=True,
        help_text=_(
            'Names and values, e.g. {"VERSION": "1.4"}. Not for secrets: build arguments '
            "are kept in the image's history."
        ),
    )
    # Fernet token of {"username", "password", "origin"}: both parts are
    # write-only, since a bare `https://TOKEN@host/` puts the secret in the
    # username; "origin" is the scheme, host and port it was given for.
    git_credential_encrypted = models.TextField(editable=False, blank=True)
    replicas = models.PositiveSmallIntegerField(
        _("replicas"), default=1, validators=[MinValueValidator(1), MaxValueValidator(20)]
    )
    state = models.CharField(
        _("state"), max_length=12, choices=State, default=State.NEW, editable=False
    )
    running_reference = models.CharField(
        _("running reference"),
        max_length=512,
        blank=True,
        editable=False,
        help_text=_(
            "What the containers run: the image pinned by digest, or ref@commit for a git "
            "workload."
        ),
    )
    deployed_at = models.DateTimeField(_("deployed at"), null=True, blank=True, editable=False)
    snapshot_consistency = models.CharField(
        _("snapshot consistency"),
        max_length=4,
        choices=SnapshotConsistency,
        default=SnapshotConsistency.STOP,
        help_text=_("Stop the containers while a snapshot is taken, or take it while they run."),
    )
    auto_backup_before_deploy = models.BooleanField(
        _("back up before deploy"),
        null=True,
        blank=True,
        default=None,
        choices=[(None, _("Site default")), (True, _("On")), (False, _("Off"))],
        help_text=_("Take a snapshot of the volumes before every deploy."),
    )
    created = models.DateTimeField(_("created"), default=timezone.now)

    objects = WorkloadQuerySet.as_manager()

    class Meta:
        ordering = ["stage__project__slug", "stage__slug", "slug"]
        verbose_name = _("workload")
        verbose_name_plural = _("workloads")
        constraints = [
            models.UniqueConstraint(fields=["stage", "slug"], name="workload_slug_unique_in_stage")
        ]
        permissions = [
            ("deploy_workload", _("Can deploy workloads")),
            ("rollback_workload", _("Can roll workloads back to an earlier deploy")),
            ("snapshot_workload", _("Can take, download and import snapshots of workloads")),
            ("restore_workload", _("Can restore snapshots onto workloads")),
        ]

    def __str__(self) -> str:
        return f"{self.stage.project.slug}/{self.stage.slug}/{self.slug}"

    def save(self, *args, **kwargs) -> None:
        # Whatever path a URL came in by, a credential inside it is never stored
        # in the URL column: it moves to the encrypted, write-only credential.
        update_fields = kwargs.get("update_fields")
        if update_fields is None or "git_url" in update_fields:
            split = giturls.split_credential(self.git_url)
            if split.had_credential:
                self.git_url = split.url
                self.set_git_credential(split.username, split.password)
                if update_fields is not None:
                    kwargs["update_fields"] = {*update_fields, "git_credential_encrypted"}
        super().save(*args, **kwargs)

    def clean(self) -> None:
        if self.source_kind == self.SourceKind.GIT:
            self._clean_git()
            return
        if self.source_kind == self.SourceKind.IMAGE and not self.image.strip():
            raise ValidationError({"image": _("An image workload needs an image reference.")})
        if self.image and not references.is_valid(self.image):
            raise ValidationError(
                {"image": _("This is not a valid image reference (host/repository:tag).")}
            )
        credential = self.registry_credential if self.registry_credential_id else None
        if credential and credential.registry != references.registry_host(self.image):
            # A credential is only ever sent to its own registry: otherwise
            # pointing the image at a host one controls would collect it.
            raise ValidationError(
                {"registry_credential": _(
                    "This credential is for %(credential)s, but the image is pulled from "
                    "%(registry)s."
                ) % {"credential": credential.registry,
                     "registry": references.registry_host(self.image)}}
            )

    def check_volumes(self, volumes: list[VolumeMount]) -> None:
        """Refuse a set of volumes for this workload that overlaps any other volume.

        Raises ValidationError; each volume's own path rules are checked too.
        """
        mine = [volume.overlap_key(self) for volume in volumes]
        others = []
        everyone_else = VolumeMount.objects.select_related("workload__stage__project")
        if self.pk is not None:
            everyone_else = everyone_else.exclude(workload_id=self.pk)
        for other in everyone_else:
            try:
                others.append(other.overlap_key(other.workload))
            except ValidationError:
                continue  # an invalid volume can never be deployed; it holds no path
        paths.check_no_overlap(mine, others)

    def _clean_git(self) -> None:
        errors: dict[str, list[str]] = {}
        checks = [
            ("git_url", lambda: giturls.validate_url(giturls.split_credential(self.git_url).url)),
            ("git_ref", lambda: giturls.validate_ref(self.git_ref)),
            ("git_dockerfile",
             lambda: giturls.validate_repo_path(self.git_dockerfile, allow_root=False)),
            ("git_context", lambda: giturls.validate_repo_path(self.git_context, allow_root=True)),
            ("build_args", lambda: giturls.validate_build_args(self.build_args)),
        ]
        for field, check in checks:
            try:
                check()
            except ValidationError as exc:
                errors[field] = exc.messages
        if "git_url" not in errors and self.has_git_credential:
            if giturls.scheme_of(self.git_url) != "https":
                errors["git_url"] = [_(
                    "Only https:// repositories use the stored credential (ssh:// uses the "
                    "server's SSH keys); remove the credential or use an https:// URL."
                )]
            elif not self.git_credential_matches_url:
                # Else anyone who may edit the workload could send the stored
                # secret to a server of their own by changing the URL.
                errors["git_url"] = [_(
                    "The stored repository credential was given for another host; enter it "
                    "again for this URL, or remove it."
                )]
        if errors:
            raise ValidationError(errors)

    @property
    def source_reference(self) -> str:
        """What a deploy asks for: the image reference, or the git ref."""
        return self.git_ref if self.source_kind == self.SourceKind.GIT else self.image

    def set_git_credential(self, username: str, password: str) -> None:
        """Store (or, both empty, remove) the credential, bound to git_url's origin as it is now."""
        if username or password:
            payload = {
                "username": username, "password": password,
                "origin": giturls.origin(self.git_url),
            }
            self.git_credential_encrypted = crypto.encrypt(json.dumps(payload))
        else:
            self.git_credential_encrypted = ""

    def _git_credential_payload(self) -> dict:
        if not self.git_credential_encrypted:
            return {}
        return json.loads(crypto.decrypt(self.git_credential_encrypted))

    def get_git_credential(self) -> tuple[str, str]:
        """(username, password); both empty when none is stored."""
        payload = self._git_credential_payload()
        return payload.get("username", ""), payload.get("password", "")

    @property
    def git_credential_matches_url(self) -> bool:
        return self._git_credential_for(self.git_url)

    def _git_credential_for(self, url: str) -> bool:
        origin = self._git_credential_payload().get("origin", "")
        return bool(origin) and origin == giturls.origin(url)

    def stored_git_credential_for(self, url: str) -> tuple[str, str]:
        """The stored parts to keep in a partial update to `url`: none for another origin.

        Otherwise a new password typed for another host would be sent there
        together with the stored username, which may itself be a token.
        """
        return self.get_git_credential() if self._git_credential_for(url) else ("", "")

    @property
    def has_git_credential(self) -> bool:
        return bool(self.git_credential_encrypted)

    @property
    def repository_web_url(self) -> str | None:
        return giturls.web_url(self.git_url) if self.git_url else None

    @property
    def running_commit(self) -> str:
        """The commit a git workload's containers run (from `ref@sha`), else ""."""
        ref, at, sha = self.running_reference.partition("@")
        return sha if at and giturls.is_full_sha(sha) else ""

    @property
    def running_git_ref(self) -> str:
        return self.running_reference.partition("@")[0] if self.running_commit else ""

    @property
    def running_commit_url(self) -> str | None:
        commit = self.running_commit
        return giturls.commit_url(self.git_url, commit) if commit else None

    @property
    def container_prefix(self) -> str:
        return f"berth-{self.stage.project.slug}-{self.stage.slug}-{self.slug}"

    def container_name(self, replica: int) -> str:
        return f"{self.container_prefix}-{replica}"

    def secret_values(self) -> list[str]:
        """Every secret this workload knows, for redacting log lines."""
        values = [env.get_value() for env in self.env_vars.filter(is_secret=True)]
        if self.registry_credential_id:
            values.append(self.registry_credential.get_password())
        if self.has_git_credential:
            values.extend(gitcache.Credential(*self.get_git_credential()).secrets())
        return [v for v in values if v]

    def mark_deploying(self) -> None:
        Workload.objects.filter(pk=self.pk).update(state=self.State.DEPLOYING)
        self.state = self.State.DEPLOYING

    def mark_deployed(self, reference: str) -> None:
        self.state = self.State.RUNNING
        self.running_reference = reference
        self.deployed_at = timezone.now()
        self.save(update_fields=["state", "running_reference", "deployed_at"])

    def mark_failed(self) -> None:
        # The previous containers keep running after a failed deploy; the
        # state says the last attempt failed, running_reference what runs.
        Workload.objects.filter(pk=self.pk).update(state=self.State.FAILED)
        self.state = self.State.FAILED


def remove_git_cache_after_delete(sender, instance: Workload, **kwargs) -> None:
    """A deleted workload's repository cache goes too, once the delete is committed."""
    workload_id = instance.pk
    transaction.on_commit(lambda: gitcache.remove_cache(workload_id))


class VolumeMount(models.Model):
    class Scope(models.TextChoices):
        ABSOLUTE = paths.SCOPE_ABSOLUTE, _("Absolute host path")
        STAGE = paths.SCOPE_STAGE, _("Stage directory")
        PROJECT = paths.SCOPE_PROJECT, _("Project directory")

    workload = models.ForeignKey(
        Workload, models.CASCADE, related_name="volumes", verbose_name=_("workload")
    )
    scope = models.CharField(_("scope"), max_length=10, choices=Scope, default=Scope.STAGE)
    source = models.CharField(
        _("source"),
        max_length=255,
        help_text=_("An absolute host path, or a path relative to the stage or project directory."),
    )
    target = models.CharField(_("container path"), max_length=255)
    read_only = models.BooleanField(_("read-only"), default=False)

    class Meta:
        ordering = ["workload", "id"]
        verbose_name = _("volume")
        verbose_name_plural = _("volumes")
        constraints = [
            models.UniqueConstraint(fields=["workload", "target"], name="volume_target_unique")
        ]

    def __str__(self) -> str:
        return f"{self.scope}:{self.source} → {self.target}"

    def clean(self) -> None:
        errors = {}
        try:
            paths.validate_source(self.scope, self.source)
        except ValidationError as exc:
            errors["source"] = exc.messages
        try:
            paths.validate_target(self.target)
        except ValidationError as exc:
            errors["target"] = exc.messages
        if errors:
            raise ValidationError(errors)

    def host_path(self, workload: Workload | None = None) -> str:
        stage = (workload or self.workload).stage
        return paths.host_path(self.scope, stage.project.slug, stage.slug, self.source)

    def overlap_key(self, workload: Workload) -> tuple[str, str, str]:
        """(host path, scope, owner) for paths.check_no_overlap."""
        stage = workload.stage
        owner = {
            paths.SCOPE_PROJECT: stage.project.slug,
            paths.SCOPE_STAGE: f"{stage.project.slug}/{stage.slug}",
        }.get(self.scope, self.source)
        return self.host_path(workload), self.scope, owner


class EnvVar(models.Model):
    """An environment variable. A secret value is stored encrypted and never shown back."""

    workload = models.ForeignKey(
        Workload, models.CASCADE, related_name="env_vars", verbose_name=_("workload")
    )
    name = models.CharField(_("name"), max_length=128, validators=[ENV_NAME_VALIDATOR])
    value = models.TextField(_("value"), blank=True)
    is_secret = models.BooleanField(_("secret"), default=False)
    secret_encrypted = models.TextField(editable=False, blank=True)

    class Meta:
        ordering = ["workload", "name"]
        verbose_name = _("environment variable")
        verbose_name_plural = _("environment variables")
        constraints = [
            models.UniqueConstraint(fields=["workload", "name"], name="env_name_unique")
        ]

    def __str__(self) -> str:
        return self.name

    def set_value(self, raw: str, *, secret: bool) -> None:
        self.is_secret = secret
        if secret:
            self.secret_encrypted = crypto.encrypt(raw)
            self.value = ""
        else:
            self.secret_encrypted = ""
            self.value = raw

    def get_value(self) -> str:
        if self.is_secret:
            return crypto.decrypt(self.secret_encrypted) if self.secret_encrypted else ""
        return self.value


class PortMapping(models.Model):
    class Protocol(models.TextChoices):
        TCP = "tcp", "TCP"
        UDP = "udp", "UDP"

    workload = models.ForeignKey(
        Workload, models.CASCADE, related_name="ports", verbose_name=_("workload")
    )
    host_ip = models.GenericIPAddressField(_("host address"), default="127.0.0.1")
    host_port = models.PositiveIntegerField(
        _("host port"), validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    container_port = models.PositiveIntegerField(
        _("container port"), validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    protocol = models.CharField(_("protocol"), max_length=3, choices=Protocol, default="tcp")

    class Meta:
        ordering = ["workload", "container_port"]
        verbose_name = _("port")
        verbose_name_plural = _("ports")
        constraints = [
            models.UniqueConstraint(
                fields=["host_ip", "host_port", "protocol"], name="host_port_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.host_ip}:{self.host_port}→{self.container_port}/{self.protocol}"


class ContainerQuerySet(models.QuerySet):
    def live(self) -> ContainerQuerySet:
        return self.filter(removed__isnull=True)


class Container(models.Model):
    """The index of Docker containers a workload has had (stats join through it)."""

    workload = models.ForeignKey(
        Workload, models.CASCADE, related_name="containers", verbose_name=_("workload")
    )
    docker_id = models.CharField(_("Docker id"), max_length=64, unique=True)
    name = models.CharField(_("name"), max_length=255)
    replica = models.PositiveSmallIntegerField(_("replica"))
    image_reference = models.CharField(_("image"), max_length=512)
    created = models.DateTimeField(_("created"), default=timezone.now)
    removed = models.DateTimeField(_("removed"), null=True, blank=True)

    objects = ContainerQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "replica"]
        verbose_name = _("container")
        verbose_name_plural = _("containers")
        indexes = [models.Index(fields=["workload", "removed"], name="container_live_idx")]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def replace_for(cls, workload: Workload, new: list[tuple[str, str, int]], image: str) -> None:
        """Record `new` (docker id, name, replica) as the workload's live containers."""
        now = timezone.now()
        # One transaction: the index never shows both generations live, or none.
        with transaction.atomic():
            cls.objects.filter(workload=workload, removed__isnull=True).update(removed=now)
            cls.objects.bulk_create(
                cls(workload=workload, docker_id=docker_id, name=name, replica=replica,
                    image_reference=image, created=now)
                for docker_id, name, replica in new
            )


class DeployInProgress(Exception):
    """Another deploy of the workload is queued or running (single flight)."""

    def __init__(self, active: DeployRecord | None) -> None:
        super().__init__(_("Another deploy of this workload is already queued or running."))
        self.active = active


class ContainerStatsSample(models.Model):
    """One sampler tick's reading of one container (written by workloads/metrics.py).

    A tick's samples share one timestamp, so a workload's usage at an instant
    is the sum over the rows with that timestamp.
    """

    # No index of its own: (container, timestamp) below serves every lookup by container.
    container = models.ForeignKey(
        Container, models.CASCADE, related_name="stats", verbose_name=_("container"),
        db_index=False,
    )
    timestamp = models.DateTimeField(_("timestamp"))
    cpu_percent = models.FloatField(_("CPU percent"))
    memory_bytes = models.PositiveBigIntegerField(_("memory (bytes)"))
    memory_limit = models.PositiveBigIntegerField(_("memory limit (bytes)"))

    class Meta:
        verbose_name = _("stats sample")
        verbose_name_plural = _("stats samples")
        indexes = [
            # The history query: a workload's containers, then a time range of each.
            models.Index(fields=["container", "timestamp"], name="stats_container_time_idx"),
            # Pruning: everything older than the retention, whatever the container.
            models.Index(fields=["timestamp"], name="stats_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.container_id} @ {self.timestamp:%Y-%m-%d %H:%M:%S}"


class DeployRecord(models.Model):
    """One dispatch of a workload: queued, then running, then succeeded or failed.

    A failure is kept as a code from a fixed set and its fixed message; the raw
    error (which can carry credentials) only goes to the server log, redacted.
    """

    class Reason(models.TextChoices):
        MANUAL = "manual", _("Manual")
        API = "api", _("API")
        ROLLBACK = "rollback", _("Rollback")
        RESTORE = "restore", _("Restore")
        AUTO = "auto", _("Automatic")

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
    created = models.DateTimeField(_("requested"), default=timezone.now)
    started = models.DateTimeField(_("started"), null=True, blank=True)
    finished = models.DateTimeField(_("finished"), null=True, blank=True)

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
                condition=Q(outcome__in=["queued", "running"]) & ~Q(reason="restore"),
                name="one_active_deploy_per_workload",
            )
        ]

    def __str__(self) -> str:
        return f"{self.workload} #{self.pk} ({self.outcome})"

    @classmethod
    def open(
        cls, *, workload: Workload, reason: str, user=None, reference: str = "",
        rolled_back_from: DeployRecord | None = None,
    ) -> DeployRecord:
        """Add a queued record and prune the workload's history to the newest N.

        Raises DeployInProgress while another deploy of the workload is queued
        or running (a restore's redeploy excepted). One transaction, so the
        ledger never holds more than BERTH_DEPLOY_HISTORY_KEEP finished rows of
        a workload, not even for a moment; unfinished rows are never pruned.
        """
        cls._expire_stale(workload)
        try:
            with transaction.atomic():
                record = cls.objects.create(
                    workload=workload,
                    reason=reason,
                    source_kind=workload.source_kind,
                    requested_reference=reference or workload.source_reference,
                    user=user if user is not None and user.is_authenticated else None,
                    rolled_back_from=rolled_back_from,
                )
                stale = (
                    cls.objects.filter(workload=workload, outcome__in=cls.FINISHED)
                    .order_by("-created", "-id")
                    .values_list("pk", flat=True)[settings.BERTH_DEPLOY_HISTORY_KEEP:]
                )
                cls.objects.filter(pk__in=list(stale)).delete()
        except IntegrityError:
            active = cls.objects.filter(workload=workload, outcome__in=cls.ACTIVE).first()
            raise DeployInProgress(active) from None
        return record

    @classmethod
    def _expire_stale(cls, workload: Workload) -> None:
        """Fail unfinished deploys whose worker is gone, so they stop blocking new ones.

        Only rows older than BERTH_TASK_TIMEOUT plus the broker's retry window
        are considered, and none while a restore of the workload is active (a
        deploy waits for a restore as long as the restore takes), and only
        when the workload's lock can be taken now: a running deploy holds it
        (deploys claim their row under the lock), and a queued one may be
        waiting for whoever holds it. With the lock free, a running row's
        process is dead and a queued row's task was lost (django-q2 never
        retries a deploy) — age alone says nothing, since Berth's tasks have
        no timeout.
        """
        from lib import locks
        from snapshots.models import RestoreJob

        limit = timezone.now() - timedelta(seconds=settings.BERTH_TASK_TIMEOUT + 600)
        old = cls.objects.filter(workload=workload, outcome__in=cls.ACTIVE, created__lt=limit)
        if not old.exists() or RestoreJob.objects.active().filter(workload=workload).exists():
            return
        expire = {"outcome": cls.Outcome.FAILED, "failure_code": cls.Failure.INTERRUPTED,
                  "finished": timezone.now()}
        if locks.is_held(workload.pk):
            return  # (a restore's redeploy) someone may be waiting for this very lock
        try:
            with locks.try_workload_lock(workload.pk):
                old.update(**expire)
        except locks.LockTimeout:
            pass  # someone works on the workload; a queued deploy may be waiting for it

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
        return self.Failure(self.failure_code).label if self.failure_code else ""

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
        now = timezone.now()
        claimed = DeployRecord.objects.filter(pk=self.pk, outcome=self.Outcome.QUEUED).update(
            outcome=self.Outcome.RUNNING, started=now
        )
        if claimed:
            self.outcome, self.started = self.Outcome.RUNNING, now
        return bool(claimed)

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

    def fail(self, code: str, pinned_reference: str = "", image_id: str = "") -> None:
        self.outcome = self.Outcome.FAILED
        self.failure_code = self.Failure(code).value
        self.pinned_reference = pinned_reference
        self.image_id = image_id
        self.finished = timezone.now()
        self.save(
            update_fields=["outcome", "failure_code", "pinned_reference", "image_id", "finished"]
        )


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


class EventLog(models.Model):
    """Free text for people ("deployed v1.4", "deploy failed"); not a ledger.

    `message` is the English source text, marked with gettext_noop where it is
    written, and `params` its values: the text is translated when it is shown,
    in the reader's language, not in whatever language the writer (often the
    task worker) had active.
    """

    class Level(models.TextChoices):
        INFO = "info", _("Info")
        WARNING = "warning", _("Warning")
        ERROR = "error", _("Error")

    workload = models.ForeignKey(
        Workload, models.CASCADE, related_name="events", verbose_name=_("workload")
    )
    level = models.CharField(_("level"), max_length=10, choices=Level, default=Level.INFO)
    message = models.TextField(_("message"))
    params = models.JSONField(_("parameters"), default=dict, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, verbose_name=_("user")
    )
    created = models.DateTimeField(_("created"), default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name = _("event")
        verbose_name_plural = _("events")

    def __str__(self) -> str:
        return self.text

    @property
    def text(self) -> str:
        """The message in the active language.

        String parameters are looked up in the catalogue too, so a parameter
        that is itself a message (a failure's fixed text) is translated; one
        that is not (a digest) comes back unchanged.
        """
        params = {
            key: gettext(value) if isinstance(value, str) else value
            for key, value in self.params.items()
        }
        try:
            return gettext(self.message) % params if params else gettext(self.message)
        except (KeyError, TypeError, ValueError):
            return self.message
