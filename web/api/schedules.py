"""The DRF API of backup policies, and a workload's backup health (docs/schedules.md)."""

from __future__ import annotations

import copy

from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, viewsets

from backups.models import BackupTarget
from backups.schedules import BackupPolicy
from web.api import filters
from web.api.permissions import ActionPermission
from web.api.strict import StrictTypes


class BackupPolicySerializer(StrictTypes, serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:backup-policy-detail")
    targets = serializers.PrimaryKeyRelatedField(queryset=BackupTarget.objects.all(),
                                                 many=True, required=False)
    next_run = serializers.SerializerMethodField()

    class Meta:
        model = BackupPolicy
        fields = ["id", "url", "project", "stage", "workload", "enabled", "every", "minute",
                  "at", "weekday", "cron", "time_zone", "targets", "keep_last", "keep_hourly",
                  "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "active_since",
                  "next_run", "created"]
        read_only_fields = ["active_since", "created"]

    def get_next_run(self, policy: BackupPolicy) -> str | None:
        upcoming = policy.upcoming()
        return serializers.DateTimeField().to_representation(upcoming) if upcoming else None

    def validate(self, attrs: dict) -> dict:
        if self.instance is not None:
            moved = [owner for owner in ("project", "stage", "workload")
                     if owner in attrs and attrs[owner] != getattr(self.instance, owner)]
            if moved:  # as in the pages: a policy keeps its owner
                raise serializers.ValidationError(
                    dict.fromkeys(moved, [_("A policy keeps its owner: add one for the other "
                                            "instead.")]))
        # The model says what a policy may be (one owner, a known zone, a valid cron).
        policy = copy.copy(self.instance) if self.instance else BackupPolicy()
        plain = {field: value for field, value in attrs.items() if field != "targets"}
        self._changed = [field for field, value in plain.items()
                         if getattr(policy, field) != value]
        for field, value in plain.items():
            setattr(policy, field, value)
        policy.full_clean()
        return attrs

    def update(self, instance: BackupPolicy, validated_data: dict) -> BackupPolicy:
        instance.reschedule(self._changed)  # a changed schedule never fires for the past
        return super().update(instance, validated_data)


@extend_schema_view(list=extend_schema(parameters=[
    filters.id_filter(owner, f"Only this {owner}'s own policy.")
    for owner in ("workload", "stage", "project")
]))
class BackupPolicyViewSet(viewsets.ModelViewSet):
    """When each workload's scheduled snapshots are taken, where they are copied and how long
    they stay: a policy belongs to one workload, stage or project.

    `?workload=ID`, `?stage=ID` or `?project=ID` lists one owner's policy.
    """

    serializer_class = BackupPolicySerializer
    permission_classes = [ActionPermission]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    action_permissions = {
        "list": "backups.view_backuppolicy",
        "retrieve": "backups.view_backuppolicy",
        "create": "backups.add_backuppolicy",
        "partial_update": "backups.change_backuppolicy",
        "destroy": "backups.delete_backuppolicy",
    }

    def get_queryset(self):
        policies = BackupPolicy.objects.prefetch_related("targets").order_by("pk")
        for owner in ("workload", "stage", "project"):
            wanted = filters.wanted_id(self.request, owner)
            if wanted is not None:
                policies = policies.filter(**{f"{owner}_id": wanted})
        return policies


class LastRunSerializer(serializers.Serializer):
    scheduled_for = serializers.DateTimeField()
    started = serializers.DateTimeField()
    late = serializers.BooleanField()
    missed = serializers.IntegerField()
    outcome = serializers.CharField()
    reason = serializers.CharField()
    snapshot = serializers.IntegerField(source="snapshot_id", allow_null=True)
    snapshot_state = serializers.CharField(source="snapshot.state", allow_null=True,
                                           default=None)


class LastBackupSerializer(serializers.Serializer):
    snapshot = serializers.IntegerField(source="pk")
    kind = serializers.CharField()
    imported = serializers.BooleanField()
    created = serializers.DateTimeField()


class CopySummarySerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    snapshot = serializers.IntegerField(source="snapshot_id", allow_null=True)
    target = serializers.IntegerField(source="target_id")
    state = serializers.CharField()
    failure_code = serializers.CharField()
    finished = serializers.DateTimeField(allow_null=True)


class DrillSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField(source="pk")
    state = serializers.CharField()
    failure_code = serializers.CharField()
    finished = serializers.DateTimeField(allow_null=True)


class HealthSerializer(serializers.Serializer):
    """A workload's backup health (backups/health.py)."""

    policy = serializers.IntegerField(source="policy.pk", allow_null=True, default=None)
    follows = serializers.CharField(help_text=_("workload, stage, project, or empty."))
    last_run = LastRunSerializer(allow_null=True)
    last_backup = LastBackupSerializer(allow_null=True)
    last_copy = CopySummarySerializer(allow_null=True)
    last_verified_copy = CopySummarySerializer(allow_null=True)
    next_run = serializers.DateTimeField(allow_null=True)
    overdue = serializers.BooleanField()
    copy_failed = serializers.BooleanField()
    stale = serializers.BooleanField()
    failing = serializers.BooleanField()
    last_drill = DrillSummarySerializer(allow_null=True)
    drill_stale = serializers.BooleanField()
