"""Backup targets (an S3 bucket or a mounted directory) and the snapshots' copies on them.

The secret access key and a stored age identity are encrypted at rest
(lib/crypto) and never shown again; recipients are public keys. A target
with no recipients must be marked unencrypted, on purpose.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from lib import agecrypt, crypto, offsite, paths
from snapshots.models import Snapshot
from workloads.jobs import Job, Progress, RecordedFailure
from workloads.models import Project, Workload

BUCKET_VALIDATOR = RegexValidator(
    r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$",
    _("3 to 63 lowercase letters, digits, dots and hyphens, starting and ending with a "
      "letter or digit."),
)
REGION_VALIDATOR = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$",
    _("Lowercase letters, digits and hyphens, e.g. eu-central-1."),
)
PREFIX_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9!\-_.*'()/]{0,200}$",
    _("Letters, digits and / - _ . ! * ' ( ) only."),
)


KEEP_COPIES_HELP = _("Per workload, the newest copies of this kind kept on the target; older "
                     "ones are removed from it. 0 keeps them all.")


class CopyKind(models.TextChoices):
    """What a copy policy and remote retention tell snapshots apart by: their kind, and
    `imported` for an uploaded snapshot whatever its kind (as local retention counts it)."""

    MANUAL = "manual", _("Manual")
    PRE_DEPLOY = "pre_deploy", _("Before deploy")
    PRE_RESTORE = "pre_restore", _("Before restore")
    SCHEDULED = "scheduled", _("Scheduled")
    IMPORTED = "imported", _("Imported")


def copy_kind(snapshot: Snapshot) -> str:
    return CopyKind.IMPORTED if snapshot.imported else snapshot.kind


class BackupTarget(models.Model):
    class Kind(models.TextChoices):
        S3 = "s3", _("S3 bucket")
        DIRECTORY = "directory", _("Directory")

    name = models.CharField(_("name"), max_length=100, unique=True)
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices, default=Kind.S3)
    # S3
    endpoint_url = models.CharField(
        _("endpoint URL"), max_length=255, blank=True,
        help_text=_("e.g. https://s3.eu-central-1.amazonaws.com; empty for AWS's default"),
    )
    region = models.CharField(_("region"), max_length=64, blank=True,
                              validators=[REGION_VALIDATOR])
    bucket = models.CharField(_("bucket"), max_length=63, blank=True,
                              validators=[BUCKET_VALIDATOR])
    prefix = models.CharField(_("prefix"), max_length=200, blank=True,
                              validators=[PREFIX_VALIDATOR],
                              help_text=_("Objects go under this path in the bucket."))
    access_key_id = models.CharField(_("access key id"), max_length=128, blank=True)
    secret_access_key_encrypted = models.TextField(editable=False, blank=True)
    path_style = models.BooleanField(
        _("path-style addressing"), default=True,
        help_text=_("bucket in the path, not the host name (most self-hosted S3 servers)"),
    )
    # directory
    directory = models.CharField(
        _("directory"), max_length=500, blank=True,
        help_text=_("An absolute path under BERTH_BACKUP_DIRECTORY_ROOTS, e.g. a NAS share."),
    )
    # encryption
    recipients = models.TextField(
        _("age recipients"), blank=True,
        help_text=_("Public keys (age1...), one per line. Backing up needs only these."),
    )
    unencrypted = models.BooleanField(
        _("unencrypted"), default=False,
        help_text=_("Copies leave the host in clear. Only for a target you trust with the "
                    "data itself."),
    )
    identity_encrypted = models.TextField(editable=False, blank=True)
    # Remote retention: the newest N verified copies of each kind per workload (0 keeps all).
    keep_manual = models.PositiveIntegerField(_("keep manual copies"), default=10,
                                              help_text=KEEP_COPIES_HELP)
    keep_pre_deploy = models.PositiveIntegerField(_("keep pre-deploy copies"), default=5,
                                                  help_text=KEEP_COPIES_HELP)
    keep_pre_restore = models.PositiveIntegerField(_("keep pre-restore copies"), default=5,
                                                   help_text=KEEP_COPIES_HELP)
    keep_scheduled = models.PositiveIntegerField(_("keep scheduled copies"), default=30,
                                                 help_text=KEEP_COPIES_HELP)
    keep_imported = models.PositiveIntegerField(_("keep imported copies"), default=5,
                                                help_text=KEEP_COPIES_HELP)
    created = models.DateTimeField(auto_now_add=True)
    checked = models.DateTimeField(_("last checked"), null=True, blank=True, editable=False)
    check_code = models.CharField(_("last check"), max_length=32, blank=True, editable=False)

    class Meta:
        ordering = ["name"]
        verbose_name = _("backup target")
        verbose_name_plural = _("backup targets")

    def __str__(self) -> str:
        return self.name

    # --- secrets ----------------------------------------------------------------------

    def set_secret_access_key(self, raw: str) -> None:
        self.secret_access_key_encrypted = crypto.encrypt(raw) if raw else ""

    def get_secret_access_key(self) -> str:
        if not self.secret_access_key_encrypted:
            return ""
        return crypto.decrypt(self.secret_access_key_encrypted)

    @property
    def has_secret_access_key(self) -> bool:
        return bool(self.secret_access_key_encrypted)

    def set_identity(self, raw: str) -> None:
        """Store an age identity (encrypted at rest), or forget it with ""."""
        if raw:
            identities = agecrypt.parse_identities(raw)
            self.identity_encrypted = crypto.encrypt(
                "\n".join(str(i) for i in identities))
        else:
            self.identity_encrypted = ""

    def get_identity(self) -> str:
        return crypto.decrypt(self.identity_encrypted) if self.identity_encrypted else ""

    @property
    def has_identity(self) -> bool:
        return bool(self.identity_encrypted)

    def secret_values(self) -> list[str]:
        """Every secret this target knows and can read, for redacting log lines (each
        identity apart)."""
        found = []
        for read in (self.get_secret_access_key, self.get_identity):
            try:
                found += read().splitlines()
            except crypto.SecretUnreadable:
                continue
        return [v for v in found if v]

    # --- validation -------------------------------------------------------------------

    @property
    def recipient_list(self) -> list[str]:
        return agecrypt.parse_recipients(self.recipients)

    @property
    def encrypted(self) -> bool:
        return not self.unencrypted

    @property
    def where(self) -> str:
        """The place in one line: the directory, or the endpoint, bucket and prefix."""
        if self.kind == self.Kind.DIRECTORY:
            return self.directory
        return f"{self.endpoint_url or 's3'} / {self.bucket}/{self.prefix}".rstrip("/")

    @property
    def passphrase_recipient(self) -> str:
        """The recipient whose identity this target holds sealed with a passphrase, or ""."""
        return agecrypt.passphrase_recipient(self.recipients)

    def record_passphrase_recipient(self, recipient: str) -> None:
        """Encrypt every copy from now on to `recipient` too: the identity a passphrase opens
        (engine/backups.py, set_passphrase). It is one of the recipients, marked by a comment
        line, so no column is needed; a target that was unencrypted is encrypted from now on."""
        with transaction.atomic():
            # Re-read under a lock: recipients another edit saved meanwhile are kept.
            current = BackupTarget.objects.select_for_update().get(pk=self.pk)
            self.recipients = agecrypt.with_passphrase_recipient(current.recipients, recipient)
            self.unencrypted = False
            BackupTarget.objects.filter(pk=self.pk).update(recipients=self.recipients,
                                                           unencrypted=False)

    def clean(self) -> None:
        errors: dict[str, list] = {}
        if self.kind == self.Kind.S3:
            if not self.bucket:
                errors.setdefault("bucket", []).append(_("An S3 target needs a bucket."))
            if self.endpoint_url:
                problem = endpoint_problem(self.endpoint_url)
                if problem:
                    errors.setdefault("endpoint_url", []).append(problem)
            if not self.access_key_id:
                errors.setdefault("access_key_id", []).append(
                    _("An S3 target needs an access key id."))
        else:
            problem = directory_problem(self.directory)
            if problem:
                errors.setdefault("directory", []).append(problem)
        try:
            recipients = agecrypt.parse_recipients(self.recipients)
        except agecrypt.AgeError as exc:
            errors.setdefault("recipients", []).append(str(exc))
            recipients = None
        if recipients is not None:
            if not recipients and not self.unencrypted:
                errors.setdefault("recipients", []).append(
                    _("Add at least one recipient, or mark the target unencrypted."))
            if recipients and self.unencrypted:
                errors.setdefault("unencrypted", []).append(
                    _("A target with recipients is encrypted; remove them to copy in clear."))
        if self.has_identity and self.unencrypted:
            errors.setdefault("identity", []).append(
                _("An unencrypted target has no use for an identity."))
        elif self.has_identity and recipients:
            try:
                stored = agecrypt.parse_identities(self.get_identity())
            except crypto.SecretUnreadable:
                errors.setdefault("identity", []).append(
                    _("The stored identity cannot be decrypted (BERTH_ENCRYPTION_KEY changed); "
                      "give it again or forget it."))
            else:
                if any(agecrypt.recipient_of(i) not in recipients for i in stored):
                    errors.setdefault("identity", []).append(
                        _("The identity does not belong to any of the target's recipients: "
                          "it could not open the copies."))
        if errors:
            raise ValidationError(errors)

    def settle_change(self, previous: BackupTarget | None, *, new_secret: bool) -> None:
        """Before an edit is saved: what the new place keeps of the old one.

        `previous` is the target as this edit loaded it (never a second read:
        another edit committed meanwhile must not change what "moved" means).
        A directory target keeps no S3 fields and no secret. A stored secret
        is not carried to another endpoint or bucket: it must be given again.
        A moved target, or one with a new secret, has not been checked yet.
        """
        if self.kind == self.Kind.DIRECTORY:
            self.endpoint_url = self.region = self.bucket = self.prefix = ""
            self.access_key_id = self.secret_access_key_encrypted = ""
            self.directory = os.path.normpath(self.directory) if self.directory else ""
        else:
            self.directory = ""
        if previous is None:
            return
        if new_secret or any(getattr(self, f) != getattr(previous, f) for f in LOCATION_FIELDS):
            self.checked, self.check_code = None, ""
        moved = (_endpoint_key(self.endpoint_url) != _endpoint_key(previous.endpoint_url)
                 or self.bucket != previous.bucket)
        if (self.kind == self.Kind.S3 and previous.kind == self.Kind.S3 and moved
                and not new_secret):
            raise ValidationError({"secret_access_key": [
                _("Give the secret access key again: the endpoint or the bucket changed.")]})

    def keep_count(self, kind: str) -> int:
        """How many verified copies of `kind` per workload this target keeps (0: all)."""
        return getattr(self, f"keep_{kind}")

    def location(self) -> dict:
        """What a check's outcome belongs to: the place and the secret."""
        return {f: getattr(self, f) for f in (*LOCATION_FIELDS, "secret_access_key_encrypted")}

    def store(self) -> offsite.Store:
        """The place itself, with the secret decrypted (never kept beyond the call's use).

        A directory is validated again at each use: the roots may have changed
        since it was saved (the store itself refuses symlinks on the way).
        """
        if self.kind == self.Kind.DIRECTORY:
            problem = directory_problem(self.directory)
            if problem:
                raise offsite.OffsiteError("not_allowed", problem)
            return offsite.DirectoryStore(Path(self.directory))
        try:
            secret = self.get_secret_access_key()
        except crypto.SecretUnreadable:
            raise offsite.OffsiteError("unreadable_secret") from None
        return offsite.S3Store(
            offsite.S3Location(
                endpoint_url=self.endpoint_url, region=self.region, bucket=self.bucket,
                prefix=self.prefix, access_key_id=self.access_key_id,
                secret_access_key=secret, path_style=self.path_style,
            ),
            timeout=settings.BERTH_BACKUP_TIMEOUT,
        )


