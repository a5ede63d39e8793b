"""The pages' forms for projects, stages and workloads, with the API's rules.

A workload is one form and three formsets (env, ports, volumes), checked
together by workloads.edits, the functions the API's serializer calls too.
Secret values are write-only (web.admin.forms.EnvVarForm): never rendered
back, kept when left empty.
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.db import transaction
from django.forms.models import inlineformset_factory

from web.admin.forms import EnvVarForm, WorkloadForm
from workloads import edits
from workloads.models import (
    EnvVar,
    PortMapping,
    Project,
    RegistryCredential,
    Stage,
    VolumeMount,
    Workload,
)

# A blank row under each list; "Add a row" (static/js/rows.js) adds more.
EXTRA_ROWS = 1


class ProjectForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = ["name", "slug"]


class StageForm(forms.ModelForm):
    class Meta:
        model = Stage
        fields = ["project", "name", "slug"]


class WorkloadPageForm(WorkloadForm):
    """The admin's workload form (its write-only repository credential) without the hooks,
    which need the permission to deploy and stay in the admin and the API."""

    class Meta(WorkloadForm.Meta):
        fields = [
            "stage", "name", "slug", "source_kind", "image", "registry_credential",
            "git_url", "git_ref", "git_dockerfile", "git_context", "build_args", "replicas",
            "memory_limit_mib", "snapshot_consistency", "auto_backup_before_deploy",
            *Workload.HEALTH_FIELDS,
        ]
        widgets = {"build_args": forms.Textarea(attrs={"rows": 2})}

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["stage"].queryset = Stage.objects.select_related("project")
        self.fields["build_args"].required = False
        if not user.has_perm(edits.CREDENTIAL_PERMISSION):
            # Who may not attach credentials is shown none but the one already attached.
            self.fields["registry_credential"].queryset = RegistryCredential.objects.filter(
                pk=self.instance.registry_credential_id)

    def clean_build_args(self):
        # An emptied field means no build arguments, as in the API (never a NULL).
        return self.cleaned_data.get("build_args") or {}

    def clean_registry_credential(self):
        new = self.cleaned_data.get("registry_credential")
        current = self.instance.registry_credential if self.instance.registry_credential_id \
            else None
        try:
            edits.check_credential_use(self.user, current=current, new=new)
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["registry_credential"]) from None
        return new


class PortForm(forms.ModelForm):
    class Meta:
        model = PortMapping
        fields = ["host_ip", "host_port", "container_port", "protocol"]


class VolumeForm(forms.ModelForm):
    class Meta:
        model = VolumeMount
        fields = ["scope", "source", "target", "read_only"]


EnvFormSet = inlineformset_factory(Workload, EnvVar, form=EnvVarForm, extra=EXTRA_ROWS)
PortFormSet = inlineformset_factory(Workload, PortMapping, form=PortForm, extra=EXTRA_ROWS)
VolumeFormSet = inlineformset_factory(Workload, VolumeMount, form=VolumeForm, extra=EXTRA_ROWS)


def _kept(formset) -> list:
    """The rows a valid formset keeps: filled in and not marked for deletion."""
    return [form.instance for form in formset.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE")]


class WorkloadEditor:
    """A workload's form and its three lists, validated and saved as one edit."""

    def __init__(self, data, *, instance: Workload, user) -> None:
        self.form = WorkloadPageForm(data, instance=instance, user=user)
        self.env = EnvFormSet(data, instance=instance, prefix="env")
        self.ports = PortFormSet(data, instance=instance, prefix="ports")
        self.volumes = VolumeFormSet(data, instance=instance, prefix="volumes")
        # Errors of a whole list (a clash with another workload), by list name.
        self.part_errors: dict[str, list[str]] = {}

    @property
    def formsets(self) -> list:
        return [self.env, self.ports, self.volumes]

    def is_valid(self) -> bool:
        valid = self.form.is_valid()
        valid = all([fs.is_valid() for fs in self.formsets]) and valid
        if not valid:
            return False
        workload = self.form.instance
        try:
            edits.check_parts(
                workload, ports=_kept(self.ports), volumes=_kept(self.volumes),
                env_names=[env.name for env in _kept(self.env)],
            )
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                if field == "replicas":
                    self.form.add_error("replicas", errors)
                else:
                    self.part_errors[field] = errors
            return False
        return True

    @transaction.atomic
    def save(self) -> Workload:
        workload = self.form.save()
        for formset in self.formsets:
            formset.instance = workload
            formset.save()
        return workload
