"""The DRF API of backup targets (secrets write-only, the check), copy rules, the
catalogue of a target and recoveries from it."""

from __future__ import annotations

import copy

from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from backups import edits
from backups.models import (
    BackupRecovery,
    BackupTarget,
    CopyKind,
    CopyRule,
    RestoreDrill,
    SnapshotCopy,
)
from engine import backups, disaster, drills
from lib import agecrypt, offsite
from web.api import filters
from web.api.errors import (
    CONFIRM_HEADER,
    Conflict,
    InsufficientStorage,
    PreconditionRequired,
    TargetFailed,
)
from web.api.permissions import ActionPermission
from web.api.strict import StrictTypes
from workloads.models import Workload


class BackupTargetSerializer(StrictTypes, serializers.ModelSerializer):
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
        fields = ["id", "snapshot", "target", "target_name", "kind", "state", "remote_key",
                  "encrypted", "size", "sha256", "attempts", "progress", "failure_code",
                  "failure_message", "created", "started", "finished", "removed"]
        read_only_fields = fields


class CopyRequestSerializer(StrictTypes, serializers.Serializer):
    target = serializers.PrimaryKeyRelatedField(queryset=BackupTarget.objects.all())


class IdentitySerializer(StrictTypes, serializers.Serializer):
    identity = serializers.CharField(
        write_only=True, required=False, allow_blank=True, default="",
        help_text=_("The age identity to read an encrypted target with; leave out to use "
                    "the target's stored one."),
    )
    passphrase = serializers.CharField(
        write_only=True, required=False, allow_blank=True, default="", trim_whitespace=False,
        help_text=_("The target's passphrase, instead of (or beside) an identity."),
    )


class PassphraseSerializer(StrictTypes, serializers.Serializer):
    passphrase = serializers.CharField(write_only=True, trim_whitespace=False,
                                       help_text=_("At least 12 characters."))
    current = serializers.CharField(
        write_only=True, required=False, allow_blank=True, default="", trim_whitespace=False,
        help_text=_("The passphrase that seals the target's identity now, to change it."))


class RecoverySerializer(IdentitySerializer):
    key = serializers.CharField(max_length=1024, help_text=_("The copy's object name, as "
                                                             "the catalogue lists it."))
    workload = serializers.PrimaryKeyRelatedField(
        queryset=Workload.objects.all(), required=False, allow_null=True, default=None,
        help_text=_("Recover onto this existing workload instead of re-creating it."),
    )
    deploy = serializers.BooleanField(
        default=False,
        help_text=_("Deploy a re-created workload on the digest its sidecar recorded, once "
                    "restored. Review its definition in the catalogue first."),
    )


class EntrySerializer(serializers.Serializer):
    """A catalogue entry: the snapshot's summary and the workload's definition, without any
    secret value (env and build args by name)."""

    key = serializers.CharField()
    workload = serializers.CharField(source="workload_path")
    problem = serializers.CharField()
    snapshot = serializers.SerializerMethodField()
    definition = serializers.SerializerMethodField()

    def get_snapshot(self, entry) -> dict | None:
        return entry.described.snapshot if entry.described else None

    def get_definition(self, entry) -> dict | None:
        if entry.described is None:
            return None
        definition = dict(entry.described.workload)
        definition["env"] = [{"name": e["name"], "secret": e["secret"],
                              "value": None if e["secret"] else e["value"]}
                             for e in definition["env"]]
        definition["build_args"] = sorted(definition["build_args"])
        return definition


class BackupRecoverySerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:recovery-detail")
    target_name = serializers.CharField(source="target.name", read_only=True)
    progress = serializers.IntegerField(source="progress_percent", read_only=True)
    failure = serializers.CharField(source="failure_text", read_only=True)

    class Meta:
        model = BackupRecovery
        fields = ["id", "url", "target", "target_name", "remote_key", "into", "state",
                  "deploy_after", "progress", "snapshot", "restore", "deploy", "failure_code",
                  "failure", "created", "started", "finished"]
        read_only_fields = fields


