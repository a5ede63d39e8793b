"""Admin forms: secrets are entered but never rendered back."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from backups import edits
from backups.models import BackupTarget
from lib import giturls
from workloads.models import EnvVar, RegistryCredential, Workload

KEEP_HELP = _("Leave empty to keep the stored value. Stored secrets are never shown.")


class RegistryCredentialForm(forms.ModelForm):
    password = forms.CharField(
        label=_("password"),
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=KEEP_HELP,
    )

    class Meta:
        model = RegistryCredential
        fields = ["name", "registry", "username"]

    def clean(self):
        cleaned = super().clean()
        if not self.instance.has_password and not cleaned.get("password"):
            self.add_error("password", _("A new credential needs a password."))
        return cleaned

    def save(self, commit: bool = True):
        if self.cleaned_data.get("password"):
            self.instance.set_password(self.cleaned_data["password"])
        return super().save(commit=commit)


class EnvVarForm(forms.ModelForm):
    """One field for the value; a secret one is write-only (shown empty, kept if left empty)."""

    value = forms.CharField(label=_("value"), required=False, strip=False, widget=forms.TextInput)

    class Meta:
        model = EnvVar
        fields = ["name", "value", "is_secret"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        marked_secret = self.is_bound and self.data.get(self.add_prefix("is_secret"))
        if self.instance.pk and self.instance.is_secret:
            self.initial["value"] = ""
            self.fields["value"].help_text = KEEP_HELP
        if marked_secret or (self.instance.pk and self.instance.is_secret):
            # Never render a secret back, not even the one just typed into a
            # form that comes back with errors.
            self.fields["value"].widget = forms.PasswordInput(render_value=False)

    def save(self, commit: bool = True):
        env = self.instance
        raw = self.cleaned_data.get("value", "")
        keep_secret = env.pk and env.is_secret and self.cleaned_data["is_secret"] and raw == ""
        if not keep_secret:
            env.set_value(raw, secret=self.cleaned_data["is_secret"])
        return super().save(commit=commit)


class WriteOnlyTextInput(forms.TextInput):
    """A text input that never renders a value: what was stored or typed stays unseen."""

    def get_context(self, name, value, attrs):
        return super().get_context(name, None, attrs)


class WorkloadForm(forms.ModelForm):
    """The workload form, with the repository credential write-only.

    A credential pasted into the repository URL is taken out of the submitted
    data before anything else happens, so the form never renders it back (not
    even when it comes back with errors); it is saved as the credential.
    """

    git_username = forms.CharField(
        label=_("Repository username"),
        required=False,
        strip=False,
        widget=WriteOnlyTextInput(attrs={"autocomplete": "off"}),
        help_text=KEEP_HELP,
    )
    git_password = forms.CharField(
        label=_("Repository password or token"),
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=KEEP_HELP,
    )
    clear_git_credential = forms.BooleanField(
        label=_("Remove the stored repository credential"), required=False
    )

    class Meta:
        model = Workload
        fields = [
            "stage", "name", "slug", "source_kind", "image", "registry_credential",
            "git_url", "git_ref", "git_dockerfile", "git_context", "build_args", "replicas",
            "created", "pre_backup_hook", "post_backup_hook", "backup_hook_timeout",
            "pre_hook_failure",
        ]
        widgets = {
            "git_url": forms.TextInput(attrs={"class": "vTextField", "size": 80}),
            "pre_backup_hook": forms.TextInput(attrs={"class": "vTextField", "size": 80}),
            "post_backup_hook": forms.TextInput(attrs={"class": "vTextField", "size": 80}),
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # A form (or a script) that leaves the health check's timing out keeps the defaults.
        for name in Workload.HEALTH_FIELDS[1:]:
            if name in self.fields:
                self.fields[name].required = False
        self.url_credential: tuple[str, str] | None = None
        key = self.add_prefix("git_url")
        self.unsplit_credential = False
        if self.is_bound and self.data.get(key):
            split = giturls.split_credential(self.data[key])
            if split.had_credential:
                self.data = self.data.copy()
                self.data[key] = split.url
                self.url_credential = (split.username, split.password)
            elif giturls.may_hide_credential(self.data[key]):
                # Never shown back: a password with '#', '?' or '/' cuts the URL apart
                # before its '@', so the credential could not be taken out.
                self.data = self.data.copy()
                self.data[key] = ""
                self.unsplit_credential = True

    def clean_health_timing(self, cleaned) -> None:
        for name in Workload.HEALTH_FIELDS[1:]:
            if name in self.fields and cleaned.get(name) is None and name not in self.errors:
                cleaned[name] = (getattr(self.instance, name) if self.instance.pk
                                 else Workload._meta.get_field(name).default)

    def clean(self):
        cleaned = super().clean()
        self.clean_health_timing(cleaned)
        if self.unsplit_credential:
            self.add_error("git_url", _(
                "This URL seems to hold a credential Berth cannot take out of it (a '#', '?' "
                "or '/' in the password?): give the URL without it and the credential in the "
                "username and password fields."
            ))
            return cleaned
        # Set on the instance now, so Workload.clean() (run next) sees the
        # credential the save would store.
        credential = self._new_credential(cleaned)
        if credential is not None:
            # Bound to the URL being saved, not the one stored before.
            self.instance.git_url = cleaned.get("git_url", self.instance.git_url)
            self.instance.set_git_credential(*credential)
        return cleaned

    def _new_credential(self, cleaned) -> tuple[str, str] | None:
        if cleaned.get("clear_git_credential"):
            return ("", "")
        # An empty field keeps its stored part (a form cannot leave a field out).
        return self.instance.git_credential_after_edit(
            url=cleaned.get("git_url", ""), url_credential=self.url_credential,
            username=cleaned.get("git_username") or None,
            password=cleaned.get("git_password") or None,
        )


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that never renders a value: what was stored or typed stays unseen."""

    def get_context(self, name, value, attrs):
        return super().get_context(name, None, attrs)


