"""The notifications page: the channels (without their URLs) and what was sent, newest first."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from alerts.models import Notification, NotificationChannel

ROWS = 100


@require_GET
@login_required
@permission_required("alerts.view_notification", raise_exception=True)
def notification_list(request: HttpRequest) -> HttpResponse:
    sent = (Notification.objects.select_related("channel", "workload__stage__project")
            .order_by("-created", "-pk"))
    event = request.GET.get("event", "")
    if event:
        sent = sent.filter(event=event)
    channels = (NotificationChannel.objects.order_by("name")
                if request.user.has_perm("alerts.view_notificationchannel") else None)
    return render(request, "alerts/notifications.html", {
        "notifications": sent[:ROWS], "channels": channels, "event": event,
        "events": Notification._meta.get_field("event").choices,
    })