LOCATION_FIELDS = ("kind", "endpoint_url", "region", "bucket", "prefix", "access_key_id",
                   "path_style", "directory")


def _endpoint_key(url: str) -> tuple[str, str, int | None] | None:
    """Scheme, host and port of an endpoint URL; None when it does not parse."""
    try:
        parts = urlsplit(url)
        return parts.scheme, (parts.hostname or ""), parts.port
    except ValueError:
        return None


def endpoint_problem(url: str) -> str | None:
    """Why `url` cannot be an S3 endpoint, or None. Credentials never go in the URL."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return str(_("Give an http:// or https:// URL."))
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return str(_("Give an http:// or https:// URL."))
    if parts.username is not None or parts.password is not None:
        return str(_("Give the credentials in their own fields, not in the URL."))
    if parts.query or parts.fragment:
        return str(_("The endpoint URL takes no query or fragment."))
    return None


def directory_problem(directory: str) -> str | None:
    """Why `directory` cannot be a target, or None: absolute, with no symlink on the way,
    under an allowed root, apart from Berth's data dir and from absolute volumes."""
    if not directory or not os.path.isabs(directory) or "\0" in directory:
        return str(_("Give an absolute path."))
    normal = os.path.normpath(directory)
    roots = [os.path.normpath(r) for r in settings.BERTH_BACKUP_DIRECTORY_ROOTS]
    # The roots first, on the path as given: nothing outside them is ever resolved.
    if not any(paths.is_within(normal, root) for root in roots):
        if not roots:
            return str(_("Directory targets are off: BERTH_BACKUP_DIRECTORY_ROOTS names no "
                         "directory."))
        return str(_("The directory must lie under one of BERTH_BACKUP_DIRECTORY_ROOTS: %s")
                   % ", ".join(settings.BERTH_BACKUP_DIRECTORY_ROOTS))
    try:
        real = os.path.realpath(directory)
    except OSError:
        real = None
    if real != normal:
        return str(_("The path goes through a symlink (or cannot be resolved); give the real "
                     "path."))
    if paths.overlaps(real, os.path.realpath(settings.DATA_DIR)):
        return str(_("The directory must not overlap Berth's data directory: a backup there "
                     "dies with the data."))
    volume_roots = [os.path.realpath(r) for r in settings.BERTH_ABSOLUTE_VOLUME_ROOTS]
    if any(paths.overlaps(real, root) for root in volume_roots):
        return str(_("The directory must not overlap BERTH_ABSOLUTE_VOLUME_ROOTS: a container "
                     "could read or change the backups there."))
    return None


