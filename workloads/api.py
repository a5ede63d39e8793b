"""The DRF API: workloads, their deploys and containers."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from workloads import deployer
from workloads.models import DeployRecord, Workload
from workloads.permissions import ActionPermission
from workloads.serializers import ContainerSerializer, DeploySerializer, WorkloadSerializer


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
    }

    def get_queryset(self):
        return Workload.objects.with_parents().prefetch_related("volumes", "env_vars", "ports")

    @extend_schema(request=None, responses={202: DeploySerializer})
    @action(detail=True, methods=["post"])
    def deploy(self, request, pk=None):
        """Queue a deploy; follow it at the returned deploy's `url`."""
        record = deployer.request_deploy(
            workload=self.get_object(), reason=DeployRecord.Reason.API, user=request.user
        )
        record.refresh_from_db()
        url = reverse("api:deploy-detail", args=[record.pk])
        data = DeploySerializer(record).data
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": url})

    @extend_schema(responses=ContainerSerializer(many=True))
    @action(detail=True, methods=["get"])
    def containers(self, request, pk=None):
        """The workload's live containers (add ?all=1 for removed ones too)."""
        workload = self.get_object()
        containers = workload.containers.all()
        if request.query_params.get("all") not in {"1", "true"}:
            containers = containers.live()
        page = self.paginate_queryset(containers)
        return self.get_paginated_response(ContainerSerializer(page, many=True).data)


class DeployViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """One deploy, to follow after POST /api/workloads/{id}/deploy."""

    serializer_class = DeploySerializer
    permission_classes = [ActionPermission]
    action_permissions = {"retrieve": "workloads.view_workload"}

    def get_queryset(self):
        return DeployRecord.objects.select_related("user")
