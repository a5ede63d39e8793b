"""The admin of notification channels (the Apprise URL write-only, a test action) and of the
notifications sent (read-only)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _

from alerts.models import Event, Notification, NotificationChannel, apprise_url_problem
from engine import alerts


class NotificationChannelForm(forms.ModelForm):
    """The URL carries the service's credentials: never rendered, an empty field keeps it."""

    apprise_url = forms.CharField(
        label=_("Apprise URL"), required=False, max_length=2000,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text=_("e.g. json://host/path, mailto://user:password@example.com, "
                    "slack://... Stored encrypted and never shown; leave empty to keep the "
                    "stored one."),
    )
    events = forms.MultipleChoiceField(label=_("events"), choices=Event.choices,
                                       widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = NotificationChannel
        fields = ["name", "events", "enabled"]

    def clean_apprise_url(self) -> str:
        raw = self.cleaned_data["apprise_url"]
        if raw:
            problem = apprise_url_problem(raw)
            if problem:
                raise forms.ValidationError(problem)
            self.instance.set_apprise_url(raw)
        return ""  # the form keeps nothing of it: an invalid form never shows it again


@admin.register(NotificationChannel)
class NotificationChannelAdmin(admin.ModelAdmin):
    form = NotificationChannelForm
    list_display = ["name", "event_list", "enabled", "tested", "test_code"]
    list_filter = ["enabled"]
    search_fields = ["name"]
    actions = ["send_test"]

    # A channel's URL makes the server send requests where it says: superusers only.
    def has_add_permission(self, request) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser

    @admin.display(description=_("events"))
    def event_list(self, channel: NotificationChannel) -> str:
        return ", ".join(str(Event(e).label) for e in channel.events if e in Event.values)

    @admin.action(description=_("Send a test notification to the selected channels"),
                  permissions=["change"])
    def send_test(self, request, queryset) -> None:
        for channel in queryset:
            result = alerts.send_test(channel)
            level = messages.SUCCESS if result.ok else messages.ERROR
            self.message_user(request, f"{channel.name}: {result.message}", level)


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    """Notifications are made by the engine; the admin only shows them."""

    list_display = ["subject", "channel", "event", "workload", "state", "attempts",
                    "failure_code", "created", "sent"]
    list_filter = ["state", "event", "channel"]
    list_select_related = ["channel", "workload__stage__project"]
    search_fields = ["subject", "key"]
    readonly_fields = ["failure_message"]

    @admin.display(description=_("failure"))
    def failure_message(self, row: Notification) -> str:
        return row.failure_message

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        if obj is not None and obj.state in Notification.ACTIVE_STATES:
            return False
        return super().has_delete_permission(request, obj)
