"""The API's projects and stages: the two levels above a workload.

Deleting one that still has workloads is refused with 409: a workload's
removal goes through the engine (its containers first), never by cascade.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets

from web.api.errors import Conflict
from web.api.permissions import ActionPermission
from web.api.strict import StrictTypes
from workloads import edits
from workloads.models import Project, Stage

CRUD = ("list", "retrieve", "create", "partial_update", "destroy")


def _permissions(model: str) -> dict[str, str]:
    verbs = {"list": "view", "retrieve": "view", "create": "add", "partial_update": "change",
             "destroy": "delete"}
    return {action: f"workloads.{verbs[action]}_{model}" for action in CRUD}


def _kept_in_place(check) -> None:
    try:
        check()
    except DjangoValidationError as exc:
        raise serializers.ValidationError(exc.message_dict) from None


class StageSerializer(StrictTypes, serializers.ModelSerializer):
    project = serializers.PrimaryKeyRelatedField(queryset=Project.objects.all())
    project_slug = serializers.CharField(source="project.slug", read_only=True)

    class Meta:
        model = Stage
        fields = ["id", "project", "project_slug", "name", "slug", "created"]
        read_only_fields = ["id", "created"]

    def validate(self, attrs):
        if self.instance is not None:
            project = attrs.get("project", self.instance.project)
            _kept_in_place(lambda: self.instance.check_kept_in_place(
                project_id=project.pk, slug=attrs.get("slug", self.instance.slug)))
        return attrs


class ProjectSerializer(StrictTypes, serializers.ModelSerializer):
    stages = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = ["id", "name", "slug", "created", "stages"]
        read_only_fields = ["id", "created", "stages"]

    def validate(self, attrs):
        if self.instance is not None:
            _kept_in_place(lambda: self.instance.check_kept_in_place(
                attrs.get("slug", self.instance.slug)))
        return attrs

    def get_stages(self, project: Project) -> list[int]:
        return [stage.pk for stage in project.stages.all()]  # prefetched


class ProjectViewSet(viewsets.ModelViewSet):
    serializer_class = ProjectSerializer
    permission_classes = [ActionPermission]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    action_permissions = _permissions("project")

    def get_queryset(self):
        return Project.objects.prefetch_related("stages")

    @extend_schema(responses={204: None, 409: None})
    def destroy(self, request, *args, **kwargs):
        """Delete an empty project and its stages; 409 while it has workloads."""
        return super().destroy(request, *args, **kwargs)

    def perform_destroy(self, project: Project) -> None:
        try:
            edits.delete_project(project)
        except edits.StillInUse as exc:
            raise Conflict(str(exc)) from None


class StageViewSet(viewsets.ModelViewSet):
    serializer_class = StageSerializer
    permission_classes = [ActionPermission]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    action_permissions = _permissions("stage")

    def get_queryset(self):
        return Stage.objects.select_related("project")

    @extend_schema(responses={204: None, 409: None})
    def destroy(self, request, *args, **kwargs):
        """Delete an empty stage; 409 while it has workloads."""
        return super().destroy(request, *args, **kwargs)

    def perform_destroy(self, stage: Stage) -> None:
        try:
            edits.delete_stage(stage)
        except edits.StillInUse as exc:
            raise Conflict(str(exc)) from None
