"""The DRF API of notification channels (the Apprise URL write-only, a test) and of the
notifications sent (read-only)."""

from __future__ import annotations

import copy

from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from alerts.models import Event, Notification, NotificationChannel, apprise_url_problem
from engine import alerts
from web.api import filters
from web.api.permissions import ActionPermission
from web.api.strict import StrictTypes


class NotificationChannelSerializer(StrictTypes, serializers.ModelSerializer):
    apprise_url = serializers.CharField(
        write_only=True, required=False, allow_blank=False, trim_whitespace=True,
        max_length=2000,
        help_text=_("The service's Apprise URL (it carries its credentials). Write-only; "
                    "leave out to keep the stored one."),
    )
    has_apprise_url = serializers.BooleanField(read_only=True)
    events = serializers.ListField(child=serializers.ChoiceField(choices=Event.choices),
                                   allow_empty=False)
    url = serializers.HyperlinkedIdentityField(view_name="api:notification-channel-detail")

    class Meta:
        model = NotificationChannel
        fields = ["id", "url", "name", "apprise_url", "has_apprise_url", "events", "enabled",
                  "created", "tested", "test_code"]
        read_only_fields = ["created", "tested", "test_code"]

    def validate_apprise_url(self, value: str) -> str:
        problem = apprise_url_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value

    def validate(self, attrs: dict) -> dict:
        # The model says what a channel may be; the URL is encrypted before it is checked.
        channel = copy.copy(self.instance) if self.instance else NotificationChannel()
        raw = attrs.pop("apprise_url", None)
        for field, value in attrs.items():
            setattr(channel, field, value)
        if raw:
            channel.set_apprise_url(raw)
        channel.full_clean(validate_unique=False)
        attrs["events"] = channel.events
        if raw:
            attrs["apprise_url_encrypted"] = channel.apprise_url_encrypted
        return attrs


class NotificationSerializer(serializers.ModelSerializer):
    channel_name = serializers.CharField(source="channel.name", read_only=True)
    failure_message = serializers.CharField(read_only=True)

    class Meta:
        model = Notification
        fields = ["id", "channel", "channel_name", "event", "workload", "code", "subject",
                  "body", "state", "attempts", "failure_code", "failure_message", "created",
                  "finished", "sent"]
        read_only_fields = fields


TestSerializer = inline_serializer("NotificationChannelTest", {
    "ok": serializers.BooleanField(),
    "code": serializers.CharField(),
    "message": serializers.CharField(),
})


class NotificationChannelViewSet(viewsets.ModelViewSet):
    """Where notifications go: Apprise URLs (webhooks, email, chat services)."""

    queryset = NotificationChannel.objects.all()
    serializer_class = NotificationChannelSerializer
    permission_classes = [ActionPermission]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    action_permissions = {
        "list": "alerts.view_notificationchannel",
        "retrieve": "alerts.view_notificationchannel",
        "create": "alerts.add_notificationchannel",
        "partial_update": "alerts.change_notificationchannel",
        "destroy": "alerts.delete_notificationchannel",
        "test": "alerts.change_notificationchannel",
    }

    def check_permissions(self, request) -> None:
        super().check_permissions(request)
        # A channel's URL makes the server send requests where it says (any host, any
        # path, headers): writing one or testing one is for superusers only.
        if self.action in ("create", "partial_update", "test") \
                and not request.user.is_superuser:
            self.permission_denied(request, message=_(
                "Only a superuser may set or test a channel: its URL makes the server send "
                "requests anywhere."))

    @extend_schema(request=None, responses={200: TestSerializer})
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        """Send a test message to the channel now; says whether it was delivered."""
        result = alerts.send_test(self.get_object())
        return Response({"ok": result.ok, "code": result.code, "message": result.message})


@extend_schema_view(list=extend_schema(parameters=[
    filters.id_filter("workload", "Only this workload's notifications."),
    OpenApiParameter("event", str, enum=Event.values, description="Only this event's."),
]))
class NotificationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin,
                          viewsets.GenericViewSet):
    """The notifications sent or being sent, newest first. `?workload=ID`, `?event=NAME`."""

    serializer_class = NotificationSerializer
    permission_classes = [ActionPermission]
    action_permissions = {"list": "alerts.view_notification",
                          "retrieve": "alerts.view_notification"}

    def get_queryset(self):
        rows = Notification.objects.select_related("channel")
        workload = filters.wanted_id(self.request, "workload")
        if workload is not None:
            rows = rows.filter(workload_id=workload)
        event = self.request.query_params.get("event")
        if event is not None:
            if event not in Event.values:
                raise serializers.ValidationError({"event": [_("Unknown event.")]})
            rows = rows.filter(event=event)
        return rows
