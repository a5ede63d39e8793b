"""Notification channels in the API and the admin: the URL write-only, a test, permissions;
notifications read-only, with no secret anywhere."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from alerts import outbox
from alerts.models import Event, Notification, NotificationChannel
from tests.alerts.conftest import WEBHOOK_PASSWORD, WEBHOOK_TOKEN, channel

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]


def assert_no_secret(text: str) -> None:
    assert WEBHOOK_PASSWORD not in text and WEBHOOK_TOKEN not in text


def grant(user, *codenames: str):
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="alerts",
                                                         codename__in=codenames))
    return user


def test_it_creates_a_channel_without_echoing_its_url(api_as, admin_user, webhook):
    client = api_as(admin_user)
    response = client.post("/api/notification-channels", {
        "name": "ops hook", "apprise_url": webhook.url, "events": ["deploy_failed"]},
        format="json")
    assert response.status_code == 201, response.content
    row = NotificationChannel.objects.get()
    assert row.get_apprise_url() == webhook.url
    assert WEBHOOK_TOKEN not in row.apprise_url_encrypted
    assert response.json()["has_apprise_url"] is True
    assert_no_secret(response.content.decode())
    assert_no_secret(client.get("/api/notification-channels").content.decode())


def test_it_refuses_a_bad_url_or_event_without_echoing_it(api_as, admin_user):
    client = api_as(admin_user)
    response = client.post("/api/notification-channels", {
        "name": "x", "apprise_url": f"nosuch://{WEBHOOK_TOKEN}", "events": ["nope"]},
        format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"apprise_url", "events"}
    assert_no_secret(response.content.decode())
    assert not NotificationChannel.objects.exists()


def test_an_edit_without_the_url_keeps_it(api_as, admin_user, webhook):
    row = channel("hook", webhook.url, [Event.DEPLOY_FAILED])
    client = api_as(admin_user)
    response = client.patch(f"/api/notification-channels/{row.pk}",
                            {"events": ["copy_failed", "deploy_failed"]}, format="json")
    assert response.status_code == 200, response.content
    row.refresh_from_db()
    assert row.events == ["copy_failed", "deploy_failed"]
    assert row.get_apprise_url() == webhook.url


def test_only_a_superuser_sets_or_tests_a_channel(api_as, operator, webhook):
    # A channel's URL makes the server send requests anywhere (any host, path, header).
    row = channel("hook", webhook.url, [Event.DEPLOY_FAILED])
    client = api_as(grant(operator, "add_notificationchannel", "change_notificationchannel",
                          "view_notificationchannel"))
    inside = "json://127.0.0.1:9/internal/api/users/1?method=DELETE"
    assert client.post("/api/notification-channels", {
        "name": "x", "apprise_url": inside, "events": ["deploy_failed"]},
        format="json").status_code == 403
    assert client.patch(f"/api/notification-channels/{row.pk}", {"apprise_url": inside},
                        format="json").status_code == 403
    assert client.post(f"/api/notification-channels/{row.pk}/test").status_code == 403
    assert client.get("/api/notification-channels").status_code == 200
    row.refresh_from_db()
    assert row.get_apprise_url() == webhook.url and webhook.received == []


def test_the_test_action_reaches_the_receiver(api_as, admin_user, webhook):
    row = channel("hook", webhook.url, [Event.DEPLOY_FAILED])
    client = api_as(admin_user)
    response = client.post(f"/api/notification-channels/{row.pk}/test")
    assert response.json() == {"ok": True, "code": "",
                               "message": "The test notification was sent."}
    assert webhook.received[0]["body"]["title"] == "[Berth] Test notification"
    row.refresh_from_db()
    assert row.test_code == "sent" and row.tested is not None

    webhook.stop()
    response = client.post(f"/api/notification-channels/{row.pk}/test")
    assert (response.json()["ok"], response.json()["code"]) == (False, "not_delivered")
    assert_no_secret(response.content.decode())


@pytest.mark.parametrize(("method", "path"), [
    ("get", "/api/notification-channels"), ("post", "/api/notification-channels"),
    ("post", "/api/notification-channels/{pk}/test"), ("get", "/api/notifications"),
])
def test_it_needs_the_permissions(api, api_as, viewer, webhook, method, path):
    row = channel("hook", webhook.url, [Event.DEPLOY_FAILED])
    url = path.format(pk=row.pk)
    assert getattr(api, method)(url).status_code == 401  # anonymous
    assert getattr(api_as(viewer), method)(url).status_code == 403
    assert webhook.received == []


def test_notifications_are_listed_read_only(api_as, operator, webhook, workload):
    channel("hook", webhook.url, [Event.DEPLOY_FAILED])
    outbox.notify(Event.DEPLOY_FAILED, workload=workload, code="start_failed",
                  message="Deploy failed.", key="deploy-9")
    client = api_as(grant(operator, "view_notification"))
    body = client.get(f"/api/notifications?workload={workload.pk}").json()
    body = body["results"] if isinstance(body, dict) else body
    assert [(n["event"], n["state"], n["attempts"]) for n in body] == [
        ("deploy_failed", "sent", 1)]
    assert_no_secret(str(body))
    assert client.get("/api/notifications?event=nope").status_code == 400
    row = Notification.objects.get()
    assert client.delete(f"/api/notifications/{row.pk}").status_code == 405


def test_the_admin_stores_the_url_write_only_and_tests_it(admin_client, webhook, workload):
    response = admin_client.post("/admin/alerts/notificationchannel/add/", {
        "name": "hook", "apprise_url": webhook.url, "events": ["deploy_failed"],
        "enabled": "on"})
    assert response.status_code == 302, response.content.decode()[:2000]
    row = NotificationChannel.objects.get()
    assert row.get_apprise_url() == webhook.url
    assert_no_secret(admin_client.get(
        f"/admin/alerts/notificationchannel/{row.pk}/change/").content.decode())
    # An edit with the field left empty keeps the URL.
    admin_client.post(f"/admin/alerts/notificationchannel/{row.pk}/change/", {
        "name": "hook", "apprise_url": "", "events": ["deploy_failed", "copy_failed"],
        "enabled": "on"})
    row.refresh_from_db()
    assert row.get_apprise_url() == webhook.url and row.events == ["copy_failed",
                                                                   "deploy_failed"]

    page = admin_client.post("/admin/alerts/notificationchannel/", {
        "action": "send_test", "_selected_action": [row.pk]}, follow=True)
    assert "The test notification was sent." in page.content.decode()
    assert len(webhook.received) == 1

    outbox.notify(Event.COPY_FAILED, workload=workload, code="full", message="Full.",
                  key="copy-1")
    for url in ("/admin/alerts/notification/",
                f"/admin/alerts/notification/{Notification.objects.get().pk}/change/"):
        page = admin_client.get(url)
        assert page.status_code == 200
        assert_no_secret(page.content.decode())


def test_the_admin_refuses_a_bad_url_without_showing_it(admin_client):
    page = admin_client.post("/admin/alerts/notificationchannel/add/", {
        "name": "hook", "apprise_url": f"nosuch://{WEBHOOK_TOKEN}", "events": ["deploy_failed"]})
    assert page.status_code == 200
    assert "Apprise does not recognise this URL" in page.content.decode()
    assert_no_secret(page.content.decode())
    assert not NotificationChannel.objects.exists()