class CopyRuleQuerySet(models.QuerySet):
    def for_workload(self, workload: Workload) -> CopyRuleQuerySet:
        """The rules that decide where `workload`'s snapshots go: its own, or, when it has
        none, its project's default."""
        own = self.filter(workload=workload)
        if own.exists():
            return own
        return self.filter(project_id=workload.stage.project_id)

    def targets_for(self, snapshot: Snapshot) -> list[BackupTarget]:
        """The targets the policy sends `snapshot` to (by its kind, imported apart)."""
        kind = copy_kind(snapshot)
        rules = self.for_workload(snapshot.workload).select_related("target")
        # A handful of rows: the kinds are matched here rather than in a JSON lookup,
        # which SQLite does not have.
        targets = [rule.target for rule in rules if kind in rule.kinds]
        if kind == CopyKind.SCHEDULED:
            # The backup policy names targets of its own for the snapshots it takes.
            from backups.schedules import BackupPolicy

            policy = BackupPolicy.objects.for_workload(snapshot.workload)
            if policy is not None:
                targets += [t for t in policy.targets.all() if t not in targets]
        return targets


class CopyRule(models.Model):
    """A copy policy: snapshots of these kinds go to this target.

    A rule belongs to a workload or to a project (the default of the project's
    workloads). A workload with rules of its own ignores its project's.
    """

    project = models.ForeignKey(Project, models.CASCADE, null=True, blank=True,
                                related_name="copy_rules", verbose_name=_("project"),
                                help_text=_("The default for the project's workloads that "
                                            "have no rules of their own."))
    workload = models.ForeignKey(Workload, models.CASCADE, null=True, blank=True,
                                 related_name="copy_rules", verbose_name=_("workload"))
    target = models.ForeignKey(BackupTarget, models.CASCADE, related_name="rules",
                               verbose_name=_("backup target"))
    kinds = models.JSONField(_("snapshot kinds"), default=list,
                             help_text=_("Which snapshots are copied: manual, pre_deploy, "
                                         "pre_restore, scheduled, imported."))
    created = models.DateTimeField(_("created"), default=timezone.now)

    objects = CopyRuleQuerySet.as_manager()

    class Meta:
        ordering = ["pk"]
        verbose_name = _("copy rule")
        verbose_name_plural = _("copy rules")
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(project__isnull=True, workload__isnull=False)
                           | models.Q(project__isnull=False, workload__isnull=True)),
                name="copy_rule_project_or_workload",
                violation_error_message=_("A rule belongs to a project or to a workload, not "
                                          "both."),
            ),
            models.UniqueConstraint(
                fields=["workload", "target"], condition=models.Q(workload__isnull=False),
                name="one_copy_rule_per_workload_and_target",
                violation_error_message=_("This workload already has a rule for this target."),
            ),
            models.UniqueConstraint(
                fields=["project", "target"], condition=models.Q(project__isnull=False),
                name="one_copy_rule_per_project_and_target",
                violation_error_message=_("This project already has a rule for this target."),
            ),
        ]

    def __str__(self) -> str:
        owner = self.workload or self.project
        return f"{owner} → {self.target}: {', '.join(self.kinds)}"

    def clean(self) -> None:
        kinds = self.kinds if isinstance(self.kinds, list) else None
        if not kinds or any(k not in CopyKind.values for k in kinds):
            raise ValidationError({"kinds": [
                _("Give a list of one or more of: %s.") % ", ".join(CopyKind.values)]})
        # One spelling per kind, in the order they are listed everywhere.
        self.kinds = [k for k in CopyKind.values if k in kinds]


