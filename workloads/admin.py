"""The admin: records and a thin operations console over the engine."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, Q
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from snapshots import capture
from workloads import deployer
from workloads.forms import EnvVarForm, RegistryCredentialForm
from workloads.models import (
    Container,
    DeployRecord,
    EnvVar,
    EventLog,
    PortMapping,
    Project,
    RegistryCredential,
    Stage,
    VolumeMount,
    Workload,
)


class StageInline(admin.TabularInline):
    model = Stage
    extra = 0
    fields = ["name", "slug"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created"]
    search_fields = ["name", "slug"]
    inlines = [StageInline]


@admin.register(Stage)
class StageAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "project"]
    list_select_related = ["project"]
    list_filter = ["project"]
    search_fields = ["name", "slug", "project__slug"]
    autocomplete_fields = ["project"]


@admin.register(RegistryCredential)
class RegistryCredentialAdmin(admin.ModelAdmin):
    form = RegistryCredentialForm
    list_display = ["name", "registry", "username"]
    search_fields = ["name", "registry"]


class VolumeInline(admin.TabularInline):
    model = VolumeMount
    extra = 0
    fields = ["scope", "source", "target", "read_only", "host_path_display"]
    readonly_fields = ["host_path_display"]

    @admin.display(description=_("host path"))
    def host_path_display(self, volume: VolumeMount) -> str:
        if not volume.pk:
            return "—"
        try:
            return volume.host_path()
        except Exception:  # noqa: BLE001 - an invalid path is shown as such, not a crash
            return _("(invalid)")


class EnvVarInline(admin.TabularInline):
    model = EnvVar
    form = EnvVarForm
    extra = 0


class PortInline(admin.TabularInline):
    model = PortMapping
    extra = 0


class ContainerInline(admin.TabularInline):
    model = Container
    extra = 0
    fields = ["name", "replica", "docker_id", "image_reference", "created", "removed"]
    readonly_fields = fields
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Workload)
class WorkloadAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "stage", "image", "state", "live_containers", "deployed_at"]
    list_select_related = ["stage__project"]
    list_filter = ["state", "source_kind", "stage__project"]
    search_fields = ["name", "slug", "image"]
    autocomplete_fields = ["stage", "registry_credential"]
    readonly_fields = ["state", "running_reference", "deployed_at"]
    inlines = [VolumeInline, EnvVarInline, PortInline, ContainerInline]
    actions = ["deploy", "snapshot"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(
            live_count=Count("containers", filter=Q(containers__removed__isnull=True))
        )

    @admin.display(description=_("containers"), ordering="live_count")
    def live_containers(self, workload: Workload) -> int:
        return workload.live_count

    @admin.action(description=_("Deploy the selected workloads"), permissions=["deploy"])
    def deploy(self, request, queryset) -> None:
        for workload in queryset:
            deployer.request_deploy(
                workload=workload, reason=DeployRecord.Reason.MANUAL, user=request.user
            )
        count = len(queryset)
        self.message_user(
            request,
            ngettext("Queued a deploy of %(count)d workload.",
                     "Queued deploys of %(count)d workloads.", count) % {"count": count},
            messages.SUCCESS,
        )

    def has_deploy_permission(self, request) -> bool:
        return request.user.has_perm("workloads.deploy_workload")

    @admin.action(description=_("Take a snapshot of the selected workloads"),
                  permissions=["snapshot"])
    def snapshot(self, request, queryset) -> None:
        queued = 0
        for workload in queryset:
            try:
                capture.request_snapshot(workload=workload, user=request.user)
                queued += 1
            except capture.SnapshotBusy as exc:
                self.message_user(request, f"{workload}: {exc}", messages.WARNING)
        if queued:
            self.message_user(
                request,
                ngettext("Queued a snapshot of %(count)d workload.",
                         "Queued snapshots of %(count)d workloads.", queued) % {"count": queued},
                messages.SUCCESS,
            )

    def has_snapshot_permission(self, request) -> bool:
        return request.user.has_perm("workloads.snapshot_workload")


@admin.register(EventLog)
class EventLogAdmin(admin.ModelAdmin):
    list_display = ["created", "workload", "level", "text", "user"]
    list_select_related = ["workload__stage__project", "user"]
    list_filter = ["level"]
    date_hierarchy = "created"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(DeployRecord)
class DeployRecordAdmin(admin.ModelAdmin):
    """The deploy ledger: read-only, written only by dispatch()."""

    list_display = [
        "id", "created", "workload", "reason", "outcome", "failure_code", "short_reference",
        "user", "duration",
    ]
    list_select_related = ["workload__stage__project", "user"]
    list_filter = ["outcome", "reason", "workload"]
    search_fields = ["requested_reference", "pinned_reference", "workload__slug"]
    date_hierarchy = "created"
    readonly_fields = [
        "workload", "reason", "source_kind", "requested_reference", "pinned_reference",
        "rolled_back_from", "outcome", "failure_code", "failure_message", "user",
        "created", "started", "finished",
    ]
    fields = readonly_fields

    @admin.display(description=_("reference"))
    def short_reference(self, record: DeployRecord) -> str:
        return record.short_reference

    @admin.display(description=_("failure message"))
    def failure_message(self, record: DeployRecord) -> str:
        return record.failure_message

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
