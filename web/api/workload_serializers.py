"""API representations. Secrets are write-only: accepted, stored encrypted, never returned."""

from __future__ import annotations

from datetime import UTC

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.urls import reverse
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied

from engine import images
from lib import giturls
from web.api.strict import StrictTypes
from workloads import edits
from workloads.models import (
    Container,
    DeployLog,
    DeployRecord,
    EnvVar,
    PortMapping,
    RegistryCredential,
    Stage,
    VolumeMount,
    Workload,
    live_summary,
)


class ReplacedListSerializer(serializers.ListSerializer):
    """A nested list that a write replaces wholesale.

    Each item is validated as a complete row, even inside a PATCH: DRF would
    otherwise let the parent's partial mode skip an item's required fields
    and defaults, and a half item would reach the database.
    """

    def run_child_validation(self, data):
        child = type(self.child)(data=data, context=self.context)
        if not child.is_valid():
            raise serializers.ValidationError(child.errors)
        return child.validated_data


class VolumeSerializer(StrictTypes, serializers.ModelSerializer):
    host_path = serializers.SerializerMethodField()

    class Meta:
        model = VolumeMount
        fields = ["id", "scope", "source", "target", "read_only", "host_path"]
        read_only_fields = ["id", "host_path"]
        list_serializer_class = ReplacedListSerializer

    def get_host_path(self, volume: VolumeMount) -> str | None:
        try:
            return volume.host_path()
        except DjangoValidationError:
            return None  # Escapes its base (e.g. a planted symlink); deploys refuse it.

    def validate(self, attrs):
        # The model's rules, on a row with the model's defaults (scope) filled in.
        try:
            VolumeMount(**attrs).clean()
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        return attrs


class EnvVarSerializer(StrictTypes, serializers.ModelSerializer):
    # null keeps a stored secret of the same name: a client can PATCH back the
    # list it read (where secrets come back as null) without knowing them.
    # Read back too: a plain value as stored, a secret's as null (to_representation).
    value = serializers.CharField(
        allow_blank=True, allow_null=True, trim_whitespace=False,
        help_text="The value; null when read for a secret, and null sent back keeps a stored "
                  "secret.",
    )

    class Meta:
        model = EnvVar
        fields = ["id", "name", "value", "is_secret"]
        read_only_fields = ["id"]
        list_serializer_class = ReplacedListSerializer

    def to_representation(self, env: EnvVar) -> dict:
        data = super().to_representation(env)
        # A secret's value is never shown back; a plain value is.
        data["value"] = None if env.is_secret else env.value
        return data


class PortSerializer(StrictTypes, serializers.ModelSerializer):
    class Meta:
        model = PortMapping
        fields = ["id", "host_ip", "host_port", "container_port", "protocol"]
        read_only_fields = ["id"]
        list_serializer_class = ReplacedListSerializer
        # A workload keeps its own host ports when its list is replaced, which a
        # per-item unique validator cannot tell apart from a clash;
        # WorkloadSerializer checks the host ports against other workloads.
        validators: list = []


# The model fields that make up a workload's source, checked together by Workload.clean().
SOURCE_FIELDS = (
    "source_kind", "image", "git_url", "git_ref", "git_dockerfile", "git_context", "build_args",
)
# The backup hooks' fields, checked by Workload.clean() too.
HOOK_FIELDS = ("pre_backup_hook", "post_backup_hook", "backup_hook_timeout", "pre_hook_failure")


@extend_schema_field({
    "type": "object",
    "additionalProperties": {"type": "string", "maxLength": giturls.MAX_BUILD_ARG_LENGTH},
    "maxProperties": giturls.MAX_BUILD_ARGS,
    "description": "Names (letters, digits and underscores, not starting with a digit) and "
                   "text values. Not for secrets: build arguments are kept in the image's "
                   "history.",
})
class BuildArgsField(serializers.JSONField):
    """A git workload's build arguments: an object of names and text values (the model's
    validation says which names)."""


