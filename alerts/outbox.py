"""Telling the channels about an event: one notification per interested channel, once.

`notify()` is what the engine calls where something happened (a deploy
failed, a restore ended, a copy failed). Below the engine's layers, so a
locked body may call it too. It writes the rows in the caller's transaction
and queues their sending once it commits; nothing about it can fail the
caller's work: a problem is logged and the caller goes on.

A message carries the event, the workload's name, a fixed message with its
parameters and the fixed code: never a raw error and never a secret. Callers
pass ids, fixed labels and names as parameters, nothing an outside system
wrote.
"""

from __future__ import annotations

import contextlib
import logging

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone, translation
from django.utils.translation import gettext

from alerts.models import Event, Notification, NotificationChannel
from lib import taskqueue
from workloads.models import Workload

logger = logging.getLogger(__name__)

SEND = "engine.tasks.run_notification"


def notify(event: str, *, workload: Workload | None = None, code: str = "", message: str,
           params: dict | None = None, key: str) -> list[Notification]:
    """Queue `event` to every enabled channel that wants it; the rows made (none for a
    channel that already has `key`: an event is told once). Never raises."""
    try:
        with transaction.atomic():  # a savepoint: a failure here leaves the caller's work be
            made = _make(Event(event), workload=workload, code=code, message=message,
                         params=params or {}, key=key)
    except Exception:  # noqa: BLE001 - a notification must never break what it tells about
        logger.exception("the notification %s (%s) could not be queued", key, event)
        return []
    for row in made:
        transaction.on_commit(lambda pk=row.pk: enqueue(pk))
    return made


def enqueue(pk: int) -> None:
    """Queue the sending of one notification; a broker that fails leaves the row queued, for
    the sweep to find lost and try again."""
    try:
        taskqueue.enqueue(SEND, pk, name=f"notification-{pk}")
    except Exception:  # noqa: BLE001 - the sweep retries it
        logger.exception("notification %s could not be queued; the sweep will retry it", pk)


def _make(event: Event, *, workload: Workload | None, code: str, message: str, params: dict,
          key: str) -> list[Notification]:
    channels = [c for c in NotificationChannel.objects.filter(enabled=True) if c.wants(event)]
    if not channels:
        return []
    subject, body = render(event, workload=workload, code=code, message=message,
                           params=params)
    made = []
    for channel in channels:
        if Notification.objects.filter(channel=channel, key=key).exists():
            continue
        try:
            with transaction.atomic():  # two callers at once: the second meets the constraint
                made.append(Notification.objects.create(
                    channel=channel, event=event, workload=workload, code=code,
                    subject=subject, body=body, key=key[:200]))
        except IntegrityError:
            continue
    return made


def render(event: Event, *, workload: Workload | None, code: str, message: str,
           params: dict) -> tuple[str, str]:
    """The subject and body, in the site's language."""
    with translation.override(settings.LANGUAGE_CODE):
        label = str(event.label)
        text = gettext(message)
        # A message whose parameters do not fit is sent without them, rather than not at all.
        # Fixed labels among the parameters (a failure's reason) are translated too.
        shown = {k: gettext(v) if isinstance(v, str) else v for k, v in params.items()}
        with contextlib.suppress(KeyError, TypeError, ValueError):
            text = text % shown if shown else text
        where = str(workload) if workload is not None else ""
        subject = f"[Berth] {label}" + (f": {where}" if where else "")
        lines = [text]
        if where:
            lines.append(gettext("Workload: %s") % where)
        if code:
            lines.append(gettext("Code: %s") % code)
        lines.append(gettext("When: %s") % timezone.now().strftime("%Y-%m-%d %H:%M:%S UTC"))
    return subject[:200], "\n".join(lines)
