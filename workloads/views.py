"""HTMX pages: the dashboard and a workload's detail page."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from workloads import deployer, runtime
from workloads.models import DeployRecord, Workload


def _get_workload(pk: int) -> Workload:
    return get_object_or_404(Workload.objects.with_parents(), pk=pk)


def _state_context(workload: Workload) -> dict:
    last = workload.deploys.select_related("user").first()
    busy = last is not None and not last.is_finished
    return {"workload": workload, "last_deploy": last, "busy": busy}


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
    context = _state_context(workload) | {
        "containers": workload.containers.live(),
        "volumes": workload.volumes.all(),
        "events": workload.events.select_related("user")[:20],
        "engine": runtime.engine_status(),
    }
    return render(request, "workloads/detail.html", context)


@require_GET
@login_required
@permission_required("workloads.view_workload", raise_exception=True)
def workload_state(request: HttpRequest, pk: int) -> HttpResponse:
    """The state panel; polled while a deploy runs, told to stop once it has finished."""
    workload = _get_workload(pk)
    context = _state_context(workload) | {"containers": workload.containers.live()}
    response = render(request, "workloads/detail.html#state-panel", context)
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
    context = _state_context(workload) | {"containers": workload.containers.live()}
    return render(request, "workloads/detail.html#state-panel", context)