class LiveStateSerializer(serializers.Serializer):
    """A workload's live state, derived from its containers (docs/concepts.md, "Live state")."""

    state = serializers.CharField()
    label = serializers.CharField()
    detail = serializers.CharField()
    replicas = serializers.IntegerField()
    up = serializers.IntegerField()
    exit_code = serializers.IntegerField(allow_null=True)
    oom_killed = serializers.BooleanField()
    restart_count = serializers.IntegerField()
    since = serializers.DateTimeField(allow_null=True)


class WorkloadSerializer(StrictTypes, serializers.ModelSerializer):
    stage = serializers.PrimaryKeyRelatedField(queryset=Stage.objects.select_related("project"))
    # The repository credential is write-only: accepted here (or inside
    # git_url, from which it is taken out), stored encrypted, never returned.
    # A part left out of a write keeps its stored value; both parts sent
    # empty remove the credential.
    git_username = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False, max_length=255
    )
    git_password = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False, max_length=4096
    )
    has_git_credential = serializers.BooleanField(read_only=True)
    repository_web_url = serializers.CharField(read_only=True, allow_null=True)
    running_commit = serializers.CharField(read_only=True)
    running_commit_url = serializers.CharField(read_only=True, allow_null=True)
    build_args = BuildArgsField(required=False)
    registry_credential = serializers.PrimaryKeyRelatedField(
        queryset=RegistryCredential.objects.all(), allow_null=True, required=False
    )
    volumes = VolumeSerializer(many=True, required=False)
    env = EnvVarSerializer(many=True, required=False, source="env_vars")
    ports = PortSerializer(many=True, required=False)
    project_slug = serializers.CharField(source="stage.project.slug", read_only=True)
    stage_slug = serializers.CharField(source="stage.slug", read_only=True)
    url = serializers.SerializerMethodField()
    live = serializers.SerializerMethodField()

    class Meta:
        model = Workload
        fields = [
            "id", "url", "name", "slug", "stage", "project_slug", "stage_slug",
            "source_kind", "image", "registry_credential",
            "git_url", "git_ref", "git_dockerfile", "git_context", "build_args",
            "git_username", "git_password", "has_git_credential", "repository_web_url",
            "replicas", "state", "running_reference", "running_commit", "running_commit_url",
            "deployed_at", "created", "snapshot_consistency", "auto_backup_before_deploy",
            *HOOK_FIELDS, *Workload.HEALTH_FIELDS, "volumes", "env", "ports", "memory_limit_mib",
            "live",
        ]
        read_only_fields = ["id", "state", "running_reference", "deployed_at", "created"]
        # validate() checks the slug within its stage, so the error names the
        # slug field instead of DRF's generic non-field "unique set" message.
        validators: list = []

    def get_url(self, workload: Workload) -> str:
        return reverse("api:workload-detail", args=[workload.pk])

    @extend_schema_field(LiveStateSerializer)
    def get_live(self, workload: Workload) -> dict:
        return LiveStateSerializer(live_summary(workload)).data

    def _refuse_hooks_without_permission(self, attrs) -> None:
        """A hook is a command run inside the workload's containers, with its secrets: setting
        one takes the permission to deploy (what else runs code there), not only to edit."""
        request = self.context.get("request")
        changed = [name for name in HOOK_FIELDS if name in attrs and attrs[name] != (
            getattr(self.instance, name) if self.instance is not None
            else Workload._meta.get_field(name).get_default())]
        if changed and request is not None \
                and not request.user.has_perm(Workload.HOOK_PERMISSION):
            raise PermissionDenied(_("Setting a backup hook needs the permission to deploy "
                                     "workloads: a hook runs inside the containers."))

    def validate(self, attrs):
        self._refuse_hooks_without_permission(attrs)
        stage = attrs.get("stage") or getattr(self.instance, "stage", None)
        slug = attrs.get("slug") or getattr(self.instance, "slug", None)
        clash = Workload.objects.filter(stage=stage, slug=slug)
        if self.instance is not None:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            raise serializers.ValidationError(
                {"slug": _("This stage already has a workload with this slug.")}
            )
        self._check_credential_use(attrs)
        self._settle_git_credential(attrs)
        # The model's own rules (source kind, image and its registry's
        # credential, git settings) apply here too.
        candidate = Workload()
        for name in (*SOURCE_FIELDS, *HOOK_FIELDS, "registry_credential",
                     "git_credential_encrypted"):
            if self.instance is not None:
                setattr(candidate, name, getattr(self.instance, name))
        for name in (*SOURCE_FIELDS, *HOOK_FIELDS, "registry_credential"):
            if name in attrs:
                setattr(candidate, name, attrs[name])
        if "git_credential" in attrs:
            candidate.set_git_credential(*attrs["git_credential"])
        try:
            candidate.clean()
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        for name in HOOK_FIELDS:  # clean() may have normalised them (a blank command)
            if name in attrs:
                attrs[name] = getattr(candidate, name)
        replicas = attrs.get("replicas", getattr(self.instance, "replicas", 1))
        ports = attrs.get("ports")
        if ports is None and self.instance is not None:
            ports = list(self.instance.ports.all())
        workload = Workload(pk=getattr(self.instance, "pk", None), stage=stage)
        # The same rules as the pages' forms (workloads/edits.py), on what this write changes.
        try:
            edits.check_replicas(replicas, ports or [])
            if attrs.get("volumes") is not None:
                edits.check_unique([v["target"] for v in attrs["volumes"]], key="target",
                                   field="volumes")
            self._check_volume_paths(attrs, workload)
            if attrs.get("env_vars") is not None:
                edits.check_unique([e["name"] for e in attrs["env_vars"]], key="name",
                                   field="env")
            self._check_kept_secrets(attrs.get("env_vars"))
            if attrs.get("ports"):
                edits.check_host_ports(workload, [PortMapping(**item) for item in attrs["ports"]])
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        return attrs

    def _settle_git_credential(self, attrs) -> None:
        """Take a credential out of git_url, merge the write-only fields, and put the
        result in attrs["git_credential"] (username, password) when it changes."""
        username = attrs.pop("git_username", None)
        password = attrs.pop("git_password", None)
        url_credential = None
        if "git_url" in attrs:
            split = giturls.split_credential(attrs["git_url"])
            attrs["git_url"] = split.url
            if split.had_credential:
                url_credential = (split.username, split.password)
        workload = self.instance or Workload()
        credential = workload.git_credential_after_edit(
            url=attrs.get("git_url", workload.git_url), url_credential=url_credential,
            username=username, password=password,
        )
        if credential is not None:
            attrs["git_credential"] = credential

    def _check_volume_paths(self, attrs, workload: Workload) -> None:
        """Each volume's host path is allowed and overlaps no other volume."""
        if "volumes" not in attrs and "stage" not in attrs:
            return
        if "volumes" in attrs:
            volumes = [VolumeMount(**item) for item in attrs["volumes"]]
        else:
            volumes = list(self.instance.volumes.all()) if self.instance else []
        edits.check_volumes(workload, volumes)

    def _check_credential_use(self, attrs) -> None:
        if "registry_credential" not in attrs:
            return
        try:
            edits.check_credential_use(
                self.context["request"].user,
                current=getattr(self.instance, "registry_credential", None),
                new=attrs["registry_credential"],
            )
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None

    def _check_kept_secrets(self, items) -> None:
        """A null value is only allowed for a secret this workload already stores."""
        stored = set()
        if self.instance is not None:
            stored = set(
                self.instance.env_vars.filter(is_secret=True).values_list("name", flat=True)
            )
        for item in items or []:
            if item["value"] is None and not (item.get("is_secret") and item["name"] in stored):
                raise serializers.ValidationError(
                    {"env": _("%(name)s needs a value; only a stored secret may be sent as null.")
                     % {"name": item["name"]}}
                )

    @transaction.atomic
    def create(self, validated_data) -> Workload:
        children = self._pop_children(validated_data)
        credential = validated_data.pop("git_credential", None)
        workload = Workload(**validated_data)
        if credential is not None:
            workload.set_git_credential(*credential)
        workload.save()
        self._write_children(workload, children)
        return workload

    @transaction.atomic
    def update(self, workload: Workload, validated_data) -> Workload:
        children = self._pop_children(validated_data)
        credential = validated_data.pop("git_credential", None)
        for key, value in validated_data.items():
            setattr(workload, key, value)
        if credential is not None:
            workload.set_git_credential(*credential)
        workload.save()
        self._write_children(workload, children)
        return workload

    @staticmethod
    def _pop_children(validated_data) -> dict:
        return {
            key: validated_data.pop(key)
            for key in ("volumes", "env_vars", "ports")
            if key in validated_data
        }

    @staticmethod
    def _write_children(workload: Workload, children: dict) -> None:
        """Replace each given list wholesale; a list left out of a PATCH is kept."""
        if "volumes" in children:
            workload.volumes.all().delete()
            VolumeMount.objects.bulk_create(
                VolumeMount(workload=workload, **item) for item in children["volumes"]
            )
        if "env_vars" in children:
            kept = dict(
                workload.env_vars.filter(is_secret=True).values_list("name", "secret_encrypted")
            )
            workload.env_vars.all().delete()
            for item in children["env_vars"]:
                env = EnvVar(workload=workload, name=item["name"])
                if item["value"] is None:  # validated: a stored secret, kept as it is
                    env.is_secret, env.secret_encrypted = True, kept[item["name"]]
                else:
                    env.set_value(item["value"], secret=item.get("is_secret", False))
                env.save()
        if "ports" in children:
            workload.ports.all().delete()
            PortMapping.objects.bulk_create(
                PortMapping(workload=workload, **item) for item in children["ports"]
            )



