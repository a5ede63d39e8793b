"""Notifications: tell the channels about an event, send, test a channel, retry.

- notify(): alerts/outbox.py (below the engine's layers, so locked bodies
  call it too): one row per interested channel, once per event key, sent
  after the caller's transaction commits.
- send(): the task's body. One attempt through Apprise (lib/notifier.py),
  bounded by BERTH_NOTIFY_TIMEOUT; the row ends sent, or failed with a
  fixed code. The service's own words go to the log only, redacted.
- retry_due(), fail_lost(): the sweep's part, as for copies
  (engine/copy_upkeep.py): a failure that may pass is tried again after 1,
  2, 4, ... × BERTH_NOTIFY_RETRY_DELAY, up to BERTH_NOTIFY_RETRY_ATTEMPTS.
- send_test(): a test message to one channel, at once, recorded on it.

docs/notifications.md describes them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from alerts import outbox
from alerts.models import Notification, NotificationChannel
from lib import crypto, notifier, owners, redact

logger = logging.getLogger(__name__)

notify = outbox.notify


def send(row: Notification) -> Notification:
    """Make one attempt at a queued notification; the row says how it ended."""
    if not row.move(only_from=[Notification.State.QUEUED], state=Notification.State.SENDING,
                    started=timezone.now(), attempts=row.attempts + 1, owner=owners.current()):
        return row
    channel = NotificationChannel.objects.get(pk=row.channel_id)
    try:
        if not channel.enabled:
            raise notifier.NotifyError("disabled")
        _deliver(channel, title=row.subject, body=row.body)
    except notifier.NotifyError as exc:
        row.move(only_from=[Notification.State.SENDING], state=Notification.State.FAILED,
                 failure_code=exc.code, finished=timezone.now())
        logger.warning("notification %s to channel %s failed (%s): %s", row.pk, channel.pk,
                       exc.code, redact.for_log(exc.raw, channel.secret_values()))
        return row
    now = timezone.now()
    row.move(only_from=[Notification.State.SENDING], state=Notification.State.SENT,
             failure_code="", finished=now, sent=now)
    logger.info("notification %s (%s) sent to channel %s", row.pk, row.event, channel.pk)
    return row


def _deliver(channel: NotificationChannel, *, title: str, body: str) -> None:
    """NotifyError for any failure, an unexpected one as `internal` (its text for the log)."""
    try:
        url = channel.get_apprise_url()
    except crypto.SecretUnreadable:
        raise notifier.NotifyError("unreadable_secret") from None
    try:
        notifier.send(url, title=title, body=body, timeout=settings.BERTH_NOTIFY_TIMEOUT)
    except notifier.NotifyError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's own error: its text may hold the URL
        raise notifier.NotifyError("internal", f"{type(exc).__name__}: {exc}") from None


@dataclass
class TestResult:
    ok: bool
    code: str
    message: str


def send_test(channel: NotificationChannel) -> TestResult:
    """Send a test message to `channel` now (enabled or not) and record the outcome on it."""
    title = gettext("[Berth] Test notification")
    body = gettext("This is a test of the notification channel “%s”. It works.") % channel.name
    try:
        _deliver(channel, title=title, body=body)
    except notifier.NotifyError as exc:
        logger.warning("test of notification channel %s failed (%s): %s", channel.pk, exc.code,
                       redact.for_log(exc.raw, channel.secret_values()))
        result = TestResult(False, exc.code, exc.message)
    else:
        result = TestResult(True, "", gettext("The test notification was sent."))
    channel.tested, channel.test_code = timezone.now(), result.code or "sent"
    NotificationChannel.objects.filter(pk=channel.pk).update(tested=channel.tested,
                                                             test_code=channel.test_code)
    return result


# --- the sweep's part ---------------------------------------------------------------------

def retry_delay(attempts: int) -> timedelta:
    """How long after its last failure a notification with `attempts` waits: 1, 2, 4, ..."""
    doubled = settings.BERTH_NOTIFY_RETRY_DELAY * 2 ** min(max(attempts - 1, 0), 30)
    return timedelta(seconds=min(doubled, settings.BERTH_NOTIFY_RETRY_MAX_DELAY))


def retry_due(*, now: datetime | None = None) -> int:
    """Queue again every failed notification whose failure may pass and whose backoff is
    over; returns how many. `now` is the sweep's clock."""
    now = now or timezone.now()
    failed = (Notification.objects
              .filter(state=Notification.State.FAILED,
                      failure_code__in=Notification.RETRIED_CODES,
                      attempts__lt=settings.BERTH_NOTIFY_RETRY_ATTEMPTS, channel__enabled=True)
              .order_by("finished", "pk"))
    retried = 0
    for row in failed:
        if row.finished is not None and row.finished + retry_delay(row.attempts) > now:
            continue
        if row.move(only_from=[Notification.State.FAILED], state=Notification.State.QUEUED,
                    owner="", failure_code="", started=None, retried=now):
            retried += 1
            logger.info("notification %s is tried again (after %d attempt(s))", row.pk,
                        row.attempts)
            transaction.on_commit(lambda pk=row.pk: outbox.enqueue(pk))
    return retried


def fail_lost() -> int:
    """Fail, as `interrupted` (so tried again), the notifications whose worker died and those
    no worker took in BERTH_TASK_LOST_AFTER; returns how many."""
    failed = 0
    stale = Notification.objects.filter(state__in=Notification.ACTIVE_STATES)
    for row in stale:
        if not row.is_lost(since=row.retried or row.created):
            continue
        if row.move(only_from=Notification.ACTIVE_STATES, state=Notification.State.FAILED,
                    failure_code="interrupted", finished=timezone.now()):
            failed += 1
    return failed
