"""The notifications page: who may see it, what it shows, and never a channel's URL."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from alerts.models import Notification, NotificationChannel
from tests.alerts.conftest import WEBHOOK_PASSWORD, WEBHOOK_TOKEN

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(workload) -> Notification:
    channel = NotificationChannel(name="ops hook", events=["deploy_failed", "copy_failed"])
    channel.set_apprise_url(f"json://berth:{WEBHOOK_PASSWORD}@127.0.0.1:9/hook/{WEBHOOK_TOKEN}")
    channel.save()
    Notification.objects.create(channel=channel, event="copy_failed", workload=workload,
                                subject="[Berth] Copy failed", body="b", key="copy-1",
                                state="sent")
    return Notification.objects.create(channel=channel, event="deploy_failed",
                                       workload=workload, subject="[Berth] Deploy failed",
                                       body="b", key="deploy-1", state="failed",
                                       failure_code="not_delivered", attempts=3)


def test_only_who_may_see_notifications_sees_the_page(client, operator, sent):
    assert client.get("/notifications/").status_code == 302
    client.force_login(operator)
    assert client.get("/notifications/").status_code == 403


def test_it_lists_what_was_sent_and_the_channels_without_their_urls(client, operator, sent):
    operator.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="alerts",
        codename__in=["view_notification", "view_notificationchannel"]))
    client.force_login(operator)
    page = client.get("/notifications/").content.decode()
    assert "[Berth] Deploy failed" in page and "[Berth] Copy failed" in page
    assert "ops hook" in page and "3 attempts" in page
    assert "The service did not accept the notification" in page
    assert WEBHOOK_TOKEN not in page and WEBHOOK_PASSWORD not in page
    filtered = client.get("/notifications/?event=copy_failed").content.decode()
    assert "[Berth] Copy failed" in filtered and "[Berth] Deploy failed" not in filtered
