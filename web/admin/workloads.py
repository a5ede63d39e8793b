"""The admin: records and a thin operations console over the engine."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.forms.models import BaseInlineFormSet
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from engine import captures, deploys
from lib import runtime
from lib.locks import LockTimeout
from web.admin.confirm import TypedPathDelete
from web.admin.forms import EnvVarForm, RegistryCredentialForm, WorkloadForm
from workloads import edits
from workloads.models import (
    Container,
    DeployInProgress,
    DeployLog,
    DeployRecord,
    EnvVar,
    EventLog,
    PortMapping,
    Project,
    PulledImage,
    RegistryCredential,
    Stage,
    VolumeMount,
    Workload,
    live_summary,
    with_live_containers,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """History and index records: shown, never added, changed or deleted by hand."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class StageInline(admin.TabularInline):
    model = Stage
    extra = 0
    fields = ["name", "slug"]
    can_delete = False  # a stage is deleted on its own page, and only when empty


class EmptyOnlyDelete:
    """Delete one object at a time, and only once it has no workloads (workloads.edits):
    the admin's cascade would delete workloads without removing their containers."""

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_delete_permission(self, request, obj=None):
        if obj is not None and self.has_workloads(obj):
            return False
        return super().has_delete_permission(request, obj)

    def delete_model(self, request, obj) -> None:
        try:
            self.delete_empty(obj)
        except edits.StillInUse as exc:
            raise ValidationError(str(exc)) from None


@admin.register(Project)
class ProjectAdmin(EmptyOnlyDelete, admin.ModelAdmin):
    list_display = ["name", "slug", "created"]
    search_fields = ["name", "slug"]
    inlines = [StageInline]

    @staticmethod
    def has_workloads(project: Project) -> bool:
        return Workload.objects.filter(stage__project=project).exists()

    delete_empty = staticmethod(edits.delete_project)


@admin.register(Stage)
class StageAdmin(EmptyOnlyDelete, admin.ModelAdmin):
    list_display = ["name", "slug", "project"]
    list_select_related = ["project"]
    list_filter = ["project"]
    search_fields = ["name", "slug", "project__slug"]
    autocomplete_fields = ["project"]

    @staticmethod
    def has_workloads(stage: Stage) -> bool:
        return stage.workloads.exists()

    delete_empty = staticmethod(edits.delete_stage)


@admin.register(RegistryCredential)
class RegistryCredentialAdmin(admin.ModelAdmin):
    form = RegistryCredentialForm
    list_display = ["name", "registry", "username"]
    search_fields = ["name", "registry"]


class VolumeFormSet(BaseInlineFormSet):
    def clean(self) -> None:
        """The volumes together: allowed host paths that overlap no other volume."""
        super().clean()
        if any(self.errors):
            return
        volumes = [
            form.instance for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE")
        ]
        try:
            self.instance.check_volumes(volumes)
        except ValidationError as exc:
            raise ValidationError(exc.messages) from None


class VolumeInline(admin.TabularInline):
    model = VolumeMount
    formset = VolumeFormSet
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


class PortFormSet(BaseInlineFormSet):
    def clean(self) -> None:
        """The ports together, as the API and the pages check them (workloads.edits)."""
        super().clean()
        if any(self.errors):
            return
        ports = [form.instance for form in self.forms
                 if form.cleaned_data and not form.cleaned_data.get("DELETE")]
        try:
            edits.check_host_ports(self.instance, ports)
        except ValidationError as exc:
            raise ValidationError(exc.messages) from None


class PortInline(admin.TabularInline):
    model = PortMapping
    formset = PortFormSet
    extra = 0


