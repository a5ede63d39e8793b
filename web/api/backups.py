"""The DRF API of backup targets (secrets write-only, and the check) and copy rules."""

from __future__ import annotations

import copy

from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from backups.models import BackupTarget, CopyKind, CopyRule, SnapshotCopy
from engine import backups
from lib import agecrypt
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
                  "keep_manual", "keep_pre_deploy", "keep_pre_restore", "keep_scheduled",
                  "keep_imported", "checked", "check_code"]
        read_only_fields = ["checked", "check_code"]

    has_secret_access_key = serializers.BooleanField(read_only=True)
    has_identity = serializers.BooleanField(read_only=True)

    def validate_identity(self, value: str) -> str:
        if value:
            try:
                agecrypt.parse_identities(value)
            except agecrypt.AgeError as exc:
                raise serializers.ValidationError(str(exc)) from None
        return value

    def validate(self, attrs: dict) -> dict:
        secret = attrs.pop("secret_access_key", None)
        identity = attrs.pop("identity", None)
        # The target as this request loaded it, once: "moved" and "changed" are measured
        # against what this edit saw, whatever another edit committed meanwhile.
        previous = copy.copy(self.instance) if self.instance else None
        target = self.instance or BackupTarget()
        for field, value in attrs.items():
            setattr(target, field, value)
        if secret:
            target.set_secret_access_key(secret)
        if identity is not None:
            target.set_identity(identity)
        target.settle_change(previous, new_secret=bool(secret))
        if target.kind == BackupTarget.Kind.S3 and not target.has_secret_access_key:
            raise serializers.ValidationError(
                {"secret_access_key": [_("An S3 target needs a secret access key.")]})
        target.full_clean(validate_unique=False)
        self._prepared, self._previous = target, previous
        return attrs

    def create(self, validated_data: dict) -> BackupTarget:
        self._prepared.save()
        return self._prepared

    def update(self, instance: BackupTarget, validated_data: dict) -> BackupTarget:
        # Only what this request changed: a check recorded meanwhile is not overwritten.
        changed = [f.attname for f in BackupTarget._meta.concrete_fields
                   if getattr(self._prepared, f.attname) != getattr(self._previous, f.attname)]
        if changed:
            self._prepared.save(update_fields=changed)
        return self._prepared


class SnapshotCopySerializer(serializers.ModelSerializer):
    target_name = serializers.CharField(source="target.name", read_only=True)
    failure_message = serializers.CharField(read_only=True)
    progress = serializers.IntegerField(source="progress_percent", read_only=True)

    class Meta:
        model = SnapshotCopy
        fields = ["id", "snapshot", "target", "target_name", "kind", "state", "remote_key",
                  "encrypted", "size", "sha256", "attempts", "progress", "failure_code",
                  "failure_message", "created", "started", "finished", "removed"]
        read_only_fields = fields


class CopyRequestSerializer(serializers.Serializer):
    target = serializers.PrimaryKeyRelatedField(queryset=BackupTarget.objects.all())


class CopyRuleSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:copy-rule-detail")
    target_name = serializers.CharField(source="target.name", read_only=True)
    kinds = serializers.ListField(child=serializers.ChoiceField(choices=CopyKind.choices),
                                  allow_empty=False)

    class Meta:
        model = CopyRule
        fields = ["id", "url", "project", "workload", "target", "target_name", "kinds",
                  "created"]
        read_only_fields = ["created"]

    def validate(self, attrs: dict) -> dict:
        # The model says what a rule may be (one owner, one rule per owner and target).
        rule = copy.copy(self.instance) if self.instance else CopyRule()
        for field, value in attrs.items():
            setattr(rule, field, value)
        rule.full_clean()
        attrs["kinds"] = rule.kinds
        return attrs


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


class CopyRuleViewSet(viewsets.ModelViewSet):
    """Which snapshots go to which target: a workload's rules, or its project's default.

    `?workload=ID` or `?project=ID` lists one owner's rules.
    """

    serializer_class = CopyRuleSerializer
    permission_classes = [ActionPermission]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    action_permissions = {
        "list": "backups.view_copyrule",
        "retrieve": "backups.view_copyrule",
        "create": "backups.add_copyrule",
        "partial_update": "backups.change_copyrule",
        "destroy": "backups.delete_copyrule",
    }

    def get_queryset(self):
        rules = CopyRule.objects.select_related("target")
        for owner in ("workload", "project"):
            wanted = self.request.query_params.get(owner)
            if wanted is not None:
                if not wanted.isdigit():
                    raise serializers.ValidationError({owner: [_("Give an id.")]})
                rules = rules.filter(**{f"{owner}_id": int(wanted)})
        return rules
