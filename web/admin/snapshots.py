"""Snapshots in the admin: read-only records, deleted only through the engine.

A delete here — one at a time, with the workload's path typed in — is the engine's
delete_snapshot(), as from the API, the pages and `manage.py delete_snapshot`:
a snapshot being taken or restored is refused, the deletion is an event, and
the archive goes once the transaction has committed (snapshots/signals.py).
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from engine import captures
from snapshots.models import RestoreJob, Snapshot
from web.admin.confirm import TypedPathDelete
from workloads.models import Workload


@admin.register(Snapshot)
class SnapshotAdmin(TypedPathDelete, admin.ModelAdmin):
    def get_actions(self, request):
        # No bulk delete: a snapshot goes one at a time, through the engine.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    list_display = [
        "id", "created", "workload", "kind", "state", "imported", "archive_size", "skipped",
        "much_smaller", "deploy",
    ]
    list_select_related = ["workload__stage__project", "deploy__workload__stage__project"]
    list_filter = ["kind", "state", "imported", "much_smaller"]
    search_fields = ["workload__slug", "sha256", "archive"]
    date_hierarchy = "created"
    readonly_fields = [
        "workload", "kind", "state", "imported", "archive", "size", "sha256", "data_bytes",
        "file_count", "volume_count", "skipped_count", "changed_count", "much_smaller",
        "bytes_done", "bytes_total", "failure_text", "failure_code", "deploy", "user", "created",
        "finished", "manifest",
    ]
    fields = readonly_fields

    @admin.display(description=_("size"), ordering="size")
    def archive_size(self, snapshot: Snapshot) -> str:
        return filesizeformat(snapshot.size) if snapshot.is_ready else "—"

    @admin.display(description=_("skipped entries"), ordering="skipped_count")
    def skipped(self, snapshot: Snapshot) -> str:
        if not snapshot.skipped_count:
            return "—"
        return ngettext("%(count)d entry skipped", "%(count)d entries skipped",
                        snapshot.skipped_count) % {"count": snapshot.skipped_count}

    @admin.display(description=_("failure"))
    def failure_text(self, snapshot: Snapshot) -> str:
        return snapshot.failure_text

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # A snapshot being taken or restored shows no delete button; the
        # engine refuses it again at the moment of the delete.
        busy = obj is not None and (obj.is_active or obj.restores.active().exists())
        return super().has_delete_permission(request, obj) and not busy

    def confirming_workload(self, snapshot: Snapshot) -> Workload:
        return snapshot.workload

    def delete_model(self, request, snapshot: Snapshot) -> None:
        try:
            captures.delete_snapshot(snapshot=snapshot, user=request.user)
        except captures.SnapshotBusy as exc:
            request._berth_delete_refused = True
            self.message_user(request, _("Snapshot #%(id)d was not deleted: %(reason)s")
                              % {"id": snapshot.pk, "reason": exc}, messages.ERROR)

    def delete_queryset(self, request, queryset) -> None:
        for snapshot in queryset.select_related("workload"):
            self.delete_model(request, snapshot)

    def response_delete(self, request, obj_display, obj_id):
        if getattr(request, "_berth_delete_refused", False):
            return HttpResponseRedirect(reverse("admin:snapshots_snapshot_changelist"))
        return super().response_delete(request, obj_display, obj_id)


@admin.register(RestoreJob)
class RestoreJobAdmin(admin.ModelAdmin):
    """Restores are history: read-only here. Start one from the workload's page, the API or
    `manage.py restore`."""

    list_display = ["id", "created", "workload", "snapshot", "state", "phase", "outcome", "user",
                    "pre_restore_snapshot", "finished"]
    list_select_related = ["workload__stage__project", "snapshot", "user"]
    list_filter = ["state", "outcome"]
    search_fields = ["workload__slug"]
    date_hierarchy = "created"
    readonly_fields = [
        "workload", "snapshot", "state", "phase", "outcome", "reason_text", "bytes_done",
        "bytes_total", "pre_restore_snapshot", "deploy", "rollback_to", "kept_paths", "user",
        "created", "started", "finished",
    ]
    fields = readonly_fields

    @admin.display(description=_("reason"))
    def reason_text(self, job: RestoreJob) -> str:
        return job.reason_text

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # An active job's row is what keeps a second restore out; a finished one is history.
        return obj is None or not obj.is_active
