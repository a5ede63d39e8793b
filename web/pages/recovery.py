"""The "Recover from backup" pages: a target's catalogue, a recovery asked for, its progress.

The age identity pasted to read the catalogue is kept for the next few
minutes in the operator's session, encrypted (lib/crypto), so that each
"Recover" button needs no second paste; it is never rendered back into a
page. docs/disaster-recovery.md is the runbook.
"""

from __future__ import annotations

import time

from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from backups.models import BackupRecovery, BackupTarget
from engine import disaster
from lib import agecrypt, crypto, offsite
from workloads.models import Workload

SESSION_KEY = "berth-recovery-identity"
IDENTITY_MINUTES = 15


def _remember(request: HttpRequest, target: BackupTarget, identity: str) -> None:
    request.session[SESSION_KEY] = {"target": target.pk, "token": crypto.encrypt(identity),
                                    "until": time.time() + IDENTITY_MINUTES * 60}


def _remembered(request: HttpRequest, target: BackupTarget) -> str:
    kept = request.session.get(SESSION_KEY)
    if not kept or kept.get("target") != target.pk or kept.get("until", 0) < time.time():
        request.session.pop(SESSION_KEY, None)
        return ""
    try:
        return crypto.decrypt(kept["token"])
    except Exception:  # noqa: BLE001 - the encryption key changed: as if never given
        request.session.pop(SESSION_KEY, None)
        return ""


def _page(request: HttpRequest, **context) -> HttpResponse:
    context.setdefault("targets", BackupTarget.objects.order_by("name"))
    context.setdefault("recoveries", BackupRecovery.objects.select_related(
        "target", "into__stage__project")[:10])
    context.setdefault("minutes", IDENTITY_MINUTES)
    return render(request, "backups/recover.html", context)


@require_http_methods(["GET", "POST"])
@login_required
@permission_required("backups.add_backuprecovery", raise_exception=True)
def recover(request: HttpRequest) -> HttpResponse:
    """GET: choose a target and give the identity. POST: list that target's catalogue."""
    if request.method == "GET":
        return _page(request)
    target = BackupTarget.objects.filter(pk=_int(request.POST.get("target"))).first()
    if target is None:
        return _page(request, error=_("Choose a backup target."))
    identity = request.POST.get("identity", "").strip()
    passphrase = request.POST.get("passphrase", "")
    if identity:
        try:
            agecrypt.parse_identities(identity)
        except agecrypt.AgeError as exc:
            return _page(request, chosen=target, error=str(exc))
    try:
        if passphrase:
            # What the passphrase opens is kept like a pasted identity; never the passphrase.
            opened = disaster.identities_for(target, identity, passphrase)
            identity = "\n".join(str(i) for i in opened)
        if identity:
            _remember(request, target, identity)
        else:
            identity = _remembered(request, target)
        entries = disaster.catalogue(target, disaster.identities_for(target, identity))
    except disaster.RecoveryError as exc:
        return _page(request, chosen=target, error=str(exc))
    except offsite.OffsiteError as exc:
        return _page(request, chosen=target, error=exc.message)
    return _page(request, chosen=target, entries=entries,
                 identity_kept=bool(_remembered(request, target)),
                 workloads=Workload.objects.with_parents())


@require_POST
@login_required
@permission_required("backups.add_backuprecovery", raise_exception=True)
def recover_start(request: HttpRequest) -> HttpResponse:
    """Queue the recovery of one copy, then follow it on its own page."""
    target = get_object_or_404(BackupTarget, pk=_int(request.POST.get("target")))
    into = None
    if request.POST.get("into"):
        into = get_object_or_404(Workload.objects.with_parents(),
                                 pk=_int(request.POST.get("into")))
    if not request.user.has_perms(BackupRecovery.PERMISSIONS_ONTO if into is not None
                                  else BackupRecovery.PERMISSIONS_TO_CREATE):
        return _page(request, chosen=target, error=_(
            "You may not create workloads, or restore onto them, so you cannot recover."))
    if into is not None and request.POST.get("confirm", "").strip() != into.path:
        return _page(request, chosen=target, error=_(
            "Type the workload's path, %(path)s, to confirm that its data is replaced.")
            % {"path": into.path})
    try:
        row = disaster.request_recovery(target=target, key=request.POST.get("key", ""),
                                        identity=_remembered(request, target), into=into,
                                        user=request.user,
                                        deploy=request.POST.get("deploy") == "on")
    except disaster.RecoveryError as exc:
        return _page(request, chosen=target, error=str(exc))
    except offsite.OffsiteError as exc:
        return _page(request, chosen=target, error=exc.message)
    return redirect("recovery-detail", pk=row.pk)


@require_POST
@login_required
def recover_forget(request: HttpRequest) -> HttpResponse:
    """Forget the identity kept in the session now."""
    request.session.pop(SESSION_KEY, None)
    return redirect("recover")


@require_GET
@login_required
@permission_required("backups.view_backuprecovery", raise_exception=True)
def recovery_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One recovery: its progress while it runs (the status part polls), then its end."""
    row = get_object_or_404(_recoveries(), pk=pk)
    template = "backups/_recovery_status.html" if request.htmx else "backups/recovery.html"
    response = render(request, template, {"recovery": row})
    if request.htmx and row.state not in BackupRecovery.ACTIVE_STATES:
        response.status_code = HttpResponseStopPolling.status_code
    return response


def _recoveries():
    return BackupRecovery.objects.select_related("target", "into__stage__project", "snapshot",
                                                 "restore", "deploy")


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None