class CopyRuleSerializer(StrictTypes, serializers.ModelSerializer):
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
        "passphrase": "backups.change_backuptarget",
        "catalogue": "backups.add_backuprecovery",
        "recover": "backups.add_backuprecovery",
    }

    @extend_schema(request=None, responses={200: CheckSerializer})
    @action(detail=True, methods=["post"])
    def check(self, request, pk=None):
        """Write a probe object, read it back and delete it; says which step failed."""
        result = backups.check_target(self.get_object())
        return Response({"ok": result.ok, "code": result.code, "message": result.message})

    @extend_schema(request=PassphraseSerializer,
                   responses={200: BackupTargetSerializer, 502: None})
    @action(detail=True, methods=["post"])
    def passphrase(self, request, pk=None):
        """Let a passphrase open the copies made from now on (docs/backups.md): Berth seals
        an identity of the target's own with it, stores that on the target as
        berth-identity.age, and encrypts every copy to its recipient too. Berth keeps
        neither the passphrase nor the identity. `current` changes the passphrase."""
        target = self.get_object()
        body = PassphraseSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            backups.set_passphrase(target=target, passphrase=body.validated_data["passphrase"],
                                   current=body.validated_data["current"])
        except agecrypt.AgeError as exc:
            raise exceptions.ValidationError({"passphrase": [str(exc)]}) from None
        except offsite.OffsiteError as exc:
            raise TargetFailed(detail={"detail": exc.message, "code": exc.code}) from None
        target.refresh_from_db()
        return Response(BackupTargetSerializer(target, context={"request": request}).data)

    @extend_schema(request=IdentitySerializer,
                   responses={200: EntrySerializer(many=True), 409: None, 502: None, 507: None})
    @action(detail=True, methods=["post"], pagination_class=None)
    def catalogue(self, request, pk=None):
        """What the target holds, read from the copies' sidecars (no archive is downloaded).

        POST, since the body may carry the age `identity` (else the stored one is used).
        Secret values in the sidecars are never returned: names only.
        """
        target = self.get_object()
        body = IdentitySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            identities = disaster.identities_for(target, body.validated_data["identity"],
                                                 body.validated_data["passphrase"])
            entries = disaster.catalogue(target, identities)
        except disaster.RecoveryError as exc:
            raise _refusal(exc) from None
        except offsite.OffsiteError as exc:
            raise TargetFailed(detail={"detail": exc.message, "code": exc.code}) from None
        return Response(EntrySerializer(entries, many=True).data)

    @extend_schema(
        request=RecoverySerializer,
        parameters=[OpenApiParameter(
            CONFIRM_HEADER, OpenApiTypes.STR, OpenApiParameter.HEADER,
            description="With `workload`: that workload's path, project/stage/workload.")],
        responses={202: BackupRecoverySerializer, 409: None, 428: None, 502: None, 507: None})
    @action(detail=True, methods=["post"])
    def recover(self, request, pk=None):
        """Queue a recovery of the copy `key`: a new workload from its sidecar, or onto
        `workload` (then with the X-Confirm-Restore header: that workload's path,
        project/stage/workload).

        The sidecar is read at once, so a wrong identity or key is refused with 400.
        Follow the returned recovery's `url`.
        """
        target = self.get_object()
        body = RecoverySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        into = body.validated_data.get("workload")
        # What the recovery does to workloads needs the workloads' own permission too.
        if not request.user.has_perms(BackupRecovery.PERMISSIONS_ONTO if into is not None
                                      else BackupRecovery.PERMISSIONS_TO_CREATE):
            raise exceptions.PermissionDenied()
        if into is not None and request.headers.get(CONFIRM_HEADER) != into.path:
            raise PreconditionRequired(
                _("Confirm with the header %(header)s: %(path)s (the workload's path); its "
                  "volumes will be replaced by the backup's data.")
                % {"header": CONFIRM_HEADER, "path": into.path})
        try:
            row = disaster.request_recovery(target=target, key=body.validated_data["key"],
                                            identity=body.validated_data["identity"],
                                            passphrase=body.validated_data["passphrase"],
                                            into=into, user=request.user,
                                            deploy=body.validated_data["deploy"])
        except disaster.RecoveryError as exc:
            raise _refusal(exc) from None
        except offsite.OffsiteError as exc:
            raise TargetFailed(detail={"detail": exc.message, "code": exc.code}) from None
        row.refresh_from_db()
        return Response(BackupRecoverySerializer(row, context={"request": request}).data,
                        status=status.HTTP_202_ACCEPTED,
                        headers={"Location": reverse("api:recovery-detail", args=[row.pk])})


class BackupRecoveryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin,
                            viewsets.GenericViewSet):
    """Recoveries from backup targets, newest first."""

    queryset = BackupRecovery.objects.select_related("target")
    serializer_class = BackupRecoverySerializer
    permission_classes = [ActionPermission]
    action_permissions = {"list": "backups.view_backuprecovery",
                          "retrieve": "backups.view_backuprecovery"}


def _refusal(exc: disaster.RecoveryError) -> exceptions.APIException:
    body = {"detail": str(exc), "code": exc.code}
    if exc.code in ("exists", "busy"):
        return Conflict(detail=body)
    if exc.code == "no_space":
        return InsufficientStorage(detail=body)
    if exc.code in offsite.OffsiteError.messages and exc.code not in ("not_found", "mismatch"):
        return TargetFailed(detail=body)
    return exceptions.ValidationError(detail=body)


@extend_schema_view(list=extend_schema(parameters=[
    filters.id_filter("workload", "Only this workload's rules."),
    filters.id_filter("project", "Only this project's default rules."),
]))
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
            wanted = filters.wanted_id(self.request, owner)
            if wanted is not None:
                rules = rules.filter(**{f"{owner}_id": wanted})
        return rules


class RestoreDrillSerializer(serializers.ModelSerializer):
    failure = serializers.CharField(source="failure_text", read_only=True)
    progress = serializers.IntegerField(source="progress_percent", read_only=True)

    class Meta:
        model = RestoreDrill
        fields = ["id", "copy", "workload", "target", "remote_key", "state", "progress",
                  "files", "failure_code", "failure", "created", "started", "finished"]
        read_only_fields = [f for f in fields if f != "copy"]


class DrillRequestSerializer(StrictTypes, serializers.Serializer):
    copy = serializers.PrimaryKeyRelatedField(
        queryset=SnapshotCopy.objects.all(),
        error_messages={"does_not_exist": _("Give the id of a snapshot copy."),
                        "incorrect_type": _("Give the id of a snapshot copy.")},
        help_text=_("The verified copy to drill."))


class RestoreDrillViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin,
                          mixins.CreateModelMixin, viewsets.GenericViewSet):
    """Restore drills, newest first; POST `{"copy": id}` drills a verified copy."""

    queryset = RestoreDrill.objects.all()
    serializer_class = RestoreDrillSerializer
    permission_classes = [ActionPermission]
    action_permissions = {"list": "backups.view_restoredrill",
                          "retrieve": "backups.view_restoredrill",
                          "create": "backups.add_restoredrill"}

    @extend_schema(request=DrillRequestSerializer,
                   responses={202: RestoreDrillSerializer, 409: None})
    def create(self, request, *args, **kwargs):
        body = DrillRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            row = drills.request_drill(copy=body.validated_data["copy"], user=request.user)
        except drills.DrillRefused as exc:
            raise Conflict(str(exc.message)) from None
        row.refresh_from_db()
        return Response(RestoreDrillSerializer(row).data, status=status.HTTP_202_ACCEPTED,
                        headers={"Location": reverse("api:drill-detail", args=[row.pk])})
