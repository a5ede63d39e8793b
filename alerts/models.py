"""Notification channels (Apprise URLs, encrypted at rest) and the notifications sent to them.

A channel's URL carries the service's credentials (a webhook token, a mail
password): it is stored encrypted (lib/crypto), never shown again, and never
part of a message. A notification is one event told to one channel, once:
its `key` names the event, unique per channel. docs/notifications.md.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from lib import crypto, notifier
from workloads.jobs import Job
from workloads.models import Workload


class Event(models.TextChoices):
    BACKUP_FAILED = "backup_failed", _("Backup failed")
    BACKUP_MISSED = "backup_missed", _("Backup missed")
    COPY_FAILED = "copy_failed", _("Copy failed")
    DRILL_FAILED = "drill_failed", _("Restore drill failed")
    RESTORE_FINISHED = "restore_finished", _("Restore finished")
    RESTORE_FAILED = "restore_failed", _("Restore failed")
    DEPLOY_FAILED = "deploy_failed", _("Deploy failed")


class NotificationChannel(models.Model):
    name = models.CharField(_("name"), max_length=100, unique=True)
    apprise_url_encrypted = models.TextField(editable=False, blank=True)
    events = models.JSONField(_("events"), default=list,
                              help_text=_("Which events this channel is told about."))
    enabled = models.BooleanField(_("enabled"), default=True)
    created = models.DateTimeField(_("created"), default=timezone.now)
    tested = models.DateTimeField(_("last tested"), null=True, blank=True, editable=False)
    test_code = models.CharField(_("last test"), max_length=32, blank=True, editable=False)

    class Meta:
        ordering = ["name"]
        verbose_name = _("notification channel")
        verbose_name_plural = _("notification channels")

    def __str__(self) -> str:
        return self.name

    def set_apprise_url(self, raw: str) -> None:
        self.apprise_url_encrypted = crypto.encrypt(raw) if raw else ""

    def get_apprise_url(self) -> str:
        if not self.apprise_url_encrypted:
            return ""
        return crypto.decrypt(self.apprise_url_encrypted)

    @property
    def has_apprise_url(self) -> bool:
        return bool(self.apprise_url_encrypted)

    def secret_values(self) -> list[str]:
        """The URL and its credential-like parts, for redacting log lines."""
        try:
            return notifier.secret_parts(self.get_apprise_url())
        except crypto.SecretUnreadable:
            return []

    def wants(self, event: str) -> bool:
        return self.enabled and event in self.events

    def clean(self) -> None:
        errors: dict[str, list] = {}
        events = self.events if isinstance(self.events, list) else None
        if not events or any(e not in Event.values for e in events):
            errors["events"] = [_("Give a list of one or more of: %s.")
                                % ", ".join(Event.values)]
        else:
            self.events = [e for e in Event.values if e in events]
        if not self.has_apprise_url:
            errors["apprise_url"] = [_("Give the channel's Apprise URL.")]
        if errors:
            raise ValidationError(errors)


def apprise_url_problem(url: str) -> str | None:
    """Why `url` cannot be a channel's URL, or None (never echoes the URL)."""
    if not notifier.valid(url):
        return str(_("Apprise does not recognise this URL (see its list of services)."))
    return None


class Notification(Job):
    """One event told to one channel: queued, sending, then sent or failed with a code.

    A failure that may pass (no answer, an error from the service, a stopped
    worker) is tried again by the sweep with a backoff (engine/alerts.py).
    """

    class State(models.TextChoices):
        QUEUED = "queued", _("Queued")
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent")
        FAILED = "failed", _("Failed")

    ACTIVE_STATES = (State.QUEUED, State.SENDING)
    RETRIED_CODES = ("not_delivered", "timeout", "interrupted")

    channel = models.ForeignKey(NotificationChannel, models.CASCADE,
                                related_name="notifications", verbose_name=_("channel"))
    event = models.CharField(_("event"), max_length=24, choices=Event)
    workload = models.ForeignKey(Workload, models.SET_NULL, null=True, blank=True,
                                 related_name="notifications", verbose_name=_("workload"))
    code = models.CharField(_("code"), max_length=32, blank=True,
                            help_text=_("The event's fixed code (a failure's, for instance)."))
    subject = models.CharField(_("subject"), max_length=200)
    body = models.TextField(_("body"))
    key = models.CharField(_("event key"), max_length=200,
                           help_text=_("Names the event: one notification per channel."))
    state = models.CharField(_("state"), max_length=10, choices=State, default=State.QUEUED)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    failure_code = models.CharField(_("failure"), max_length=32, blank=True)
    created = models.DateTimeField(_("created"), default=timezone.now)
    started = models.DateTimeField(_("started"), null=True, blank=True)
    finished = models.DateTimeField(_("finished"), null=True, blank=True,
                                    help_text=_("When its last attempt ended."))
    sent = models.DateTimeField(_("sent"), null=True, blank=True)
    retried = models.DateTimeField(_("queued again"), null=True, blank=True)

    class Meta:
        ordering = ["-created", "-pk"]
        verbose_name = _("notification")
        verbose_name_plural = _("notifications")
        constraints = [
            models.UniqueConstraint(fields=["channel", "key"],
                                    name="one_notification_per_channel_and_event"),
        ]

    def __str__(self) -> str:
        return self.subject

    @property
    def failure_message(self) -> str:
        if not self.failure_code:
            return ""
        return notifier.NotifyError(self.failure_code).message
