"""Everyday editing in the pages: projects, stages and workloads, added, edited and deleted.

The forms keep the API's rules (web.pages.edit_forms, workloads.edits); a
delete is confirmed by typing the slug (a workload's: its path, as its restore
and the API's X-Confirm-Delete header), and a workload's removal goes through
the engine (engine.deploys.remove_workload: its containers first).
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_http_methods

from engine import deploys
from lib import runtime
from lib.locks import LockTimeout
from web.pages.edit_forms import ProjectForm, StageForm, WorkloadEditor
from workloads import edits
from workloads.models import Project, Stage, Workload

FORM = "workloads/edit_form.html"
WORKLOAD_FORM = "workloads/workload_form.html"
CONFIRM = "workloads/confirm_delete.html"


class WorkloadBusy(Exception):
    """A deploy, restore or snapshot of the workload is queued or running."""


class TypedConfirmationForm(forms.Form):
    """Deleting needs the thing's slug typed in: a click alone is too easy."""

    mismatch = gettext_lazy("That is not the slug; nothing was deleted.")
    confirm = forms.CharField(
        label=gettext_lazy("Type the slug to confirm"), max_length=200, strip=True,
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}))

    def __init__(self, *args, expected: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.expected = expected

    def clean_confirm(self) -> str:
        if self.cleaned_data["confirm"] != self.expected:
            raise forms.ValidationError(str(self.mismatch))
        return self.cleaned_data["confirm"]


class PathConfirmationForm(TypedConfirmationForm):
    """A workload's delete takes its path, project/stage/workload, as its restore does: a
    slug is unique only within its stage."""

    mismatch = gettext_lazy("That is not the workload's path; nothing was deleted.")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["confirm"].label = gettext_lazy("Type the workload's path to confirm")


@require_GET
@login_required
@permission_required("workloads.view_project", raise_exception=True)
def project_list(request: HttpRequest) -> HttpResponse:
    projects = Project.objects.prefetch_related("stages").annotate(
        workload_count=Count("stages__workloads"))
    return render(request, "workloads/projects.html", {"projects": projects})


@require_http_methods(["GET", "POST"])
@login_required
@permission_required("workloads.add_project", raise_exception=True)
def project_add(request: HttpRequest) -> HttpResponse:
    return _edit(request, ProjectForm(request.POST or None), _("New project"))


@require_http_methods(["GET", "POST"])
@login_required
@permission_required("workloads.change_project", raise_exception=True)
def project_edit(request: HttpRequest, pk: int) -> HttpResponse:
    project = get_object_or_404(Project, pk=pk)
    return _edit(request, ProjectForm(request.POST or None, instance=project),
                 _("Project %(name)s") % {"name": project.name})


@require_http_methods(["GET", "POST"])
@login_required
@permission_required("workloads.add_stage", raise_exception=True)
def stage_add(request: HttpRequest) -> HttpResponse:
    form = StageForm(request.POST or None, initial={"project": request.GET.get("project")})
    return _edit(request, form, _("New stage"))


@require_http_methods(["GET", "POST"])
@login_required
@permission_required("workloads.change_stage", raise_exception=True)
def stage_edit(request: HttpRequest, pk: int) -> HttpResponse:
    stage = get_object_or_404(Stage.objects.select_related("project"), pk=pk)
    return _edit(request, StageForm(request.POST or None, instance=stage),
                 _("Stage %(stage)s") % {"stage": stage})


def _edit(request: HttpRequest, form: forms.ModelForm, title: str) -> HttpResponse:
    """Save a valid POST and go back to the projects; otherwise the form, with its errors."""
    if request.method == "POST" and form.is_valid():
        saved = form.save()
        messages.success(request, _("Saved %(name)s.") % {"name": saved})
        return redirect("projects")
    return render(request, FORM, {"form": form, "title": title})


@require_http_methods(["GET", "POST"])
@login_required
@permission_required("workloads.add_workload", raise_exception=True)
def workload_add(request: HttpRequest) -> HttpResponse:
    workload = Workload()
    if request.method == "GET" and request.GET.get("stage", "").isdigit():
        workload.stage = Stage.objects.filter(pk=request.GET["stage"]).first()
    return _edit_workload(request, workload)


@require_http_methods(["GET", "POST"])
@login_required
@permission_required("workloads.change_workload", raise_exception=True)
def workload_edit(request: HttpRequest, pk: int) -> HttpResponse:
    workload = get_object_or_404(Workload.objects.with_parents(), pk=pk)
    return _edit_workload(request, workload)


def _edit_workload(request: HttpRequest, workload: Workload) -> HttpResponse:
    """Save a valid form and its lists and go to the workload; otherwise all of them, with
    their errors (nothing saved)."""
    editing = workload.pk is not None
    title = (_("Edit %(name)s") % {"name": workload.name}) if editing else _("New workload")
    data = request.POST if request.method == "POST" else None
    editor = WorkloadEditor(data, instance=workload, user=request.user)
    if data is not None and editor.is_valid():
        workload = editor.save()
        messages.success(request, _("Saved %(name)s. Deploy it to apply the changes.")
                         % {"name": workload.name})
        return redirect(workload)
    return render(request, WORKLOAD_FORM, {"editor": editor, "form": editor.form,
                                           "title": title, "editing": editing})


@require_http_methods(["GET", "POST"])
@login_required
@permission_required("workloads.delete_workload", raise_exception=True)
def workload_delete(request: HttpRequest, pk: int) -> HttpResponse:
    workload = get_object_or_404(Workload.objects.with_parents(), pk=pk)

    def remove() -> None:
        # The engine would wait for the lock (up to BERTH_DEPLOY_LOCK_TIMEOUT) behind a
        # deploy, restore or snapshot; a page answers at once instead.
        if (workload.deploys.active().exists() or workload.restores.active().exists()
                or workload.snapshots.active().exists()):
            raise WorkloadBusy
        deploys.remove_workload(workload=workload)

    return _delete(request, workload, workload.path, remove, _(
        "Its containers are removed from the engine and its records deleted. Its volumes' "
        "files stay on the host."), cancel=workload.get_absolute_url())


@require_http_methods(["GET", "POST"])
@login_required
@permission_required("workloads.delete_project", raise_exception=True)
def project_delete(request: HttpRequest, pk: int) -> HttpResponse:
    project = get_object_or_404(Project, pk=pk)
    return _delete(request, project, project.slug, lambda: edits.delete_project(project),
                   _("Its stages are deleted with it. A project that still has workloads "
                     "cannot be deleted."))


@require_http_methods(["GET", "POST"])
@login_required
@permission_required("workloads.delete_stage", raise_exception=True)
def stage_delete(request: HttpRequest, pk: int) -> HttpResponse:
    stage = get_object_or_404(Stage.objects.select_related("project"), pk=pk)
    return _delete(request, stage, stage.slug, lambda: edits.delete_stage(stage),
                   _("A stage that still has workloads cannot be deleted."))


def _delete(request: HttpRequest, thing, expected: str, remove, consequence: str, *,
            cancel: str | None = None) -> HttpResponse:
    """The typed confirmation; with `expected` typed (a workload's path, else the slug),
    `remove()` and back to a list."""
    by_path = isinstance(thing, Workload)
    form_class = PathConfirmationForm if by_path else TypedConfirmationForm
    form = form_class(request.POST or None, expected=expected)
    error = ""
    if request.method == "POST" and form.is_valid():
        name = str(thing)
        try:
            remove()
        except edits.StillInUse as exc:
            error = str(exc)
        except deploys.RemovalRefused as exc:
            error = str(exc)
        except (LockTimeout, WorkloadBusy):
            error = _("The workload is busy with a deploy or restore; retry later.")
        except runtime.EngineError:
            error = _("The Docker engine could not remove the containers; nothing was deleted.")
        else:
            messages.success(request, _("Deleted %(name)s.") % {"name": name})
            return redirect("dashboard" if isinstance(thing, Workload) else "projects")
    status = 409 if error else 200
    return render(request, CONFIRM, {
        "thing": thing, "expected": expected, "by_path": by_path, "form": form, "error": error,
        "consequence": consequence, "cancel": cancel or reverse("projects"),
    }, status=status)
