"""The DRF API: workloads, their deploys and containers."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from django.urls import reverse
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response

from backups import health
from engine import deploys, operations, restores, rollbacks
from snapshots.errors import PreflightError
from web.api.errors import (
    CONFIRM_HEADER,
    DELETE_HEADER,
    Conflict,
    PreconditionRequired,
    confirm_delete,
    query_flag,
)
from web.api.pagination import HistoryPages
from web.api.permissions import ActionPermission
from web.api.schedules import HealthSerializer
from web.api.snapshot_serializers import RestoreJobSerializer
from web.api.workload_serializers import (
    ContainerSerializer,
    DeployLogSerializer,
    DeploySerializer,
    RollbackDiffSerializer,
    RollbackSerializer,
    StatsHistorySerializer,
    WorkloadDetailSerializer,
    WorkloadSerializer,
)
from workloads import metrics_history
from workloads.models import DeployLog, DeployRecord, Workload, with_live_containers

CONFIRM_DELETE = OpenApiParameter(
    DELETE_HEADER, OpenApiTypes.STR, OpenApiParameter.HEADER, required=True,
    description="The workload's path, project/stage/workload: confirms the delete (428 "
                "without it or when it is not the path).",
)


# Start, stop, restart: 409 while busy or never deployed; 503 when the engine cannot be asked.
_OPERATE_ERRORS = {409: None, 503: None}


@extend_schema_view(
    destroy=extend_schema(parameters=[CONFIRM_DELETE],
                          responses={204: None, 404: None, 409: None, 428: None, 503: None}),
)
class WorkloadViewSet(viewsets.ModelViewSet):
    serializer_class = WorkloadSerializer
    permission_classes = [ActionPermission]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    action_permissions = {
        "list": "workloads.view_workload",
        "retrieve": "workloads.view_workload",
        "containers": "workloads.view_workload",
        "create": "workloads.add_workload",
        "partial_update": "workloads.change_workload",
        "destroy": "workloads.delete_workload",
        "deploy": "workloads.deploy_workload",
        "deploys": "workloads.view_workload",
        "rollback": "workloads.rollback_workload",
        # The preview of a rollback, for those who may roll back: it tells whether a
        # secret's value now equals an earlier one (docs/security.md).
        "rollback_diff": "workloads.rollback_workload",
        "stats_history": "workloads.view_workload",
        "backup_health": "workloads.view_workload",
        "start": "workloads.operate_workload",
        "stop": "workloads.operate_workload",
        "restart": "workloads.operate_workload",
    }

    def get_serializer_class(self):
        # Only one workload's page of the API asks the engine for its images' size.
        return WorkloadDetailSerializer if self.action == "retrieve" else WorkloadSerializer

    def get_queryset(self):
        workloads = Workload.objects.with_parents()
        if self.action in {"list", "retrieve", "create", "partial_update"}:
            # Only the workload's own representation needs its children.
            workloads = with_live_containers(
                workloads.prefetch_related("volumes", "env_vars", "ports"))
        return workloads

    def perform_destroy(self, workload: Workload) -> None:
        # After the permission (initial) and the lookup (get_object): 401/403, then 404,
        # then 428.
        confirm_delete(self.request, workload, _(
            "Confirm the delete with the header %(header)s: %(path)s (the workload's path); "
            "its containers are removed and its records deleted."))
        deploys.remove_workload(workload=workload)

    def _accepted(self, record: DeployRecord) -> Response:
        """202 with the queued deploy, and where to follow it."""
        record.refresh_from_db()
        url = reverse("api:deploy-detail", args=[record.pk])
        data = DeploySerializer(record).data
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": url})

    @extend_schema(request=None, responses={202: DeploySerializer, 409: None})
    @action(detail=True, methods=["post"])
    def deploy(self, request, pk=None):
        """Queue a deploy; follow it at the returned deploy's `url`."""
        record = deploys.request_deploy(
            workload=self.get_object(), reason=DeployRecord.Reason.API, user=request.user
        )
        return self._accepted(record)

    @extend_schema(
        request=RollbackSerializer,
        parameters=[OpenApiParameter(
            CONFIRM_HEADER, OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
            description="With `data`: the workload's path, project/stage/workload, confirming "
                        "that its volumes are replaced (428 without it).",
        )],
        responses={202: PolymorphicProxySerializer(
            component_name="RollbackAccepted", serializers=[DeploySerializer, RestoreJobSerializer],
            resource_type_field_name=None), 400: None, 403: None, 404: None, 409: None, 428: None},
    )
    @action(detail=True, methods=["post"])
    def rollback(self, request, pk=None):
        """Queue a redeploy of an earlier successful deploy's pinned reference.

        An image deploy's digest, or a git deploy's commit (its image reused
        while the engine has it, else the commit rebuilt). With
        `configuration` (the default) the workload's configuration and its
        configured image or ref are first set back to what the deploy ran.
        404 if the deploy is not this workload's; 409 if it failed, has no
        pinned reference, ran from another source kind than the workload uses
        now, or (with `configuration`) its configuration was not recorded;
        400 if a secret's kept value is gone and not in `secrets`, or the
        recorded configuration breaks today's rules. Nothing changes on a refusal.

        With `"data": true`, also the data as it was just before that deploy ran
        (its pre-deploy snapshot), in one restore: 202 with the restore job to
        follow. It needs the restore permission too (else 403) and the
        X-Confirm-Restore header (else 428); 409 when the deploy has no ready
        pre-deploy snapshot, the volumes changed since, or a restore is active.
        """
        workload = self.get_object()
        payload = RollbackSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        if payload.validated_data.get("secrets") and not payload.validated_data["configuration"]:
            raise ValidationError({"secrets": [_(
                "Secret values go with a rollback of the configuration only.")]})
        if payload.validated_data["data"]:
            if payload.validated_data.get("secrets"):
                raise ValidationError({"secrets": [_(
                    "A rollback with data sets the configuration back only with the values "
                    "Berth kept; roll back the configuration first, without the data.")]})
            return self._rollback_with_data(request, workload,
                                            payload.validated_data["deploy_id"],
                                            payload.validated_data["configuration"])
        try:
            record = deploys.request_rollback(
                workload=workload, deploy_id=payload.validated_data["deploy_id"],
                user=request.user, configuration=payload.validated_data["configuration"],
                secrets=payload.validated_data.get("secrets"),
            )
        except DjangoPermissionDenied as exc:
            raise PermissionDenied(str(exc)) from None
        return self._accepted(record)

    def _rollback_with_data(self, request, workload: Workload, deploy_id: int,
                            configuration: bool) -> Response:
        """The restore of the target's pre-deploy snapshot that ends on the target's code."""
        if not request.user.has_perm("workloads.restore_workload"):
            raise PermissionDenied(_("A rollback with data replaces the workload's volumes: "
                                     "it needs the permission to restore, too."))
        if request.headers.get(CONFIRM_HEADER) != workload.path:
            raise PreconditionRequired(
                _("Confirm the rollback with data with the header %(header)s: %(path)s (the "
                  "workload's path); its volumes will be replaced by the data from before "
                  "that deploy ran.") % {"header": CONFIRM_HEADER, "path": workload.path}
            )
        try:
            job = restores.request_rollback_with_data(workload=workload, deploy_id=deploy_id,
                                                      user=request.user,
                                                      configuration=configuration)
        except DjangoPermissionDenied as exc:
            raise PermissionDenied(str(exc)) from None
        except restores.RestoreBusy as exc:
            active = exc.active
            url = reverse("api:restore-detail", args=[active.pk]) if active else None
            raise Conflict({"detail": str(exc), "active_restore": url}) from None
        except PreflightError as exc:
            raise Conflict(str(exc)) from None
        job.refresh_from_db()
        url = reverse("api:restore-detail", args=[job.pk])
        return Response(RestoreJobSerializer(job).data, status=status.HTTP_202_ACCEPTED,
                        headers={"Location": url})

    @extend_schema(responses={200: RollbackDiffSerializer, 404: None})
    @action(detail=True, methods=["get"], url_path=r"deploys/(?P<deploy_id>[0-9]{1,18})/diff",
            url_name="rollback-diff")
    def rollback_diff(self, request, pk=None, deploy_id=None):
        """What a rollback to deploy `deploy_id` changes: the code, each setting, each env
        name (a secret only as changed), the ports and volumes, and the snapshot taken
        before that deploy. 404 if the deploy is not this workload's."""
        workload = self.get_object()
        target = workload.deploys.select_related("pre_deploy_snapshot").get(pk=deploy_id)
        preview = rollbacks.preview(workload=workload, target=target)
        return Response(RollbackDiffSerializer(preview).data)

    def _operate(self, request, action_name: str) -> Response:
        workload = self.get_object()
        try:
            operations.operate(workload=workload, action=action_name, user=request.user)
        except operations.OperationRefused as exc:
            raise Conflict(str(exc)) from None
        workload = self.get_queryset().get(pk=workload.pk)
        return Response(WorkloadSerializer(workload, context={"request": request}).data)

    @extend_schema(request=None, responses={200: WorkloadSerializer, **_OPERATE_ERRORS})
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        """Start the workload's containers (all replicas); 409 while a deploy, restore or
        snapshot holds it, or before it was ever deployed. Not a deploy: no ledger row."""
        return self._operate(request, "start")

    @extend_schema(request=None, responses={200: WorkloadSerializer, **_OPERATE_ERRORS})
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        """Stop the workload's containers; it stays stopped (a Docker or Berth restart too)
        until started or deployed again."""
        return self._operate(request, "stop")

    @extend_schema(request=None, responses={200: WorkloadSerializer, **_OPERATE_ERRORS})
    @action(detail=True, methods=["post"])
    def restart(self, request, pk=None):
        """Stop and start the workload's containers."""
        return self._operate(request, "restart")

    @extend_schema(responses=DeploySerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=HistoryPages)
    def deploys(self, request, pk=None):
        """The workload's deploy history, newest first."""
        workload = self.get_object()
        history = workload.deploys.select_related("user", "pre_deploy_snapshot").order_by(
            "-created", "-id"
        )
        page = self.paginate_queryset(history)
        return self.get_paginated_response(DeploySerializer(page, many=True).data)

    @extend_schema(parameters=[OpenApiParameter(
        "all", OpenApiTypes.BOOL, description="Removed containers too.")],
        responses=ContainerSerializer(many=True))
    @action(detail=True, methods=["get"])
    def containers(self, request, pk=None):
        """The workload's live containers (add ?all=1 for removed ones too)."""
        workload = self.get_object()
        containers = workload.containers.all()
        if not query_flag(request, "all"):
            containers = containers.live()
        page = self.paginate_queryset(containers)
        return self.get_paginated_response(ContainerSerializer(page, many=True).data)

    @extend_schema(
        parameters=[OpenApiParameter(
            "window", str, enum=list(metrics_history.WINDOWS),
            default=metrics_history.DEFAULT_WINDOW,
        )],
        responses={200: StatsHistorySerializer, 400: None},
    )
    @action(detail=True, methods=["get"], url_path="stats/history", url_name="stats-history")
    def stats_history(self, request, pk=None):
        """CPU and memory over a window, summed across the workload's containers.

        Downsampled to at most about 1,000 points (the average per
        `step_seconds` bucket), with the deploys, rollbacks and restores in
        the window as markers.
        """
        workload = self.get_object()
        window = request.query_params.get("window", metrics_history.DEFAULT_WINDOW)
        try:
            found = metrics_history.history(workload=workload, window=window)
        except metrics_history.UnknownWindow:
            raise ValidationError({"window": [
                _("Unknown window; use one of: %(windows)s.")
                % {"windows": ", ".join(metrics_history.WINDOWS)}
            ]}) from None
        return Response(StatsHistorySerializer(found).data)


    @extend_schema(responses=HealthSerializer)
    @action(detail=True, methods=["get"], url_path="backup-health", url_name="backup-health")
    def backup_health(self, request, pk=None):
        """Whether the workload's backups run as its policy says: the last scheduled run, the
        last successful backup, the last offsite copy, the next run, `stale` and `failing`
        (docs/schedules.md, "Health")."""
        return Response(HealthSerializer(health.health(self.get_object())).data)


class DeployViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """One deploy, to follow after POST /api/workloads/{id}/deploy."""

    serializer_class = DeploySerializer
    permission_classes = [ActionPermission]
    action_permissions = {"retrieve": "workloads.view_workload", "log": "workloads.view_workload"}

    def get_queryset(self):
        return DeployRecord.objects.select_related("user", "pre_deploy_snapshot")

    @extend_schema(responses={200: DeployLogSerializer, 404: None})
    @action(detail=True, methods=["get"])
    def log(self, request, pk=None):
        """A git deploy's build log (its bounded tail), growing while the build runs.

        404 for a deploy without one (an image deploy, or one not started yet).
        """
        record = self.get_object()
        try:
            log = DeployLog.objects.select_related("deploy").get(deploy=record)
        except DeployLog.DoesNotExist:
            raise Http404 from None
        return Response(DeployLogSerializer(log).data)