class WorkloadDetailSerializer(WorkloadSerializer):
    """One workload (retrieve): also the disk its images take in the engine."""

    image_bytes = serializers.SerializerMethodField(
        help_text="Bytes of the engine's images this workload built or pulled (a layer two "
                  "images share counts in both); null when the engine cannot be asked.")

    class Meta(WorkloadSerializer.Meta):
        fields = [*WorkloadSerializer.Meta.fields, "image_bytes"]
        read_only_fields = [*WorkloadSerializer.Meta.read_only_fields, "image_bytes"]

    def get_image_bytes(self, workload: Workload) -> int | None:
        return images.workload_image_bytes(workload=workload)

class ContainerSerializer(serializers.ModelSerializer):
    class Meta:
        model = Container
        fields = [
            "id", "docker_id", "name", "replica", "image_reference", "created", "removed",
            "state", "exit_code", "oom_killed", "restart_count", "health", "state_since",
        ]



class DeploySerializer(serializers.ModelSerializer):
    user = serializers.CharField(source="user.get_username", read_only=True, default=None,
                                 allow_null=True)
    failure_message = serializers.CharField(read_only=True)
    duration_seconds = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    commit = serializers.CharField(read_only=True)
    commit_url = serializers.CharField(read_only=True, allow_null=True)
    build_log_url = serializers.SerializerMethodField()
    pre_deploy_snapshot = serializers.SerializerMethodField()
    backup_failure_message = serializers.CharField(read_only=True)
    configuration_recorded = serializers.BooleanField(read_only=True)

    class Meta:
        model = DeployRecord
        fields = [
            "id", "url", "workload", "reason", "source_kind", "requested_reference",
            "pinned_reference", "repository", "commit", "commit_url", "image_id",
            "rolled_back_from", "outcome", "failure_code", "failure_message", "user",
            "created", "started", "finished", "duration_seconds", "build_log_url",
            "pre_deploy_snapshot", "backup_failure", "backup_failure_message",
            "exit_code", "rollback_restored", "configuration_recorded",
        ]

    def get_build_log_url(self, record: DeployRecord) -> str | None:
        if not record.is_git:
            return None
        return reverse("api:deploy-log", args=[record.pk])

    def get_pre_deploy_snapshot(self, record: DeployRecord) -> int | None:
        """The snapshot taken before this deploy (select_related it: one query less per row)."""
        try:
            return record.pre_deploy_snapshot.pk
        except ObjectDoesNotExist:
            return None

    def get_duration_seconds(self, record: DeployRecord) -> float | None:
        return record.duration.total_seconds() if record.duration else None

    def get_url(self, record: DeployRecord) -> str:
        return reverse("api:deploy-detail", args=[record.pk])


