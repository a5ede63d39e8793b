"""HTMX pages: the dashboard and a workload's detail page."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRefresh, HttpResponseStopPolling

from backups import health
from engine import deploys, images, operations, restores, rollbacks
from lib import runtime
from snapshots.errors import PreflightError
from web.pages import charts, workload_facts
from web.pages import snapshots as snapshot_views
from web.pages.responses import bad_request
from workloads import configuration, metrics_history
from workloads.models import (
    DeployInProgress,
    DeployLog,
    DeployRecord,
    Workload,
    with_live_containers,
)


def _get_workload(pk: int) -> Workload:
    return get_object_or_404(Workload.objects.with_parents(), pk=pk)


HISTORY_ROWS = 20
# How often the dashboard and the workload page ask for the live state.
LIVE_POLL_SECONDS = 3
METRICS_DEFAULT = metrics_history.DEFAULT_WINDOW


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
        "drift": workload_facts.drift(workload, current),
        "containers": workload.containers.live(),
        "events": workload.events.select_related("user")[:20],
    }


def _metrics_context(workload: Workload, window: str) -> dict:
    """What the metrics panel shows: the chart of `window`, and the newest tick's totals."""
    found = metrics_history.history(workload=workload, window=window)
    return {
        "workload": workload,
        "metrics_window": window,
        "metrics_window_label": metrics_history.WINDOW_LABELS[window],
        "metrics_windows": list(metrics_history.WINDOW_LABELS.items()),
        "metrics_history": found,
        "chart": charts.build_chart(found),
        "current": metrics_history.latest(workload=workload, now=found.end),
        "stats_interval": settings.BERTH_STATS_INTERVAL,
    }


@require_GET
@login_required
@permission_required("workloads.view_workload", raise_exception=True)
def dashboard(request: HttpRequest) -> HttpResponse:
    workloads = list(with_live_containers(Workload.objects.with_parents()))
    # Each workload's backup health, in a fixed number of queries whatever their number.
    found = health.health_of(workloads)
    for workload in workloads:
        workload.health = found[workload.pk]
    return render(
        request,
        "workloads/dashboard.html",
        {"workloads": workloads, "engine": runtime.engine_status(),
         "live_poll_seconds": LIVE_POLL_SECONDS},
    )


@require_GET
@login_required
@permission_required("workloads.view_workload", raise_exception=True)
def dashboard_live(request: HttpRequest) -> HttpResponse:
    """Every workload's state badge, swapped in out of band (the dashboard polls it)."""
    workloads = with_live_containers(Workload.objects.with_parents())
    return render(request, "workloads/dashboard.html#live-update",
                  {"workloads": workloads, "live_poll_seconds": LIVE_POLL_SECONDS})


def _live_context(workload: Workload) -> dict:
    """The live panel: the workload's live containers, read once for the table and the state."""
    workload.live_containers = list(workload.containers.live().order_by("replica"))
    return {"workload": workload, "live_containers": workload.live_containers,
            "live_poll_seconds": LIVE_POLL_SECONDS}


@require_GET
@login_required
@permission_required("workloads.view_workload", raise_exception=True)
def workload_live(request: HttpRequest, pk: int) -> HttpResponse:
    """The live panel, with the state badge and the events out of band (polled every few s)."""
    workload = _get_workload(pk)
    context = _live_context(workload) | {"events": workload.events.select_related("user")[:20]}
    return render(request, "workloads/detail.html#live-update", context)


@require_GET
@login_required
@permission_required("workloads.view_workload", raise_exception=True)
def workload_detail(request: HttpRequest, pk: int) -> HttpResponse:
    workload = _get_workload(pk)
    context = (
        _state_context(workload)
        | _metrics_context(workload, METRICS_DEFAULT)
        | snapshot_views.panel_context(workload, request.user)
        | workload_facts.context(request, workload)
        | {"engine": runtime.engine_status(), "health": health.health(workload),
           "image_bytes": images.workload_image_bytes(workload=workload)}
        | _live_context(workload)
    )
    return render(request, "workloads/detail.html", context)


@require_GET
@login_required
@permission_required("workloads.view_workload", raise_exception=True)
def workload_metrics(request: HttpRequest, pk: int) -> HttpResponse:
    """The metrics panel for ?window= (what the window buttons and the 15 s refresh fetch)."""
    workload = _get_workload(pk)
    window = request.GET.get("window", METRICS_DEFAULT)
    if window not in metrics_history.WINDOWS:
        return bad_request(
            _("Unknown window; use one of: %(windows)s.")
            % {"windows": ", ".join(metrics_history.WINDOWS)}
        )
    context = _metrics_context(workload, window)
    return render(request, "workloads/detail.html#metrics-panel", context)


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
    error = ""
    try:
        deploys.request_deploy(
            workload=workload, reason=DeployRecord.Reason.MANUAL, user=request.user
        )
    except DeployInProgress as exc:
        error = str(exc)
    return _after_action(request, workload, error)


