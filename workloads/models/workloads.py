"""Workloads and what each one owns: its registry credential, volumes, env and ports."""

from __future__ import annotations

import ipaddress
import json

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from lib import crypto, gitcache, giturls, paths, references
from workloads.models.projects import SLUG_VALIDATOR, Stage

ENV_NAME_VALIDATOR = RegexValidator(
    r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
    _("Use letters, digits and underscores, not starting with a digit."),
)


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


class HookFailure(models.TextChoices):
    ABORT = "abort", _("Abort the snapshot")
    CONTINUE = "continue", _("Take the snapshot and flag it")


# Seconds a backup hook may run; the default gives a database dump time.
HOOK_TIMEOUT_DEFAULT = 300
HOOK_TIMEOUT_MAX = 3600
HOOK_COMMAND_MAX_LENGTH = 2000
HEALTH_COMMAND_MAX_LENGTH = 2000
HEALTH_SECONDS_MAX = 3600


class Workload(models.Model):
    class SourceKind(models.TextChoices):
        IMAGE = "image", _("Image")
        GIT = "git", _("Git repository")

    class State(models.TextChoices):
        NEW = "new", _("Never deployed")
        DEPLOYING = "deploying", _("Deploying")
        RUNNING = "running", pgettext_lazy("workload state", "Running")
        STOPPED = "stopped", _("Stopped by an operator")
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
    memory_limit_mib = models.PositiveIntegerField(
        _("memory limit (MiB)"),
        null=True,
        blank=True,
        validators=[MinValueValidator(6), MaxValueValidator(1024 * 1024)],
        help_text=_(
            "Each container's memory, swap included; a container that needs more is killed "
            "(out of memory). Empty: no limit. Applies from the next deploy."
        ),
    )
    # A health check of Berth's own, in place of the image's (docs/deploys.md, "Settle").
    health_command = models.CharField(
        _("health check command"),
        max_length=HEALTH_COMMAND_MAX_LENGTH,
        blank=True,
        help_text=_(
            "A command run with sh -c inside each container; exit code 0 means healthy, e.g. "
            "wget -q -O /dev/null http://127.0.0.1/. Empty: the image's own health check, "
            "if it has one. Applies from the next deploy."
        ),
    )
    health_interval_seconds = models.PositiveSmallIntegerField(
        _("health check interval"),
        default=5,
        validators=[MinValueValidator(1), MaxValueValidator(HEALTH_SECONDS_MAX)],
        help_text=_("Seconds between two runs of the health check command."),
    )
    health_timeout_seconds = models.PositiveSmallIntegerField(
        _("health check timeout"),
        default=5,
        validators=[MinValueValidator(1), MaxValueValidator(HEALTH_SECONDS_MAX)],
        help_text=_("Seconds one run may take before it counts as a failure."),
    )
    health_retries = models.PositiveSmallIntegerField(
        _("health check retries"),
        default=3,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text=_("Failures in a row after which a container is unhealthy."),
    )
    health_start_period_seconds = models.PositiveSmallIntegerField(
        _("health check start period"),
        default=0,
        validators=[MaxValueValidator(HEALTH_SECONDS_MAX)],
        help_text=_("Seconds after a start in which failures do not count yet."),
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
    # Backup hooks (docs/concepts.md, "Backup hooks"): run with `sh -c` inside
    # the first replica's container around a snapshot Berth takes itself.
    pre_backup_hook = models.CharField(
        _("pre-backup hook"),
        max_length=HOOK_COMMAND_MAX_LENGTH,
        blank=True,
        help_text=_(
            "A command run with sh -c inside the first replica's container before a snapshot, "
            "while it still runs, e.g. pg_dump -f /data/dump.sql. Not for secrets: use a "
            "secret environment variable."
        ),
    )
    post_backup_hook = models.CharField(
        _("post-backup hook"),
        max_length=HOOK_COMMAND_MAX_LENGTH,
        blank=True,
        help_text=_(
            "A command run with sh -c inside the first replica's container after the "
            "snapshot, once the containers run again."
        ),
    )
    backup_hook_timeout = models.PositiveIntegerField(
        _("backup hook timeout"),
        default=HOOK_TIMEOUT_DEFAULT,
        validators=[MinValueValidator(1), MaxValueValidator(HOOK_TIMEOUT_MAX)],
        help_text=_("Seconds each hook may run before it is killed."),
    )
    pre_hook_failure = models.CharField(
        _("when the pre-backup hook fails"),
        max_length=8,
        choices=HookFailure,
        default=HookFailure.ABORT,
    )
    created = models.DateTimeField(_("created"), default=timezone.now)

    objects = WorkloadQuerySet.as_manager()
    # Who may set a backup hook (a command run inside the containers, with their secrets).
    HOOK_PERMISSION = "workloads.deploy_workload"
    # The workload's own health check, as the API, the pages and the admin edit it.
    HEALTH_FIELDS = (
        "health_command", "health_interval_seconds", "health_timeout_seconds", "health_retries",
        "health_start_period_seconds",
    )

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
            ("operate_workload", _("Can start, stop and restart workloads")),
            # Logs can carry secrets an application prints: viewers do not get it.
            ("view_logs", _("Can read the logs of workloads")),
        ]

    def __str__(self) -> str:
        return self.path

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

    def get_absolute_url(self) -> str:
        return reverse("workload-detail", args=[self.pk])

    @property
    def path(self) -> str:
        """`project/stage/workload`: unique, unlike the slug alone; what a restore's
        confirmation names (the X-Confirm-Restore header, the typed text in the dialog)."""
        return f"{self.stage.project.slug}/{self.stage.slug}/{self.slug}"

    def clean(self) -> None:
        self._clean_hooks()
        self._clean_health()
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

    def _clean_health(self) -> None:
        command = self.health_command or ""
        if command and not command.strip():
            self.health_command = ""  # `sh -c " "` would pass, checking nothing
        elif "\x00" in command:
            raise ValidationError(
                {"health_command": _("A health check command cannot contain a NUL character.")})

    def health_check(self) -> dict[str, object] | None:
        """The engine's health check settings for Berth's own check; None: the image's own."""
        if not self.health_command:
            return None
        return {
            "command": self.health_command,
            "interval": self.health_interval_seconds,
            "timeout": self.health_timeout_seconds,
            "retries": self.health_retries,
            "start_period": self.health_start_period_seconds,
        }

    def _clean_hooks(self) -> None:
        errors = {}
        for name in ("pre_backup_hook", "post_backup_hook"):
            command = getattr(self, name) or ""
            if command and not command.strip():
                # A blank command would run `sh -c " "` and succeed doing nothing.
                setattr(self, name, "")
            elif "\x00" in command:
                errors[name] = _("A hook command cannot contain a NUL character.")
            elif len(command) > HOOK_COMMAND_MAX_LENGTH:
                errors[name] = _("A hook command is at most %(max)d characters long.") % {
                    "max": HOOK_COMMAND_MAX_LENGTH}
        timeout = self.backup_hook_timeout
        if not isinstance(timeout, int) or not 1 <= timeout <= HOOK_TIMEOUT_MAX:
            errors["backup_hook_timeout"] = _(
                "The hook timeout is a whole number of seconds from 1 to %(max)d."
            ) % {"max": HOOK_TIMEOUT_MAX}
        if self.pre_hook_failure not in HookFailure.values:
            errors["pre_hook_failure"] = _("Choose abort or continue.")
        if errors:
            raise ValidationError(errors)

    @property
    def has_backup_hooks(self) -> bool:
        return bool(self.pre_backup_hook.strip() or self.post_backup_hook.strip())

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

    def git_credential_after_edit(
        self, *, url: str, url_credential: tuple[str, str] | None,
        username: str | None, password: str | None,
    ) -> tuple[str, str] | None:
        """The (username, password) an edit stores, or None to leave the credential as it is.

        `url_credential` is one pasted into the new `url` (taken out of it);
        `username` and `password` are the write-only fields, None for one left
        out, which keeps its part — from the pasted credential, else from the
        stored one if it was given for the same origin as `url`. The API and
        the admin form both settle an edit here.
        """
        if username is None and password is None:
            return url_credential
        base = url_credential or self.stored_git_credential_for(url)
        return (base[0] if username is None else username,
                base[1] if password is None else password)

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

    def captured_volumes(self) -> list[VolumeMount]:
        """The volumes a snapshot holds, in index order (their position among all, by id)."""
        return [v for v in self.volumes.order_by("id") if v.scope in paths.SUPPORTED_SCOPES]

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

    def mark_operated(self, state: str) -> None:
        """Running again, or stopped by an operator (only a deployed workload is either)."""
        Workload.objects.filter(pk=self.pk).update(state=state)
        self.state = state

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

    def address_allowed(self) -> bool:
        """Loopback, or an address the site lists in BERTH_PORT_ADDRESSES (0.0.0.0 and ::,
        every address, only when listed): publishing an app to the network is a choice."""
        try:
            address = ipaddress.ip_address(self.host_ip)
        except ValueError:
            return False
        return address.is_loopback or str(address) in settings.BERTH_PORT_ADDRESSES


