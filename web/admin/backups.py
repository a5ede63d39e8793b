"""The admin of backup targets (secrets write-only, and a check action), copy rules and
copies."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _

from backups.models import (
    BackupPolicy,
    BackupRecovery,
    BackupRun,
    BackupTarget,
    CopyKind,
    CopyRule,
    SnapshotCopy,
)
from engine import backups
from web.admin.forms import BackupTargetForm


@admin.register(BackupTarget)
class BackupTargetAdmin(admin.ModelAdmin):
    form = BackupTargetForm
    list_display = ["name", "kind", "where", "encryption", "checked", "check_code"]
    search_fields = ["name", "bucket", "directory"]
    actions = ["check_targets"]

    def save_model(self, request, obj, form, change) -> None:
        form.edit.save()  # only the columns this edit changed

    @admin.display(description=_("where"))
    def where(self, target: BackupTarget) -> str:
        return target.where

    @admin.display(description=_("encryption"))
    def encryption(self, target: BackupTarget) -> str:
        if target.unencrypted:
            return str(_("none: copies leave the host in clear"))
        return str(_("age, %(count)d recipient(s)") % {"count": len(target.recipient_list)})

    @admin.action(description=_("Check the selected targets (write, read back, delete)"),
                  permissions=["change"])
    def check_targets(self, request, queryset) -> None:
        for target in queryset:
            result = backups.check_target(target)
            level = messages.SUCCESS if result.ok else messages.ERROR
            self.message_user(request, f"{target.name}: {result.message}", level)


class CopyRuleForm(forms.ModelForm):
    kinds = forms.MultipleChoiceField(label=_("snapshot kinds"), choices=CopyKind.choices,
                                      widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = CopyRule
        fields = ["project", "workload", "target", "kinds"]


@admin.register(CopyRule)
class CopyRuleAdmin(admin.ModelAdmin):
    """A workload's rules replace its project's; a project's are the default."""

    form = CopyRuleForm
    list_display = ["__str__", "project", "workload", "target", "kind_list"]
    list_select_related = ["project", "workload__stage__project", "target"]
    list_filter = ["target"]
    autocomplete_fields = ["project", "workload", "target"]

    @admin.display(description=_("snapshot kinds"))
    def kind_list(self, rule: CopyRule) -> str:
        return ", ".join(str(CopyKind(k).label) for k in rule.kinds if k in CopyKind.values)


@admin.register(SnapshotCopy)
class SnapshotCopyAdmin(admin.ModelAdmin):
    """Copies are made by the engine; the admin only shows them."""

    list_display = ["remote_key", "target", "workload", "kind", "state", "attempts", "size",
                    "failure_code", "finished"]
    list_filter = ["state", "kind", "target"]
    list_select_related = ["target", "workload"]
    search_fields = ["remote_key"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # A copy under way is not forgotten while its worker still writes it.
        if obj is not None and obj.state in SnapshotCopy.ACTIVE_STATES:
            return False
        return super().has_delete_permission(request, obj)


@admin.register(BackupRecovery)
class BackupRecoveryAdmin(admin.ModelAdmin):
    """Recoveries are asked for in the pages, the API or the command; the admin shows them."""

    list_display = ["remote_key", "target", "into", "state", "failure_code", "created",
                    "finished"]
    list_filter = ["state", "target"]
    list_select_related = ["target", "into"]
    search_fields = ["remote_key"]
    exclude = ["identity_encrypted"]
    readonly_fields = ["failure_text"]

    @admin.display(description=_("failure"))
    def failure_text(self, recovery: BackupRecovery) -> str:
        return recovery.failure_text

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        if obj is not None and obj.state in BackupRecovery.ACTIVE_STATES:
            return False
        return super().has_delete_permission(request, obj)


@admin.register(BackupPolicy)
class BackupPolicyAdmin(admin.ModelAdmin):
    """When scheduled snapshots are taken, where they are copied and how long they stay."""

    list_display = ["__str__", "enabled", "next_run"]
    list_select_related = ["project", "stage__project", "workload__stage__project"]
    list_filter = ["enabled", "every"]
    autocomplete_fields = ["project", "stage", "workload"]
    filter_horizontal = ["targets"]
    fieldsets = [
        (None, {"fields": ["project", "stage", "workload", "enabled"]}),
        (_("When"), {"fields": ["every", "minute", "at", "weekday", "cron", "time_zone"]}),
        (_("Copies"), {"fields": ["targets"]}),
        (_("Retention by age"), {"fields": ["keep_last", "keep_hourly", "keep_daily",
                                             "keep_weekly", "keep_monthly", "keep_yearly"]}),
    ]

    @admin.display(description=_("next run"))
    def next_run(self, policy: BackupPolicy):
        return policy.upcoming()

    def save_model(self, request, obj, form, change) -> None:
        obj.reschedule(form.changed_data)  # a changed schedule never fires for the past
        super().save_model(request, obj, form, change)


@admin.register(BackupRun)
class BackupRunAdmin(admin.ModelAdmin):
    """What each scheduled run did: recorded by the engine, shown here."""

    list_display = ["workload", "scheduled_for", "started", "late", "missed", "outcome",
                    "snapshot"]
    list_filter = ["late", "outcome"]
    list_select_related = ["workload__stage__project", "snapshot"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