@require_POST
@login_required
@permission_required("workloads.operate_workload", raise_exception=True)
def workload_operate(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """Start, stop or restart the workload's containers (the page asked to confirm)."""
    workload = _get_workload(pk)
    if action not in operations.ACTIONS:
        raise Http404
    error = ""
    try:
        operations.operate(workload=workload, action=action, user=request.user)
    except operations.OperationRefused as exc:
        error = str(exc)
    except runtime.EngineError:
        error = _("The Docker engine could not do what was asked.")
    return _after_action(request, workload, error)


def _after_action(request: HttpRequest, workload: Workload, error: str) -> HttpResponse:
    """The refreshed panels for HTMX (with `error` shown), or back to the page."""
    if not request.htmx:
        if error:
            messages.error(request, error)
        return redirect("workload-detail", pk=workload.pk)
    workload.refresh_from_db()
    context = _state_context(workload) | {"action_error": error}
    return render(request, "workloads/detail.html#state-update", context)


def _deploy_context(pk: int, user) -> dict:
    record = get_object_or_404(
        DeployRecord.objects.select_related("workload__stage__project", "user"), pk=pk
    )
    return {
        "deploy": record,
        "workload": record.workload,
        "log": DeployLog.objects.filter(deploy=record).first(),
        "recorded_settings": (configuration.setting_rows(record.configuration)
                              if record.configuration_recorded else []),
        **_failed_start_context(record, user),
    }


def _failed_start_context(record: DeployRecord, user) -> dict:
    """The last log lines of a deploy's containers that exited at start, read now.

    A container's log can carry whatever the app prints, secrets included: only
    those who may read logs (view_logs) read it here.
    """
    if not record.keeps_failed_containers:
        return {}
    if not user.has_perm("workloads.view_logs"):
        return {"start_logs_hidden": True}
    return {"start_logs": deploys.failed_start_logs(record=record)}


@require_GET
@login_required
@permission_required("workloads.view_workload", raise_exception=True)
def deploy_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One deploy: what it asked for, what it pinned, and a git deploy's build log."""
    return render(request, "workloads/deploy.html", _deploy_context(pk, request.user))


@require_GET
@login_required
@permission_required("workloads.view_workload", raise_exception=True)
def deploy_panel(request: HttpRequest, pk: int) -> HttpResponse:
    """The deploy panel with the build log so far; polled while the deploy runs."""
    context = _deploy_context(pk, request.user)
    response = render(request, "workloads/deploy.html#deploy-panel", context)
    if request.htmx and context["deploy"].is_finished:
        response.status_code = HttpResponseStopPolling.status_code
    return response


class RollbackForm(forms.Form):
    RESTORE_CHOICES = [("configuration", "code and configuration"), ("code", "code")]

    deploy_id = forms.IntegerField(min_value=1)
    # Left out (a form from before the choice): code and configuration, as the API's default.
    restore = forms.ChoiceField(choices=RESTORE_CHOICES, required=False)

    def secrets(self, data) -> dict[str, str]:
        """Values typed for secrets whose kept value is gone (fields `secret-<NAME>`)."""
        return {key.removeprefix(SECRET_FIELD): value for key, value in data.items()
                if key.startswith(SECRET_FIELD) and value}


SECRET_FIELD = "secret-"  # noqa: S105 - the prefix of a form field's name


@require_GET
@login_required
@permission_required("workloads.rollback_workload", raise_exception=True)
def rollback_preview(request: HttpRequest, pk: int, deploy_id: int) -> HttpResponse:
    """The rollback dialog's body: what a rollback to the deploy changes, and the choices."""
    workload = _get_workload(pk)
    target = get_object_or_404(workload.deploys.select_related("pre_deploy_snapshot"),
                               pk=deploy_id)
    preview = rollbacks.preview(workload=workload, target=target)
    return render(request, "workloads/_rollback_preview.html",
                  {"workload": workload, "preview": preview, "secret_field": SECRET_FIELD})


@require_POST
@login_required
@permission_required("workloads.rollback_workload", raise_exception=True)
def workload_rollback(request: HttpRequest, pk: int) -> HttpResponse:
    """Queue a rollback to an earlier deploy; answers with the refreshed panels."""
    workload = _get_workload(pk)
    form = RollbackForm(request.POST)
    if not form.is_valid():
        return bad_request(form.errors.as_text())
    error, record = "", None
    try:
        record = deploys.request_rollback(
            workload=workload, deploy_id=form.cleaned_data["deploy_id"], user=request.user,
            configuration=form.cleaned_data["restore"] != "code",
            secrets=form.secrets(request.POST),
        )
    except DeployRecord.DoesNotExist:
        raise Http404 from None
    except (deploys.RollbackRefused, DeployInProgress) as exc:
        error = str(exc)
    except ValidationError as exc:
        error = " ".join(exc.messages)
    except PermissionDenied as exc:
        error = str(exc)
    if record is not None and record.rollback_restored == \
            DeployRecord.RollbackRestored.CODE_CONFIGURATION and request.htmx:
        # The settings, env and ports on the page changed too, not only the panels.
        return HttpResponseClientRefresh()
    return _after_action(request, workload, error)


@require_POST
@login_required
@permission_required(["workloads.rollback_workload", "workloads.restore_workload"],
                     raise_exception=True)
def workload_rollback_with_data(request: HttpRequest, pk: int) -> HttpResponse:
    """Queue a rollback with data once the operator has typed the workload's path."""
    workload = _get_workload(pk)
    form = RollbackForm(request.POST)
    if not form.is_valid():
        return bad_request(form.errors.as_text())
    error = ""
    if request.POST.get("confirm", "").strip() != workload.path:
        error = _("Type the workload's path, %(path)s, to confirm the rollback with data; "
                  "nothing was changed.") % {"path": workload.path}
        return _after_action(request, workload, error)
    try:
        restores.request_rollback_with_data(
            workload=workload, deploy_id=form.cleaned_data["deploy_id"], user=request.user,
            configuration=form.cleaned_data["restore"] != "code",
        )
    except DeployRecord.DoesNotExist:
        raise Http404 from None
    except (deploys.RollbackRefused, restores.RestoreBusy, PreflightError) as exc:
        error = str(exc)
    except ValidationError as exc:
        error = " ".join(exc.messages)
    except PermissionDenied as exc:
        error = str(exc)
    return _after_action(request, workload, error)
