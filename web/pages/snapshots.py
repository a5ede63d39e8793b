"""The snapshots panel of a workload's page: list, "Snapshot now", download, delete, restore,
and each snapshot's copies on backup targets with "Copy to…"."""

from __future__ import annotations

from dataclasses import dataclass

from django import forms
from django.contrib import messages
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.decorators import login_required, permission_required
from django.core.exceptions import ValidationError
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from backups.models import BackupTarget, SnapshotCopy
from engine import captures, copies, restores
from snapshots import storage
from snapshots.errors import PreflightError
from snapshots.models import Snapshot
from workloads.models import VolumeMount, Workload

PANEL_ROWS = 30
PANEL = "snapshots/_panel.html"


def _get_workload(pk: int) -> Workload:
    return get_object_or_404(Workload.objects.with_parents(), pk=pk)


@dataclass(frozen=True)
class RestoreRow:
    """One line of a restore dialog: a current volume and what the snapshot holds for it."""

    volume: VolumeMount
    host_path: str | None
    held: dict | None  # the snapshot's manifest entry for this volume index, if any


def _restore_rows(volumes: list[VolumeMount], paths: list[str | None],
                  snapshot: Snapshot) -> list[RestoreRow]:
    held = {v.get("index"): v for v in snapshot.volumes if isinstance(v, dict)}
    return [RestoreRow(volume, path, held.get(index))
            for index, (volume, path) in enumerate(zip(volumes, paths, strict=True))]


def _host_paths(volumes: list[VolumeMount]) -> list[str | None]:
    paths: list[str | None] = []
    for volume in volumes:
        try:
            paths.append(volume.host_path())
        except ValidationError:
            paths.append(None)
    return paths


def _attach_copies(snapshots: list[Snapshot], user: AbstractBaseUser) -> bool:
    """Give each snapshot its `copies_shown` (newest first) for a user who may see them
    (they name targets), and `copying` while one of them is queued or uploading; True
    while any is."""
    for snapshot in snapshots:
        snapshot.copies_shown, snapshot.copying = [], False
    if not user.has_perm("backups.view_snapshotcopy"):
        return False
    by_id = {s.pk: s for s in snapshots}
    rows = SnapshotCopy.objects.filter(snapshot__in=snapshots).select_related("target")
    for row in rows:
        by_id[row.snapshot_id].copies_shown.append(row)
    for snapshot in snapshots:
        snapshot.copying = any(c.state in SnapshotCopy.ACTIVE_STATES
                               for c in snapshot.copies_shown)
    return any(s.copying for s in snapshots)


def panel_context(workload: Workload, user: AbstractBaseUser) -> dict:
    """What the panel shows.

    `snapshots_busy` while a capture or a restore is queued or running (every
    dangerous button is disabled); `restore` is the workload's newest restore,
    running or finished, to show its progress or its result. `copying` while a
    copy the user may see is queued or uploading. The panel polls while either.
    """
    snapshots = list(workload.snapshots.select_related("user")[:PANEL_ROWS])
    restore_job = workload.restores.select_related("snapshot").first()
    restoring = restore_job is not None and restore_job.is_active
    volumes = workload.captured_volumes()
    paths = _host_paths(volumes)
    for snapshot in snapshots:
        if snapshot.is_ready:
            snapshot.restore_rows = _restore_rows(volumes, paths, snapshot)
            snapshot.volume_mismatch = snapshot.volume_count != len(volumes)
    busy = restoring or any(s.is_active for s in snapshots)
    copying = _attach_copies(snapshots, user)
    may_copy = user.has_perm("backups.add_snapshotcopy")
    return {
        "workload": workload,
        "snapshots": snapshots,
        "restore": restore_job,
        "restoring": restoring,
        "snapshots_busy": busy,
        "copying": copying,
        "panel_polls": busy or copying,
        "copy_targets": list(BackupTarget.objects.all()) if may_copy else [],
        "disk_usage": storage.disk_usage(workload.pk),
    }


