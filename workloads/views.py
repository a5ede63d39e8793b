"""HTMX pages: the dashboard and a workload's detail page."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from snapshots import views as snapshot_views
from workloads import deployer, runtime
from workloads.models import DeployRecord, VolumeMount, Workload


def _get_workload(pk: int) -> Workload:
    return get_object_or_404(Workload.objects.with_parents(), pk=pk)


HISTORY_ROWS = 20


def _state_context(workload: Workload) -> dict:
    """What the state panel, the deploy history and the events list show.

    `busy` while a deploy or a restore is unfinished; `current_deploy` is the
    newest successful one — the rows before it are the ones to roll back to.
    """
    deploys = list(
        workload.deploys.select_related("user", "rolled_back_from", "pre_deploy_snapshot")[
            :HISTORY_ROWS
        ]
    )
    last = deploys[0] if deploys else None
    current = next((d for d in deploys if d.outcome == DeployRecord.Outcome.SUCCEEDED), None)
    # A restore swaps the volumes and redeploys: deploying or rolling back
    # meanwhile would only wait for its lock, so the buttons say so instead.
    restoring = workload.restores.active().exists()
    return {
        "workload": workload,
        "last_deploy": last,
        "restoring": restoring,
        "busy": restoring or (last is not None and not last.is_finished),
        "deploys": deploys,
        "current_deploy": current,
        "containers": workload.containers.live(),
        "events": workload.events.select_related("user")[:20],
    }


def _volume_rows(workload: Workload) -> list[tuple[VolumeMount, str | None]]:
    """Each volume with its host path, or None where the path no longer resolves safely.

    A symlink planted in a volume's directory, or a changed data dir, makes
    host_path() refuse; the page shows that volume as invalid instead of failing.
    """
    rows: list[tuple[VolumeMount, str | None]] = []
    for volume in workload.volumes.all():
        try:
            rows.append((volume, volume.host_path()))
        except ValidationError:
            rows.append((volume, None))
    return rows


@require_GET
@login_required
@permission_required("workloads.view_workload", raise_exception=True)
def dashboard(request: HttpRequest) -> HttpResponse:
    workloads = Workload.objects.with_parents()
    return render(
        request,
        "workloads/dashboard.html",
        {"workloads": workloads, "engine": runtime.engine_status()},
    )


@require_GET
@login_required
@permission_required("workloads.view_workload", raise_exception=True)
def workload_detail(request: HttpRequest, pk: int) -> HttpResponse:
    workload = _get_workload(pk)
    context = _state_context(workload) | snapshot_views.panel_context(workload) | {
        "volumes": _volume_rows(workload),
        "engine": runtime.engine_status(),
    }
    return render(request, "workloads/detail.html", context)


@require_GET
@login_required
@permission_required("workloads.view_workload", raise_exception=True)
def workload_state(request: HttpRequest, pk: int) -> HttpResponse:
    """The state panel (and the events list, out of band).

    Polled while a deploy runs; an HTMX poll is told to stop (286) once it has finished.
    """
    workload = _get_workload(pk)
    context = _state_context(workload)
    response = render(request, "workloads/detail.html#state-update", context)
    if request.htmx and not context["busy"]:
        response.status_code = HttpResponseStopPolling.status_code
    return response


@require_POST
@login_required
@permission_required("workloads.deploy_workload", raise_exception=True)
def workload_deploy(request: HttpRequest, pk: int) -> HttpResponse:
    workload = _get_workload(pk)
    deployer.request_deploy(workload=workload, reason=DeployRecord.Reason.MANUAL, user=request.user)
    if not request.htmx:
        return redirect("workload-detail", pk=pk)
    workload.refresh_from_db()
    return render(request, "workloads/detail.html#state-update", _state_context(workload))


class RollbackForm(forms.Form):
    deploy_id = forms.IntegerField(min_value=1)


@require_POST
@login_required
@permission_required("workloads.rollback_workload", raise_exception=True)
def workload_rollback(request: HttpRequest, pk: int) -> HttpResponse:
    """Queue a rollback to an earlier deploy; answers with the refreshed panels."""
    workload = _get_workload(pk)
    form = RollbackForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest(form.errors.as_text())
    error = ""
    try:
        deployer.request_rollback(
            workload=workload, deploy_id=form.cleaned_data["deploy_id"], user=request.user
        )
    except DeployRecord.DoesNotExist:
        raise Http404 from None
    except deployer.RollbackRefused as exc:
        error = str(exc)
    if not request.htmx:
        if error:
            messages.error(request, error)
        return redirect("workload-detail", pk=pk)
    workload.refresh_from_db()
    context = _state_context(workload) | {"rollback_error": error}
    return render(request, "workloads/detail.html#state-update", context)