KEEP_FIELDS = ["keep_manual", "keep_pre_deploy", "keep_pre_restore", "keep_scheduled",
               "keep_imported"]


class BackupTargetForm(forms.ModelForm):
    """A backup target, in the admin and the pages: the secrets are write-only.

    The edit itself (what a move forgets, which columns a save writes) is
    backups.edits.TargetEdit, as in the API.
    """

    secret_access_key = forms.CharField(
        label=_("Secret access key"), required=False, strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=KEEP_HELP,
    )
    identity = forms.CharField(
        label=_("Age identity to store"), required=False, validators=[edits.validate_identity],
        widget=WriteOnlyTextarea(attrs={"rows": 2, "autocomplete": "off"}),
        help_text=_("Optional. Needed only to restore; stored encrypted, never shown. Without "
                    "it, it is given at restore time."),
    )
    forget_identity = forms.BooleanField(label=_("Forget the stored identity"), required=False)

    class Meta:
        model = BackupTarget
        fields = ["name", "kind", "endpoint_url", "region", "bucket", "prefix", "access_key_id",
                  "path_style", "directory", "recipients", "unencrypted", *KEEP_FIELDS]
        widgets = {"recipients": forms.Textarea(attrs={"rows": 3})}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.edit = edits.TargetEdit(self.instance)
        # A keep count left out keeps the target's current one (the default for a new one).
        for name in KEEP_FIELDS:
            self.fields[name].required = False
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

    def clean(self):
        cleaned = super().clean()
        for name in KEEP_FIELDS:
            if cleaned.get(name) is None:
                cleaned[name] = getattr(self.instance, name)
        if cleaned.get("forget_identity") and cleaned.get("identity"):
            self.add_error("identity", _("Either forget the stored identity or give a new "
                                         "one, not both."))
        return cleaned

    def _post_clean(self) -> None:
        # The secrets first, so that the model's validation sees them; an invalid form is
        # never saved.
        cleaned = getattr(self, "cleaned_data", {})
        identity = "" if cleaned.get("forget_identity") else (cleaned.get("identity") or None)
        self.edit.give_secrets(secret_access_key=cleaned.get("secret_access_key", ""),
                               identity=identity)
        super()._post_clean()
        try:
            self.edit.settle()
        except ValidationError as exc:
            self._update_errors(exc)

    def save(self, commit: bool = True) -> BackupTarget:
        target = super().save(commit=False)
        if commit:
            self.edit.save()
            self.save_m2m()
        return target