def _panel(request: HttpRequest, workload: Workload, error: str = "",
           kick_state: bool = False) -> HttpResponse:
    if not request.htmx:
        if error:
            messages.error(request, error)
        return redirect("workload-detail", pk=workload.pk)
    context = (panel_context(workload, request.user)
               | {"snapshot_error": error, "kick_state": kick_state})
    return render(request, PANEL, context)


@require_GET
@login_required
@permission_required("snapshots.view_snapshot", raise_exception=True)
def snapshots_panel(request: HttpRequest, pk: int) -> HttpResponse:
    """The panel, polled while a capture, a restore or a copy runs; 286 tells the poll to
    stop once none does."""
    context = panel_context(_get_workload(pk), request.user)
    response = render(request, PANEL, context)
    if request.htmx and not context["panel_polls"]:
        response.status_code = HttpResponseStopPolling.status_code
    return response


@require_POST
@login_required
@permission_required("workloads.snapshot_workload", raise_exception=True)
def snapshot_take(request: HttpRequest, pk: int) -> HttpResponse:
    workload = _get_workload(pk)
    try:
        captures.request_snapshot(workload=workload, user=request.user)
    except captures.SnapshotBusy as exc:
        return _panel(request, workload, str(exc))
    return _panel(request, workload)


@require_POST
@login_required
@permission_required("workloads.restore_workload", raise_exception=True)
def snapshot_restore(request: HttpRequest, pk: int, sid: int) -> HttpResponse:
    """Queue a restore once the operator has typed the workload's path in the dialog."""
    workload = _get_workload(pk)
    snapshot = get_object_or_404(workload.snapshots, pk=sid)
    if request.POST.get("confirm", "").strip() != workload.path:
        return _panel(request, workload, _("Type the workload's path, %(path)s, to confirm the "
                                           "restore.") % {"path": workload.path})
    try:
        restores.request_restore(workload=workload, snapshot=snapshot, user=request.user)
    except (restores.RestoreBusy, PreflightError) as exc:
        return _panel(request, workload, str(exc))
    # kick_state: the panel asks once for the state panel, which then shows the
    # restore too (Deploy and Roll back disabled) and polls until it is over.
    return _panel(request, workload, kick_state=True)


@require_POST
@login_required
@permission_required("snapshots.delete_snapshot", raise_exception=True)
def snapshot_delete(request: HttpRequest, pk: int, sid: int) -> HttpResponse:
    """Delete the snapshot once the operator has typed the workload's path in the dialog."""
    workload = _get_workload(pk)
    snapshot = get_object_or_404(workload.snapshots, pk=sid)
    if request.POST.get("confirm", "").strip() != workload.path:
        return _panel(request, workload, _("Type the workload's path, %(path)s, to confirm the "
                                           "delete; nothing was deleted.")
                      % {"path": workload.path})
    try:
        captures.delete_snapshot(snapshot=snapshot, user=request.user)
    except captures.SnapshotBusy as exc:
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


class CopyForm(forms.Form):
    target = forms.ModelChoiceField(queryset=BackupTarget.objects.all())


@require_POST
@login_required
@permission_required("backups.add_snapshotcopy", raise_exception=True)
def snapshot_copy(request: HttpRequest, pk: int, sid: int) -> HttpResponse:
    """Queue a copy of the snapshot to the chosen target; the panel then follows it."""
    workload = _get_workload(pk)
    snapshot = get_object_or_404(workload.snapshots, pk=sid)
    form = CopyForm(request.POST)
    if not form.is_valid():
        return _panel(request, workload, _("Choose a backup target to copy the snapshot to."))
    try:
        copies.request_copy(snapshot=snapshot, target=form.cleaned_data["target"],
                            user=request.user)
    except copies.CopyRefused as exc:
        return _panel(request, workload, str(exc))
    return _panel(request, workload)