class DeployLogSerializer(serializers.ModelSerializer):
    deploy = serializers.IntegerField(source="deploy_id", read_only=True)
    finished = serializers.BooleanField(source="deploy.is_finished", read_only=True)

    class Meta:
        model = DeployLog
        fields = ["deploy", "finished", "text", "truncated", "failed_step", "updated"]


class RollbackSerializer(StrictTypes, serializers.Serializer):
    deploy_id = serializers.IntegerField(min_value=1)
    configuration = serializers.BooleanField(
        default=True,
        help_text="Set the configuration (settings, env, ports, volumes) and the configured "
                  "image or ref back to what the deploy ran; false rolls back the code only.",
    )
    secrets = serializers.DictField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False, max_length=65536),
        required=False, write_only=True,
        help_text="Values by name for secret variables whose kept value is gone.",
    )
    data = serializers.BooleanField(
        default=False,
        help_text="Also put back the data as it was just before that deploy ran (its "
                  "pre-deploy snapshot): needs the restore permission and the X-Confirm-Restore "
                  "header, and answers with the restore job.",
    )


class ChangeSerializer(serializers.Serializer):
    """One difference a rollback makes (workloads/configuration.Change); a secret's values are
    never shown, only that it changes."""

    part = serializers.ChoiceField(choices=["setting", "env", "port", "volume"])
    name = serializers.CharField()
    label = serializers.CharField()
    change = serializers.ChoiceField(choices=["added", "removed", "changed"])
    secret = serializers.BooleanField()
    current = serializers.JSONField(allow_null=True)
    target = serializers.JSONField(allow_null=True)


