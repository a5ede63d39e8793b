"""The admin of backup targets (secrets write-only, and a check action), copy rules and
copies."""

from __future__ import annotations

import copy

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from backups.models import BackupTarget, CopyKind, CopyRule, SnapshotCopy
from engine import backups
from lib import agecrypt
from web.admin.forms import KEEP_HELP


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that never renders a value: what was stored or typed stays unseen."""

    def get_context(self, name, value, attrs):
        return super().get_context(name, None, attrs)


class BackupTargetForm(forms.ModelForm):
    secret_access_key = forms.CharField(
        label=_("Secret access key"), required=False, strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=KEEP_HELP,
    )
    identity = forms.CharField(
        label=_("Age identity to store"), required=False,
        widget=WriteOnlyTextarea(attrs={"rows": 2, "autocomplete": "off"}),
        help_text=_("Optional. Needed only to restore; stored encrypted, never shown. Without "
                    "it, it is given at restore time."),
    )
    forget_identity = forms.BooleanField(label=_("Forget the stored identity"), required=False)

    class Meta:
        model = BackupTarget
        fields = ["name", "kind", "endpoint_url", "region", "bucket", "prefix", "access_key_id",
                  "path_style", "directory", "recipients", "unencrypted", "keep_manual",
                  "keep_pre_deploy", "keep_pre_restore", "keep_scheduled", "keep_imported"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # The target as this request loaded it: "moved" and "changed" are measured against
        # it, never against a second read that another edit may have changed meanwhile.
        self._loaded = copy.copy(self.instance) if self.instance.pk else None
        # A private identity pasted among the recipients is refused, and never rendered back.
        key = self.add_prefix("recipients")
        if self.is_bound and "AGE-SECRET-KEY-" in self.data.get(key, "").upper():
            self._pasted_identity = True
            self.data = self.data.copy()
            self.data[key] = ""
        else:
            self._pasted_identity = False

    def clean_recipients(self) -> str:
        if self._pasted_identity:
            raise forms.ValidationError(_("A private identity (AGE-SECRET-KEY-1...) was pasted "
                                          "here: give the public key (age1...) only."))
        return self.cleaned_data["recipients"]

    def _post_clean(self) -> None:
        previous = self._loaded
        # The secrets first, so that the model's validation sees them (an identity must
        # belong to a recipient); an invalid form is never saved.
        cleaned = getattr(self, "cleaned_data", {})
        if cleaned.get("secret_access_key"):
            self.instance.set_secret_access_key(cleaned["secret_access_key"])
        if cleaned.get("forget_identity"):
            self.instance.set_identity("")
        elif cleaned.get("identity"):
            self.instance.set_identity(cleaned["identity"])
        super()._post_clean()
        try:
            self.instance.settle_change(
                previous, new_secret=bool(self.cleaned_data.get("secret_access_key")))
        except ValidationError as exc:
            self._update_errors(exc)

    def clean_identity(self) -> str:
        raw = self.cleaned_data.get("identity", "")
        if raw:
            try:
                agecrypt.parse_identities(raw)
            except agecrypt.AgeError as exc:
                raise forms.ValidationError(str(exc)) from None
        return raw

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("forget_identity") and cleaned.get("identity"):
            self.add_error("identity", _("Either forget the stored identity or give a new "
                                         "one, not both."))
        if (cleaned.get("kind") == BackupTarget.Kind.S3
                and not self.instance.has_secret_access_key
                and not cleaned.get("secret_access_key")):
            self.add_error("secret_access_key", _("An S3 target needs a secret access key."))
        return cleaned


    def changed_fields(self) -> list[str]:
        """The columns this form changed, against the target as it loaded it."""
        return [f.attname for f in BackupTarget._meta.concrete_fields
                if getattr(self.instance, f.attname) != getattr(self._loaded, f.attname)]


@admin.register(BackupTarget)
class BackupTargetAdmin(admin.ModelAdmin):
    form = BackupTargetForm
    list_display = ["name", "kind", "where", "encryption", "checked", "check_code"]
    search_fields = ["name", "bucket", "directory"]
    actions = ["check_targets"]

    def save_model(self, request, obj, form, change) -> None:
        if not change or form._loaded is None:
            obj.save()
        elif changed := form.changed_fields():
            # Only what this form changed: a check recorded meanwhile is not overwritten.
            obj.save(update_fields=changed)

    @admin.display(description=_("where"))
    def where(self, target: BackupTarget) -> str:
        if target.kind == BackupTarget.Kind.DIRECTORY:
            return target.directory
        return f"{target.endpoint_url or 's3'} / {target.bucket}/{target.prefix}".rstrip("/")

    @admin.display(description=_("encryption"))
    def encryption(self, target: BackupTarget) -> str:
        if target.unencrypted:
            return str(_("none: copies leave the host in clear"))
        return str(_("age, %(count)d recipient(s)") % {"count": len(target.recipient_list)})

    @admin.action(description=_("Check the selected targets (write, read back, delete)"),
                  permissions=["change"])
    def check_targets(self, request, queryset) -> None:
        for target in queryset:
            result = backups.check_target(target)
            level = messages.SUCCESS if result.ok else messages.ERROR
            self.message_user(request, f"{target.name}: {result.message}", level)


class CopyRuleForm(forms.ModelForm):
    kinds = forms.MultipleChoiceField(label=_("snapshot kinds"), choices=CopyKind.choices,
                                      widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = CopyRule
        fields = ["project", "workload", "target", "kinds"]


@admin.register(CopyRule)
class CopyRuleAdmin(admin.ModelAdmin):
    """A workload's rules replace its project's; a project's are the default."""

    form = CopyRuleForm
    list_display = ["__str__", "project", "workload", "target", "kind_list"]
    list_select_related = ["project", "workload__stage__project", "target"]
    list_filter = ["target"]
    autocomplete_fields = ["project", "workload", "target"]

    @admin.display(description=_("snapshot kinds"))
    def kind_list(self, rule: CopyRule) -> str:
        return ", ".join(str(CopyKind(k).label) for k in rule.kinds if k in CopyKind.values)


@admin.register(SnapshotCopy)
class SnapshotCopyAdmin(admin.ModelAdmin):
    """Copies are made by the engine; the admin only shows them."""

    list_display = ["remote_key", "target", "workload", "kind", "state", "attempts", "size",
                    "failure_code", "finished"]
    list_filter = ["state", "kind", "target"]
    list_select_related = ["target", "workload"]
    search_fields = ["remote_key"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # A copy under way is not forgotten while its worker still writes it.
        if obj is not None and obj.state in SnapshotCopy.ACTIVE_STATES:
            return False
        return super().has_delete_permission(request, obj)