class ContainerInline(admin.TabularInline):
    """Every container the workload has had, newest first: live ones have no `removed`."""

    model = Container
    extra = 0
    fields = ["name", "replica", "docker_id", "image_reference", "created", "removed",
              "state", "exit_code", "oom_killed", "restart_count", "health", "state_since"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


def commit_link(sha: str, url: str | None) -> str:
    if not sha:
        return "—"
    if url:
        return format_html(
            '<a href="{}" rel="noopener noreferrer" target="_blank"><code>{}</code></a>',
            url, sha[:12],
        )
    return format_html("<code>{}</code>", sha[:12])


@admin.register(Workload)
class WorkloadAdmin(TypedPathDelete, admin.ModelAdmin):
    form = WorkloadForm
    list_display = [
        "name", "slug", "stage", "source", "state", "live_state", "live_containers", "deployed_at",
    ]
    list_select_related = ["stage__project"]
    list_filter = ["state", "source_kind", "stage__project"]
    search_fields = ["name", "slug", "image", "git_url"]
    autocomplete_fields = ["stage", "registry_credential"]
    readonly_fields = [
        "state", "running_reference", "running_commit_display", "deployed_at",
        "git_credential_status", "live_state",
    ]
    fieldsets = [
        (None, {"fields": ["stage", "name", "slug", "replicas", "memory_limit_mib", "created"]}),
        (_("Source"), {
            "fields": ["source_kind", "image", "registry_credential"],
            "description": _(
                "An image from a registry (pulled and pinned by digest), or a git repository "
                "built here (below)."
            ),
        }),
        (_("Git repository"), {
            "fields": [
                "git_url", "git_ref", "git_dockerfile", "git_context", "build_args",
                "git_credential_status", "git_username", "git_password", "clear_git_credential",
            ],
            "description": _(
                "Used when the source kind is a git repository: Berth fetches the "
                "repository, builds the ref's commit with the Dockerfile and runs it."
            ),
            "classes": ["wide"],
        }),
        (_("Health check"), {
            "fields": list(Workload.HEALTH_FIELDS),
            "description": _(
                "A deploy succeeds only when its new containers still run after the settle "
                "window and, with a health check, report healthy."
            ),
        }),
        (_("Backup hooks"), {
            "fields": [
                "pre_backup_hook", "post_backup_hook", "backup_hook_timeout", "pre_hook_failure",
            ],
            "description": _(
                "Commands run with sh -c inside the first replica's container around every "
                "snapshot Berth takes of the running workload: before it (while the containers "
                "still run) and after it."
            ),
            "classes": ["wide"],
        }),
        (_("State"), {
            "fields": ["state", "live_state", "running_reference", "running_commit_display",
                       "deployed_at"]
        }),
    ]
    inlines = [VolumeInline, EnvVarInline, PortInline, ContainerInline]
    actions = ["deploy", "snapshot"]

    def get_actions(self, request):
        # No bulk delete: a workload goes one at a time, through the engine.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        if not request.user.has_perm("workloads.use_registrycredential"):
            # A credential is sent to a registry: attaching one is its own permission.
            fields.append("registry_credential")
        if not request.user.has_perm(Workload.HOOK_PERMISSION):
            # A hook runs inside the containers, with their secrets: as much as a deploy.
            fields += ["pre_backup_hook", "post_backup_hook", "backup_hook_timeout",
                       "pre_hook_failure"]
        return fields

    @admin.display(description=_("source"))
    def source(self, workload: Workload) -> str:
        if workload.source_kind == Workload.SourceKind.GIT:
            return f"{workload.git_url} ({workload.git_ref})"
        return workload.image

    @admin.display(description=_("repository credential"))
    def git_credential_status(self, workload: Workload) -> str:
        return _("stored (never shown)") if workload.has_git_credential else _("none")

    @admin.display(description=_("running commit"))
    def running_commit_display(self, workload: Workload) -> str:
        return commit_link(workload.running_commit, workload.running_commit_url)

    def get_queryset(self, request):
        return with_live_containers(super().get_queryset(request).annotate(
            live_count=Count("containers", filter=Q(containers__removed__isnull=True))
        ))

    @admin.display(description=_("live state"))
    def live_state(self, workload: Workload) -> str:
        live = live_summary(workload)
        return f"{live.label} ({live.detail})" if live.detail else str(live.label)

    @admin.display(description=_("containers"), ordering="live_count")
    def live_containers(self, workload: Workload) -> int:
        return workload.live_count

    @admin.action(description=_("Deploy the selected workloads"), permissions=["deploy"])
    def deploy(self, request, queryset) -> None:
        queued = 0
        for workload in queryset:
            try:
                deploys.request_deploy(
                    workload=workload, reason=DeployRecord.Reason.MANUAL, user=request.user
                )
            except DeployInProgress as exc:
                self.message_user(request, f"{workload}: {exc}", messages.WARNING)
            else:
                queued += 1
        if queued:
            self.message_user(
                request,
                ngettext("Queued a deploy of %(count)d workload.",
                         "Queued deploys of %(count)d workloads.", queued) % {"count": queued},
                messages.SUCCESS,
            )

    def confirming_workload(self, workload: Workload) -> Workload:
        return workload

    def delete_model(self, request, workload: Workload) -> None:
        # Containers first: a record deleted while its containers run on
        # would leave them holding ports and volumes, unseen.
        try:
            deploys.remove_workload(workload=workload)
        except (runtime.EngineError, LockTimeout, deploys.RemovalRefused) as exc:
            request._berth_delete_failed = True
            self.message_user(
                request,
                _("%(workload)s was not deleted: %(reason)s") % {"workload": workload,
                                                                  "reason": exc},
                messages.ERROR,
            )

    def delete_queryset(self, request, queryset) -> None:
        for workload in queryset:
            self.delete_model(request, workload)

    def response_delete(self, request, obj_display, obj_id):
        if getattr(request, "_berth_delete_failed", False):
            return HttpResponseRedirect(
                reverse("admin:workloads_workload_change", args=[obj_id])
            )
        return super().response_delete(request, obj_display, obj_id)

    def has_deploy_permission(self, request) -> bool:
        return request.user.has_perm("workloads.deploy_workload")

    @admin.action(description=_("Take a snapshot of the selected workloads"),
                  permissions=["snapshot"])
    def snapshot(self, request, queryset) -> None:
        queued = 0
        for workload in queryset:
            try:
                captures.request_snapshot(workload=workload, user=request.user)
                queued += 1
            except captures.SnapshotBusy as exc:
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
class EventLogAdmin(ReadOnlyAdmin):
    list_display = ["created", "workload", "level", "text", "user"]
    list_select_related = ["workload__stage__project", "user"]
    list_filter = ["level"]
    date_hierarchy = "created"


@admin.register(PulledImage)
class PulledImageAdmin(ReadOnlyAdmin):
    """What says Berth pulled an image (image collection removes only such images and its
    own builds): read-only, written by deploys, removed with its image."""

    list_display = ["image_id", "reference", "workload_number", "pulled"]
    search_fields = ["image_id", "reference"]
    readonly_fields = list_display
    fields = readonly_fields


@admin.register(DeployRecord)
class DeployRecordAdmin(ReadOnlyAdmin):
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
        "repository", "commit_display", "image_id", "rolled_back_from", "rollback_restored",
        "outcome",
        "failure_code", "failure_message", "failed_step", "user", "created", "started",
        "finished", "configuration_display", "build_log_display",
    ]
    fields = readonly_fields

    class Media:
        css = {"all": ["css/admin.css"]}  # the build log's wrapping

    @admin.display(description=_("reference"))
    def short_reference(self, record: DeployRecord) -> str:
        return record.short_reference

    @admin.display(description=_("commit"))
    def commit_display(self, record: DeployRecord) -> str:
        return commit_link(record.commit, record.commit_url)

    @admin.display(description=_("failed step"))
    def failed_step(self, record: DeployRecord) -> str:
        log = DeployLog.objects.filter(deploy=record).first()
        return log.failed_step if log and log.failed_step else "—"

    @admin.display(description=_("build log"))
    def build_log_display(self, record: DeployRecord) -> str:
        log = DeployLog.objects.filter(deploy=record).first()
        if log is None:
            return "—"
        return format_html('<pre class="log">{}</pre>', log.text)

    @admin.display(description=_("failure message"))
    def failure_message(self, record: DeployRecord) -> str:
        return record.failure_message

    @admin.display(description=_("configuration"))
    def configuration_display(self, record: DeployRecord) -> str:
        """The recorded configuration (a secret is only a version's id and a fingerprint)."""
        if record.configuration is None:
            return _("Configuration not recorded.")
        return format_html('<pre class="log">{}</pre>',
                           json.dumps(record.configuration, indent=2, sort_keys=True))


@admin.register(Container)
class ContainerAdmin(ReadOnlyAdmin):
    """The Container index: read-only, written by deploys and the stats sampler's reconcile.

    Stats samples join through it, so deleting a row here would delete its
    history too: there is no delete either.
    """

    list_display = [
        "name", "workload", "replica", "short_docker_id", "image_reference", "state",
        "exit_code", "restart_count", "created", "removed",
    ]
    list_select_related = ["workload__stage__project"]
    list_filter = [("removed", admin.EmptyFieldListFilter), "state", "workload"]
    search_fields = ["name", "docker_id", "workload__slug"]
    date_hierarchy = "created"
    fields = ["workload", "name", "replica", "docker_id", "image_reference", "created", "removed",
              "state", "exit_code", "oom_killed", "restart_count", "health", "state_since"]
    readonly_fields = fields

    @admin.display(description=_("Docker id"), ordering="docker_id")
    def short_docker_id(self, container: Container) -> str:
        return container.docker_id[:12]

