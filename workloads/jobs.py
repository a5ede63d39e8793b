"""What the rows of long work share: DeployRecord, Snapshot and RestoreJob.

Each is queued by an entry point, claimed by the worker that runs it (a
conditional update, so a second delivery of its task finds it taken), reports
its progress, and is finished once. docs/architecture.md ("Jobs") has the rules
for who may move a row and when a row counts as lost.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from lib import owners


def task_lost_before() -> datetime:
    """A row still queued that was created before this instant has lost its task.

    By then the broker would have handed the task out again
    (BERTH_TASK_LOST_AFTER, django-q2's `retry`), so a worker would have taken it.
    """
    return timezone.now() - timedelta(seconds=settings.BERTH_TASK_LOST_AFTER)


def acting_user(user: AbstractBaseUser | None) -> AbstractBaseUser | None:
    """The user to record on a row: nobody for a missing or anonymous one."""
    return user if user is not None and user.is_authenticated else None


class Job(models.Model):
    """A row a worker takes, claims and finishes with conditional updates, never a blind save.

    `owner` is the process that took the row's task (or runs it in-process,
    like a command): lib/owners.py. Empty while the task is still in the broker.
    """

    # The field that holds the row's state, and its value while queued.
    state_field = "state"
    queued_state = "queued"

    owner = models.CharField(
        _("owner"), max_length=80, blank=True, editable=False,
        help_text=_("The process that took this job: host boot id, process id, start time."),
    )

    class Meta:
        abstract = True

    def is_lost(self, *, since: datetime | None = None) -> bool:
        """Whether this active row's work is gone: the process that took it died, or no
        worker took its task by BERTH_TASK_LOST_AFTER after `since` (its creation)."""
        if self.owner:
            return owners.is_dead(self.owner)
        return (since or self.created) < task_lost_before()

    def take(self) -> bool:
        """A worker took this row's task: record it as the owner, if nobody did before.

        False if the row is no longer queued, or another process took it
        first (a second delivery of the task then does nothing).
        """
        me = owners.current()
        rows = type(self)._default_manager.filter(
            pk=self.pk, owner="", **{self.state_field: self.queued_state}
        )
        if not rows.update(owner=me):
            return False
        self.owner = me
        return True

    @property
    def owner_alive(self) -> bool:
        return bool(self.owner) and owners.is_alive(self.owner)

    def move(self, *, only_from: Iterable[str], field: str = "state", **values: object) -> bool:
        """Set `values` if `field` still holds one of `only_from`; mirrored on self.

        False (and nothing changed) if another process moved the row first, or
        deleted it.
        """
        rows = type(self)._default_manager.filter(pk=self.pk, **{f"{field}__in": list(only_from)})
        if not rows.update(**values):
            return False
        for name, value in values.items():
            setattr(self, name, value)
        return True


class RecordedFailure(models.Model):
    """Why a job failed: a fixed code, and its message in the source language with its
    parameters, translated when shown (`failure_text`)."""

    failure_code = models.CharField(_("failure"), max_length=32, blank=True)
    failure_message = models.TextField(blank=True)
    failure_params = models.JSONField(default=dict, blank=True)

    class Meta:
        abstract = True

    @property
    def failure_text(self) -> str:
        """The failure in the active language."""
        if not self.failure_message:
            return ""
        text = gettext(self.failure_message)
        try:
            return text % self.failure_params if self.failure_params else text
        except (KeyError, TypeError, ValueError):
            return text


class Progress(models.Model):
    """Bytes done of bytes in total, written by the worker while it reads or writes data."""

    bytes_done = models.BigIntegerField(_("bytes done"), default=0)
    bytes_total = models.BigIntegerField(_("bytes in total"), default=0)

    class Meta:
        abstract = True

    @property
    def progress_percent(self) -> int:
        if not self.bytes_total:
            return 0
        return min(100, self.bytes_done * 100 // self.bytes_total)

    def start_progress(self, total: int) -> None:
        self.bytes_total, self.bytes_done = total, 0
        type(self)._default_manager.filter(pk=self.pk).update(bytes_total=total, bytes_done=0)

    def report_progress(self, done: int) -> None:
        self.bytes_done = done
        type(self)._default_manager.filter(pk=self.pk).update(bytes_done=done)