class RollbackDiffSerializer(serializers.Serializer):
    """What a rollback to a deploy changes (engine.rollbacks.Preview)."""

    deploy = serializers.IntegerField(source="target.pk")
    configuration_recorded = serializers.BooleanField(source="recorded")
    configured = serializers.CharField(help_text="The image reference or git ref configured now.")
    running = serializers.CharField(help_text="What the containers run now.")
    code = serializers.CharField(help_text="What the deploy ran, which the rollback runs.")
    configures = serializers.CharField(
        help_text="The image reference (a digest) or git ref (a commit) a rollback with "
                  "configuration configures.")
    code_changes = serializers.BooleanField()
    changes = ChangeSerializer(many=True)
    missing_secrets = serializers.ListField(
        child=serializers.CharField(),
        help_text="Secret variables whose kept value is gone: supply them in `secrets`.")
    pre_deploy_snapshot = serializers.IntegerField(source="snapshot.pk", allow_null=True,
                                                   default=None)
    snapshot_taken = serializers.DateTimeField(allow_null=True)
    snapshot_age_seconds = serializers.SerializerMethodField()

    def get_snapshot_age_seconds(self, preview) -> int | None:
        return int(preview.snapshot_age.total_seconds()) if preview.snapshot_age else None


class StatsPointSerializer(serializers.Serializer):
    t = serializers.DateTimeField()
    cpu_percent = serializers.FloatField()
    memory_bytes = serializers.IntegerField()
    containers = serializers.IntegerField()

    def to_representation(self, point):
        # Up to ~1,000 points per response: the fields above document them, but
        # going through each field per point (DateTimeField's time zone work
        # above all) cost about 5 ms a response. A point's t is a UTC bucket
        # start, written as DRF writes UTC.
        return {
            "t": point.t.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "cpu_percent": point.cpu_percent,
            "memory_bytes": point.memory_bytes,
            "containers": point.containers,
        }


class StatsMarkerSerializer(serializers.Serializer):
    t = serializers.DateTimeField()
    kind = serializers.ChoiceField(choices=["deploy", "rollback", "restore"])
    outcome = serializers.ChoiceField(choices=DeployRecord.Outcome.choices)
    deploy = serializers.IntegerField()


class StatsHistorySerializer(serializers.Serializer):
    """A workload's stats history (workloads/metrics_history.History); read-only."""

    window = serializers.CharField()
    step_seconds = serializers.IntegerField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    points = StatsPointSerializer(many=True)
    markers = StatsMarkerSerializer(many=True)
