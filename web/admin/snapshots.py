"""Snapshots in the admin: read-only records; deleting one removes its archive too.

Deleting rows here — one, or many through the bulk action — needs no
delete_queryset override: the post_delete receiver (snapshots/signals.py)
runs for every row Django deletes and removes the file once the transaction
has committed. tests/snapshots/test_admin.py holds it to that.
"""

from __future__ import annotations

from django.contrib import admin
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from snapshots.models import RestoreJob, Snapshot


@admin.register(Snapshot)
class SnapshotAdmin(admin.ModelAdmin):
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
        "bytes_done", "bytes_total", "failure_text", "deploy", "user", "created", "finished",
        "manifest",
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
        "bytes_total", "pre_restore_snapshot", "deploy", "kept_paths", "user", "created",
        "started", "finished",
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
