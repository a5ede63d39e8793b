"""Admin forms: secrets are entered but never rendered back."""

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from workloads.models import EnvVar, RegistryCredential

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
