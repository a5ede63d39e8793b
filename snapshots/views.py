"""The snapshots panel of a workload's page: list, "Snapshot now", download, delete."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required, permission_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from snapshots import capture, storage
from snapshots.models import Snapshot
from workloads.models import Workload

PANEL_ROWS = 30
PANEL = "snapshots/_panel.html"


def _get_workload(pk: int) -> Workload:
    return get_object_or_404(Workload.objects.with_parents(), pk=pk)


def panel_context(workload: Workload) -> dict:
    """What the panel shows; `snapshots_busy` while a capture is queued or running."""
    snapshots = list(workload.snapshots.select_related("user")[:PANEL_ROWS])
    return {
        "workload": workload,
        "snapshots": snapshots,
        "snapshots_busy": any(s.is_active for s in snapshots),
    }


def _panel(request: HttpRequest, workload: Workload, error: str = "") -> HttpResponse:
    if not request.htmx:
        return redirect("workload-detail", pk=workload.pk)
    context = panel_context(workload) | {"snapshot_error": error}
    return render(request, PANEL, context)


@require_GET
@login_required
@permission_required("snapshots.view_snapshot", raise_exception=True)
def snapshots_panel(request: HttpRequest, pk: int) -> HttpResponse:
    """The panel, polled while a capture runs; 286 tells the poll to stop once none does."""
    context = panel_context(_get_workload(pk))
    response = render(request, PANEL, context)
    if request.htmx and not context["snapshots_busy"]:
        response.status_code = HttpResponseStopPolling.status_code
    return response


@require_POST
@login_required
@permission_required("workloads.snapshot_workload", raise_exception=True)
def snapshot_take(request: HttpRequest, pk: int) -> HttpResponse:
    workload = _get_workload(pk)
    try:
        capture.request_snapshot(workload=workload, user=request.user)
    except capture.SnapshotBusy as exc:
        return _panel(request, workload, str(exc))
    return _panel(request, workload)


@require_POST
@login_required
@permission_required("snapshots.delete_snapshot", raise_exception=True)
def snapshot_delete(request: HttpRequest, pk: int, sid: int) -> HttpResponse:
    workload = _get_workload(pk)
    snapshot = get_object_or_404(workload.snapshots, pk=sid)
    try:
        capture.delete_snapshot(snapshot=snapshot, user=request.user)
    except capture.SnapshotBusy as exc:
        return _panel(request, workload, str(exc))
    return _panel(request, workload)


@require_GET
@login_required
@permission_required("workloads.snapshot_workload", raise_exception=True)
def snapshot_download(request: HttpRequest, pk: int, sid: int) -> FileResponse:
    workload = _get_workload(pk)
    snapshot = get_object_or_404(workload.snapshots, pk=sid, state=Snapshot.State.READY)
    try:
        archive = storage.open_archive(workload.pk, snapshot.archive)
    except FileNotFoundError:
        raise Http404(_("This snapshot's archive file is missing.")) from None
    name = f"{workload.container_prefix}-snapshot-{snapshot.pk}.tar.zst"
    response = FileResponse(archive, as_attachment=True, filename=name,
                            content_type="application/zstd")
    response["ETag"] = f'"{snapshot.sha256}"'
    return response
