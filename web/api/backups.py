"""The DRF API of backup targets: secrets write-only, and the check."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from backups import edits
from backups.models import BackupTarget, SnapshotCopy
from engine import backups
from web.api.permissions import ActionPermission


class BackupTargetSerializer(serializers.ModelSerializer):
    secret_access_key = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False,
        help_text=_("Write-only; leave out to keep the stored one."),
    )
    identity = serializers.CharField(
        write_only=True, required=False, allow_blank=True,
        help_text=_("An age identity to store (encrypted); \"\" forgets the stored one. "
                    "Write-only."),
    )
    url = serializers.HyperlinkedIdentityField(view_name="api:backup-target-detail")

    class Meta:
        model = BackupTarget
        fields = ["id", "url", "name", "kind", "endpoint_url", "region", "bucket", "prefix",
                  "access_key_id", "secret_access_key", "has_secret_access_key", "path_style",
                  "directory", "recipients", "unencrypted", "identity", "has_identity",
                  "checked", "check_code"]
        read_only_fields = ["checked", "check_code"]

    has_secret_access_key = serializers.BooleanField(read_only=True)
    has_identity = serializers.BooleanField(read_only=True)

    def validate_identity(self, value: str) -> str:
        edits.validate_identity(value)
        return value

    def validate(self, attrs: dict) -> dict:
        secret = attrs.pop("secret_access_key", "")
        identity = attrs.pop("identity", None)
        edit = edits.TargetEdit(self.instance)
        for field, value in attrs.items():
            setattr(edit.target, field, value)
        edit.give_secrets(secret_access_key=secret, identity=identity)
        edit.settle()
        edit.target.full_clean(validate_unique=False)
        self._edit = edit
        return attrs

    def create(self, validated_data: dict) -> BackupTarget:
        return self._edit.save()

    def update(self, instance: BackupTarget, validated_data: dict) -> BackupTarget:
        return self._edit.save()


class SnapshotCopySerializer(serializers.ModelSerializer):
    target_name = serializers.CharField(source="target.name", read_only=True)
    failure_message = serializers.CharField(read_only=True)
    progress = serializers.IntegerField(source="progress_percent", read_only=True)

    class Meta:
        model = SnapshotCopy
        fields = ["id", "snapshot", "target", "target_name", "state", "remote_key", "encrypted",
                  "size", "sha256", "attempts", "progress", "failure_code", "failure_message",
                  "created", "started", "finished"]
        read_only_fields = fields


class CopyRequestSerializer(serializers.Serializer):
    target = serializers.PrimaryKeyRelatedField(queryset=BackupTarget.objects.all())


CheckSerializer = inline_serializer("BackupTargetCheck", {
    "ok": serializers.BooleanField(),
    "code": serializers.CharField(),
    "message": serializers.CharField(),
})


class BackupTargetViewSet(viewsets.ModelViewSet):
    queryset = BackupTarget.objects.all()
    serializer_class = BackupTargetSerializer
    permission_classes = [ActionPermission]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    action_permissions = {
        "list": "backups.view_backuptarget",
        "retrieve": "backups.view_backuptarget",
        "create": "backups.add_backuptarget",
        "partial_update": "backups.change_backuptarget",
        "destroy": "backups.delete_backuptarget",
        "check": "backups.change_backuptarget",
    }

    @extend_schema(request=None, responses={200: CheckSerializer})
    @action(detail=True, methods=["post"])
    def check(self, request, pk=None):
        """Write a probe object, read it back and delete it; says which step failed."""
        result = backups.check_target(self.get_object())
        return Response({"ok": result.ok, "code": result.code, "message": result.message})
