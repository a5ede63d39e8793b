"""Retention: keep the newest N snapshots of each kind per workload (BERTH_SNAPSHOT_KEEP_*).

Scheduled snapshots are kept by age instead when the workload's backup policy
has keep rules (hourly, daily, weekly… as restic's forget: lib/keep.py).

Imported snapshots are counted apart from captured ones, in a bucket of their
own kept by BERTH_SNAPSHOT_KEEP_IMPORTED: an import can only push out older
imports, never a snapshot Berth captured, so the permission to import (or to
capture) is never a way to delete snapshots without the permission to delete.

Two kinds of snapshot are kept beyond that count: a `pre_restore` snapshot
younger than BERTH_SNAPSHOT_PRE_RESTORE_MIN_AGE_HOURS (the data a restore
replaced, which an operator may still want back), and the `pre_deploy`
snapshot of the workload's newest successful deploy (the data the running
version started from). Rows and files go together: the rows in one
transaction, the files once it has committed (snapshots/signals.py).
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backups.schedules import BackupPolicy
from lib import keep
from snapshots import storage
from snapshots.models import Snapshot
from workloads.models import DeployRecord, Workload

# Failed rows say why a capture failed; the newest few of them are enough.
KEEP_FAILED = 5


def protected_ids(workload: Workload) -> set[int]:
    """Snapshots that are never pruned, whatever the counts."""
    young = timezone.now() - timedelta(hours=settings.BERTH_SNAPSHOT_PRE_RESTORE_MIN_AGE_HOURS)
    ids = set(
        Snapshot.objects.filter(
            workload=workload, kind=Snapshot.Kind.PRE_RESTORE, created__gt=young
        ).values_list("pk", flat=True)
    )
    newest_success = (
        DeployRecord.objects.filter(workload=workload, outcome=DeployRecord.Outcome.SUCCEEDED)
        .order_by("-created", "-id").values_list("pk", flat=True).first()
    )
    if newest_success is not None:
        ids |= set(
            Snapshot.objects.filter(deploy_id=newest_success).values_list("pk", flat=True)
        )
    return ids


def scheduled_stale_ids(workload: Workload, policy: BackupPolicy | None,
                        protected: set[int]) -> list[int]:
    """The workload's ready scheduled snapshots that `policy` lets go, newest first.

    Kept by age when the policy has keep rules (lib/keep.py), else the newest
    BERTH_SNAPSHOT_KEEP_SCHEDULED. `policy` may be an edit not saved yet: the
    pages preview a change of keep rules with it.
    """
    ready = Snapshot.objects.filter(workload=workload, kind=Snapshot.Kind.SCHEDULED,
                                    state=Snapshot.State.READY, imported=False)
    if policy is not None and not policy.keep_rules.empty:
        gone = keep.preview(ready.values_list("pk", "created"), policy.keep_rules, protected,
                            policy.zone)
        return [item.id for item in gone]
    count = settings.BERTH_SNAPSHOT_KEEP.get(Snapshot.Kind.SCHEDULED)
    if count is None:
        return []
    newest_first = ready.order_by("-created", "-id").values_list("pk", flat=True)
    return [pk for pk in newest_first[count:] if pk not in protected]


def stale_ids(workload: Workload) -> list[int]:
    protected = protected_ids(workload)
    stale: list[int] = []
    newest_first = Snapshot.objects.filter(workload=workload).order_by("-created", "-id")
    policy = BackupPolicy.objects.for_workload(workload)
    for kind, count in settings.BERTH_SNAPSHOT_KEEP.items():
        if kind == Snapshot.Kind.SCHEDULED:
            stale += scheduled_stale_ids(workload, policy, protected)
            continue
        ready = newest_first.filter(kind=kind, state=Snapshot.State.READY, imported=False)
        stale += [pk for pk in ready.values_list("pk", flat=True)[count:] if pk not in protected]
    imported = newest_first.filter(state=Snapshot.State.READY, imported=True)
    stale += [pk for pk in imported.values_list("pk", flat=True)[
        settings.BERTH_SNAPSHOT_KEEP_IMPORTED:] if pk not in protected]
    failed = newest_first.filter(state=Snapshot.State.FAILED).values_list("pk", flat=True)
    stale += list(failed[KEEP_FAILED:])
    return stale


def prune(workload: Workload) -> int:
    """Delete the workload's snapshots beyond retention; returns how many went."""
    stale = stale_ids(workload)
    if stale:
        with transaction.atomic():
            Snapshot.objects.filter(pk__in=stale).delete()
    known = set(Snapshot.objects.filter(workload=workload).values_list("archive", flat=True))
    storage.sweep(workload.pk, known)
    return len(stale)
