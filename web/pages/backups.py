"""The backup targets page: each target's place, encryption and last check, the Check
button, and the add and edit forms (secrets write-only, as in the admin and the API)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from backups.models import BackupTarget
from engine import backups
from web.admin.forms import BackupTargetForm

TARGETS = "backups/targets.html"
FORM = "backups/target_form.html"


def _with_last_check(target: BackupTarget) -> BackupTarget:
    """`target.last_check`: its recorded check's code and fixed message, or None if it has
    not been checked since it was saved where it is."""
    target.last_check = backups.recorded_result(target.check_code) if target.check_code else None
    return target


@require_GET
@login_required
@permission_required("backups.view_backuptarget", raise_exception=True)
def target_list(request: HttpRequest) -> HttpResponse:
    targets = [_with_last_check(t) for t in BackupTarget.objects.all()]
    return render(request, TARGETS, {"targets": targets})


@require_POST
@login_required
@permission_required("backups.change_backuptarget", raise_exception=True)
def target_check(request: HttpRequest, pk: int) -> HttpResponse:
    """Write, read back and delete a probe; answers with the target's row."""
    target = get_object_or_404(BackupTarget, pk=pk)
    result = backups.check_target(target)
    if not request.htmx:
        level = messages.SUCCESS if result.ok else messages.ERROR
        messages.add_message(request, level, f"{target.name}: {result.message}")
        return redirect("backup-targets")
    target.refresh_from_db()
    # The result itself, even if an edit moved the target meanwhile and it was not recorded.
    target.last_check = result
    return render(request, f"{TARGETS}#target-row", {"target": target})


@require_http_methods(["GET", "POST"])
@login_required
@permission_required("backups.add_backuptarget", raise_exception=True)
def target_add(request: HttpRequest) -> HttpResponse:
    return _edit(request, BackupTargetForm(request.POST or None))


@require_http_methods(["GET", "POST"])
@login_required
@permission_required("backups.change_backuptarget", raise_exception=True)
def target_edit(request: HttpRequest, pk: int) -> HttpResponse:
    target = get_object_or_404(BackupTarget, pk=pk)
    return _edit(request, BackupTargetForm(request.POST or None, instance=target))


def _edit(request: HttpRequest, form: BackupTargetForm) -> HttpResponse:
    """Save a valid POST and go back to the list; otherwise the form, with its errors."""
    if request.method == "POST" and form.is_valid():
        target = form.save()
        messages.success(request, _("Saved the backup target %(name)s. Check it before "
                                    "trusting it with backups.") % {"name": target.name})
        return redirect("backup-targets")
    return render(request, FORM, {"form": form, "target": form.edit.loaded})