class SnapshotCopy(Job, Progress):
    """One snapshot's copy on one target: queued, uploading, then verified or failed.

    A copy is verified only once the object's size and SHA-256 were read back
    from the target. The row outlives its local snapshot (the copy is still
    there): `snapshot` becomes empty, `workload`, `kind`, `taken` and
    `remote_key` stay. A verified copy removed from its target (by remote
    retention, or with its snapshot on request) is `removed`: the row stays as
    the record of what the target held.
    """

    class State(models.TextChoices):
        QUEUED = "queued", _("Queued")
        UPLOADING = "uploading", _("Uploading")
        VERIFIED = "verified", _("Verified")
        FAILED = "failed", _("Failed")
        REMOVED = "removed", _("Removed from the target")

    ACTIVE_STATES = (State.QUEUED, State.UPLOADING)
    # Failures that may pass by themselves (the target did not answer, or answered that it
    # is down; the worker stopped): the sweep tries these again. The others need a person.
    RETRIED_CODES = ("unreachable", "unavailable", "interrupted")

    snapshot = models.ForeignKey(Snapshot, models.SET_NULL, null=True, blank=True,
                                 related_name="copies", verbose_name=_("snapshot"))
    workload = models.ForeignKey(Workload, models.CASCADE, related_name="snapshot_copies",
                                 verbose_name=_("workload"))
    target = models.ForeignKey(BackupTarget, models.CASCADE, related_name="copies",
                               verbose_name=_("backup target"))
    state = models.CharField(_("state"), max_length=10, choices=State, default=State.QUEUED)
    kind = models.CharField(_("kind"), max_length=12, choices=CopyKind, blank=True,
                            help_text=_("Its snapshot's kind (imported apart), for retention."))
    taken = models.DateTimeField(_("snapshot taken"), null=True, blank=True)
    remote_key = models.CharField(_("object name"), max_length=500, blank=True)
    encrypted = models.BooleanField(_("encrypted"), default=True)
    size = models.BigIntegerField(_("object size"), default=0)
    sha256 = models.CharField(_("object SHA-256"), max_length=64, blank=True)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    failure_code = models.CharField(_("failure"), max_length=32, blank=True)
    created = models.DateTimeField(_("created"), default=timezone.now)
    started = models.DateTimeField(_("started"), null=True, blank=True)
    finished = models.DateTimeField(_("finished"), null=True, blank=True)
    removed = models.DateTimeField(_("removed"), null=True, blank=True)
    retried = models.DateTimeField(_("queued again"), null=True, blank=True,
                                   help_text=_("When the sweep last queued it again."))
    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True,
                             related_name="+", verbose_name=_("user"))

    class Meta:
        ordering = ["-created", "-pk"]
        verbose_name = _("snapshot copy")
        verbose_name_plural = _("snapshot copies")
        constraints = [
            models.UniqueConstraint(
                fields=["snapshot", "target"],
                condition=models.Q(state__in=["queued", "uploading"]),
                name="one_active_copy_per_snapshot_and_target",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.target} ← {self.remote_key or self.snapshot_id}"

    @classmethod
    def of(cls, snapshot: Snapshot, target: BackupTarget, *,
           user: AbstractBaseUser | None = None) -> SnapshotCopy:
        """A new queued copy of `snapshot` to `target` (not saved)."""
        return cls(snapshot=snapshot, workload_id=snapshot.workload_id, target=target,
                   kind=copy_kind(snapshot), taken=snapshot.created,
                   encrypted=target.encrypted, user=user)

    @property
    def failure_message(self) -> str:
        if not self.failure_code:
            return ""
        return offsite.OffsiteError(self.failure_code).message


class BackupRecovery(Job, Progress, RecordedFailure):
    """A recovery from a target asked for in the pages or the API, run by the task worker.

    The age identity it was given is kept encrypted at rest only while the
    recovery is queued or running, and is erased when it ends, however it
    ends. engine/disaster.py does the work; docs/disaster-recovery.md.
    """

    class State(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", pgettext_lazy("recovery state", "Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")

    ACTIVE_STATES = (State.QUEUED, State.RUNNING)
    # Beyond add_backuprecovery: what a recovery does to workloads needs their own permissions.
    # Re-creating one may create its project and stage, restores it and deploys it.
    PERMISSIONS_TO_CREATE = ("workloads.add_project", "workloads.add_stage",
                             "workloads.add_workload", "workloads.restore_workload",
                             "workloads.deploy_workload")
    PERMISSIONS_ONTO = ("workloads.restore_workload",)

    target = models.ForeignKey(BackupTarget, models.CASCADE, related_name="recoveries",
                               verbose_name=_("backup target"))
    remote_key = models.CharField(_("object name"), max_length=1024)
    into = models.ForeignKey(
        Workload, models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("recovered into"),
        help_text=_("The workload the data went to: an existing one, or the one re-created."),
    )
    # Set when asked for: `into` goes null if that workload is deleted, and the recovery
    # must then fail, not re-create it (which needs permissions it was never checked for).
    onto_existing = models.BooleanField(
        _("onto an existing workload"), default=False,
        help_text=_("Asked for onto a workload that existed; it fails if that workload is "
                    "gone."),
    )
    state = models.CharField(_("state"), max_length=10, choices=State, default=State.QUEUED)
    deploy_after = models.BooleanField(
        _("deploy after"), default=False,
        help_text=_("Deploy a re-created workload on the digest its sidecar recorded, once "
                    "restored. Off by default: a copy is only as trustworthy as the bucket."),
    )
    identity_encrypted = models.TextField(editable=False, blank=True)
    snapshot = models.ForeignKey(Snapshot, models.SET_NULL, null=True, blank=True,
                                 related_name="+", verbose_name=_("imported snapshot"))
    restore = models.ForeignKey("snapshots.RestoreJob", models.SET_NULL, null=True, blank=True,
                                related_name="+", verbose_name=_("restore"))
    deploy = models.ForeignKey("workloads.DeployRecord", models.SET_NULL, null=True,
                               blank=True, related_name="+", verbose_name=_("deploy"))
    # What this recovery created ([model label, pk], in order): removed again, if still
    # unused, when it fails before its restore began, even after a kill (the sweep).
    created_rows = models.JSONField(default=list, blank=True, editable=False)
    # Values the sidecar could not carry (an unencrypted target's secrets), by name.
    missing_values = models.JSONField(default=list, blank=True, editable=False)
    created = models.DateTimeField(_("created"), default=timezone.now)
    started = models.DateTimeField(_("started"), null=True, blank=True)
    finished = models.DateTimeField(_("finished"), null=True, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True,
                             related_name="+", verbose_name=_("user"))

    class Meta:
        ordering = ["-created", "-pk"]
        verbose_name = _("recovery from backup")
        verbose_name_plural = _("recoveries from backup")
        constraints = [
            models.UniqueConstraint(
                fields=["into"], condition=models.Q(state__in=["queued", "running"]),
                name="one_active_recovery_per_workload",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.target} → {self.remote_key}"


# The schedules' models live in their own module; imported here for Django to find them.
from backups.schedules import BackupPolicy, BackupRun, RestoreDrill  # noqa: E402, F401
