"""The backup policies pages: the list, add, edit (with a preview of what new keep rules
would delete), delete. A policy belongs to a workload, a stage or a project."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.dates import WEEKDAYS
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from backups.schedules import BackupPolicy
from engine import schedules

POLICIES = "backups/policies.html"
FORM = "backups/policy_form.html"
OWNERS = ("workload", "stage", "project")


class BackupPolicyForm(forms.ModelForm):
    """The owner is chosen when the policy is added and fixed afterwards."""

    weekday = forms.TypedChoiceField(label=_("weekday"), coerce=int,
                                     choices=sorted(WEEKDAYS.items()), initial=0)

    class Meta:
        model = BackupPolicy
        fields = ["workload", "stage", "project", "enabled", "every", "minute", "at", "weekday",
                  "cron", "time_zone", "targets", "keep_last", "keep_hourly", "keep_daily",
                  "keep_weekly", "keep_monthly", "keep_yearly"]
        widgets = {"at": forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
                   "targets": forms.CheckboxSelectMultiple}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["weekday"].help_text = BackupPolicy._meta.get_field("weekday").help_text
        self.fields["workload"].queryset = self.fields["workload"].queryset.select_related(
            "stage__project")
        self.fields["stage"].queryset = self.fields["stage"].queryset.select_related("project")
        if self.instance.pk is not None:
            for owner in OWNERS:
                self.fields[owner].disabled = True


def _form(request: HttpRequest, policy: BackupPolicy | None) -> BackupPolicyForm:
    if request.method == "POST":
        return BackupPolicyForm(request.POST, instance=policy)
    # "Add a policy" links from a workload's page name the owner.
    initial = {owner: request.GET[owner] for owner in OWNERS
               if request.GET.get(owner, "").isdigit()}
    return BackupPolicyForm(instance=policy, initial=initial)


@require_GET
@login_required
@permission_required("backups.view_backuppolicy", raise_exception=True)
def policy_list(request: HttpRequest) -> HttpResponse:
    policies = (BackupPolicy.objects.select_related("project", "stage__project",
                                                    "workload__stage__project")
                .prefetch_related("targets").order_by("pk"))
    now = timezone.now()
    for policy in policies:
        policy.next_run = policy.upcoming(now)
    return render(request, POLICIES, {"policies": policies})


@require_http_methods(["GET", "POST"])
@login_required
@permission_required("backups.add_backuppolicy", raise_exception=True)
def policy_add(request: HttpRequest) -> HttpResponse:
    return _edit(request, _form(request, None))


@require_http_methods(["GET", "POST"])
@login_required
@permission_required("backups.change_backuppolicy", raise_exception=True)
def policy_edit(request: HttpRequest, pk: int) -> HttpResponse:
    return _edit(request, _form(request, get_object_or_404(BackupPolicy, pk=pk)))


def _edit(request: HttpRequest, form: BackupPolicyForm) -> HttpResponse:
    """Save a valid POST and go back to the list; otherwise the form, with its errors."""
    if request.method == "POST" and form.is_valid():
        policy = form.save(commit=False)
        policy.reschedule(form.changed_data)  # a changed schedule never fires for the past
        policy.save()
        form.save_m2m()
        messages.success(request, _("Saved the backup policy of %(owner)s.")
                         % {"owner": policy.owner})
        return redirect("backup-policies")
    return render(request, FORM, {"form": form, "policy": form.instance})


@require_POST
@login_required
def policy_preview(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    """What the form's keep rules would delete, before they are saved: the preview panel."""
    needed = "backups.change_backuppolicy" if pk is not None else "backups.add_backuppolicy"
    if not request.user.has_perm(needed):
        raise PermissionDenied
    policy = get_object_or_404(BackupPolicy, pk=pk) if pk is not None else None
    form = BackupPolicyForm(request.POST, instance=policy)
    # Validating the form sets its fields on the instance; nothing is saved.
    previews = schedules.preview_keep(policy=form.instance) if form.is_valid() else None
    return render(request, f"{FORM}#keep-preview", {"form": form, "previews": previews,
                                                  "previewed": True})


@require_POST
@login_required
@permission_required("backups.delete_backuppolicy", raise_exception=True)
def policy_delete(request: HttpRequest, pk: int) -> HttpResponse:
    policy = get_object_or_404(BackupPolicy, pk=pk)
    owner = policy.owner
    policy.delete()
    messages.success(request, _("Deleted the backup policy of %(owner)s: its workloads follow "
                                "the next policy up, if any.") % {"owner": owner})
    return redirect("backup-policies")
