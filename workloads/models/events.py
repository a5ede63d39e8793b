"""The event log: free text for people, translated when shown."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from workloads.models.workloads import Workload


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
