"""Notifications reach a real webhook receiver and a real SMTP server, once per event, with
no secret in them; a receiver that is down is tried again by the sweep."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.translation import gettext_noop

from alerts import outbox
from alerts.models import Event, Notification
from backups.models import BackupTarget, SnapshotCopy
from engine import alerts, copy_upkeep, sweep
from engine.locked import deploy, recovery
from snapshots.models import RestoreJob
from tests.alerts.conftest import (
    SMTP_PASSWORD,
    WEBHOOK_PASSWORD,
    WEBHOOK_TOKEN,
    channel,
)
from workloads.models import DeployRecord, EnvVar

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]

ENV_SECRET = "env-secret-value-77a1f0"
SECRETS = (WEBHOOK_PASSWORD, WEBHOOK_TOKEN, SMTP_PASSWORD, ENV_SECRET)


def tell(key: str = "deploy-1", **fields) -> list[Notification]:
    fields.setdefault("code", "start_failed")
    return outbox.notify(fields.pop("event", Event.DEPLOY_FAILED), key=key,
                         message=gettext_noop("Deploy #%(deploy)d failed: %(reason)s"),
                         params={"deploy": 1, "reason": "The container did not start."},
                         **fields)


def berth_log(caplog) -> str:
    """What Berth logged. Apprise's own lines (which quote a URL's path) never reach a handler
    in production (LOGGING: its logger has none and does not propagate); pytest's capture
    hooks onto it directly, so they are left out here."""
    return "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("apprise"))


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


@pytest.fixture
def secret_workload(workload):
    env = EnvVar(workload=workload, name="API_KEY")
    env.set_value(ENV_SECRET, secret=True)
    env.save()
    return workload


def test_it_reaches_a_webhook_and_a_mail_server_once_per_channel(webhook, smtp,
                                                                 secret_workload, caplog):
    caplog.set_level(logging.DEBUG)
    hook = channel("hook", webhook.url, [Event.DEPLOY_FAILED])
    mail = channel("mail", smtp.url, [Event.DEPLOY_FAILED, Event.COPY_FAILED])

    made = tell(workload=secret_workload)

    assert len(made) == 2
    assert len(webhook.received) == 1 and len(smtp.messages) == 1
    message = webhook.received[0]["body"]
    assert message["title"] == f"[Berth] Deploy failed: {secret_workload}"
    assert "Deploy #1 failed: The container did not start." in message["message"]
    assert "Code: start_failed" in message["message"]
    assert "Deploy #1 failed" in smtp.messages[0]
    for row in made:
        row.refresh_from_db()
        assert (row.state, row.attempts, row.failure_code) == ("sent", 1, "")
        assert row.sent is not None
    assert {r.channel for r in made} == {hook, mail}
    # The service gets its credentials (the token in the webhook's path); the message never.
    assert_no_secret(repr([r["body"] for r in webhook.received]) + "".join(smtp.messages)
                     + berth_log(caplog))


def test_the_same_event_is_sent_once(webhook, workload):
    channel("hook", webhook.url, [Event.DEPLOY_FAILED])
    assert len(tell(workload=workload)) == 1
    assert tell(workload=workload) == []
    assert len(webhook.received) == 1
    assert Notification.objects.count() == 1


def test_only_enabled_channels_that_want_the_event_are_told(webhook, workload):
    channel("other event", webhook.url, [Event.RESTORE_FAILED])
    channel("disabled", webhook.url, [Event.DEPLOY_FAILED], enabled=False)
    assert tell(workload=workload) == []
    assert webhook.received == []


def test_a_receiver_that_is_down_is_tried_again_by_the_sweep(webhook, workload, settings,
                                                             caplog):
    settings.BERTH_NOTIFY_RETRY_DELAY = 60
    channel("hook", webhook.url, [Event.DEPLOY_FAILED])
    webhook.stop()

    [row] = tell(workload=workload)
    row.refresh_from_db()
    assert (row.state, row.failure_code, row.attempts) == ("failed", "not_delivered", 1)
    assert_no_secret(berth_log(caplog))

    webhook.start()
    sweep.recover_all(now=timezone.now() + timedelta(seconds=30))  # the backoff is not over
    row.refresh_from_db()
    assert row.state == "failed" and webhook.received == []

    sweep.recover_all(now=timezone.now() + timedelta(seconds=90))
    row.refresh_from_db()
    assert (row.state, row.attempts, row.failure_code) == ("sent", 2, "")
    assert len(webhook.received) == 1
    assert Notification.objects.count() == 1  # the same row, tried again


def test_it_gives_up_after_the_last_attempt(webhook, workload, settings):
    settings.BERTH_NOTIFY_RETRY_ATTEMPTS = 2
    channel("hook", webhook.url, [Event.DEPLOY_FAILED])
    webhook.stop()
    [row] = tell(workload=workload)
    later = timezone.now() + timedelta(days=1)
    assert alerts.retry_due(now=later) == 1
    row.refresh_from_db()
    assert (row.state, row.attempts) == ("failed", 2)
    assert alerts.retry_due(now=later + timedelta(days=1)) == 0


def test_a_url_apprise_does_not_know_fails_without_retry(workload):
    hook = channel("hook", "json://127.0.0.1/x", [Event.DEPLOY_FAILED])
    hook.set_apprise_url("nosuchservice://what")
    hook.save()
    [row] = tell(workload=workload)
    row.refresh_from_db()
    assert (row.state, row.failure_code) == ("failed", "invalid_url")
    assert alerts.retry_due(now=timezone.now() + timedelta(days=1)) == 0


def test_a_lost_notification_is_failed_and_tried_again(webhook, workload, settings,
                                                       monkeypatch):
    channel("hook", webhook.url, [Event.DEPLOY_FAILED])
    with monkeypatch.context() as patched:
        patched.setattr(outbox, "enqueue", lambda pk: None)  # the broker lost it
        [row] = tell(workload=workload)
    Notification.objects.filter(pk=row.pk).update(created=timezone.now() - timedelta(days=1))
    sweep.recover_all(now=timezone.now() + timedelta(days=1))
    row.refresh_from_db()
    assert (row.state, row.attempts) == ("sent", 1)
    assert len(webhook.received) == 1


def test_a_failure_to_queue_never_breaks_the_caller(workload, monkeypatch, webhook):
    channel("hook", webhook.url, [Event.DEPLOY_FAILED])
    monkeypatch.setattr(Notification.objects, "create",
                        lambda **kw: (_ for _ in ()).throw(RuntimeError("db down")))
    assert tell(workload=workload) == []


def test_a_failed_deploy_is_told_without_its_raw_error(webhook, secret_workload, caplog):
    channel("hook", webhook.url, [Event.DEPLOY_FAILED])
    record = DeployRecord.objects.create(workload=secret_workload, reason="manual",
                                         source_kind="image", outcome="running")
    error = deploy.DeployError(deploy.Failure.START_FAILED,
                               f"docker said: bad env API_KEY={ENV_SECRET}")
    deploy.record_failure(secret_workload, record, error, [ENV_SECRET])

    [message] = webhook.received
    assert f"Deploy #{record.pk} failed" in message["body"]["message"]
    assert "docker said" not in message["body"]["message"]
    assert_no_secret(repr(message["body"]) + berth_log(caplog))
    assert Notification.objects.get().key == f"deploy-{record.pk}"


def test_a_restore_that_ended_is_told(webhook, workload):
    channel("hook", webhook.url, [Event.RESTORE_FINISHED, Event.RESTORE_FAILED])
    job = RestoreJob.objects.create(workload=workload, state="running")
    assert job.finish(RestoreJob.Outcome.SUCCEEDED)
    recovery.tell_outcome(job, workload)
    recovery.tell_outcome(job, workload)  # a second path to the same end: once
    [message] = webhook.received
    assert message["body"]["title"].startswith("[Berth] Restore finished")
    assert f"Restore #{job.pk}" in message["body"]["message"]


def test_a_copy_is_told_once_it_needs_a_person(webhook, workload, settings):
    settings.BERTH_COPY_RETRY_ATTEMPTS = 3
    channel("hook", webhook.url, [Event.COPY_FAILED])
    target = BackupTarget.objects.create(name="nas", kind="directory", directory="/srv/x",
                                         unencrypted=True)
    retried = SnapshotCopy.objects.create(workload=workload, target=target, state="failed",
                                          failure_code="unreachable", attempts=1)
    copy_upkeep.tell_failure(retried, target)
    assert webhook.received == []  # the sweep tries it again first

    retried.attempts = 3
    copy_upkeep.tell_failure(retried, target)
    refused = SnapshotCopy.objects.create(workload=workload, target=target, state="failed",
                                          failure_code="authentication", attempts=1)
    copy_upkeep.tell_failure(refused, target)
    assert len(webhook.received) == 2
    assert "The target refused the credentials" in webhook.received[1]["body"]["message"]
