"""What happens to snapshot copies after they were made: retries, remote retention, removal.

- retry_due(): the sweep queues a copy that failed in a way that may pass
  (SnapshotCopy.RETRIED_CODES) again, as the same row, after an exponential
  backoff (BERTH_COPY_RETRY_*), until it has had BERTH_COPY_RETRY_ATTEMPTS.
- prune(): after a copy is verified, the workload's older verified copies on
  that target beyond the target's keep counts are removed from it (object
  and sidecar) and their rows marked `removed`. The newest verified copy of
  a workload on a target is never pruned.
- remove_copies(): the verified copies of one snapshot, removed on request
  (a snapshot deleted "with its copies").
- abort_strays(): unfinished uploads on a target that no copy under way owns
  (a process killed before its row knew the name, a name from a database
  restored to an older state) are aborted once BERTH_COPY_STRAY_AFTER old.

docs/backups.md describes them.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.utils import timezone, translation
from django.utils.translation import gettext_noop

from alerts import outbox
from alerts.models import Event
from backups import sidecar
from backups.models import BackupTarget, CopyKind, SnapshotCopy
from backups.schedules import BackupPolicy
from engine import queue
from lib import keep, offsite, redact
from snapshots.models import Snapshot
from workloads.models import Workload

logger = logging.getLogger(__name__)


class CopiesNotRemoved(Exception):
    """A verified copy could not be removed from its target; the copies before it were."""

    def __init__(self, row: SnapshotCopy, error: offsite.OffsiteError) -> None:
        super().__init__(error.message)
        self.row, self.error = row, error


# --- retries -------------------------------------------------------------------------------

def retry_delay(attempts: int) -> timedelta:
    """How long after its last failure a copy with `attempts` waits: 1, 2, 4, ... delays."""
    doubled = settings.BERTH_COPY_RETRY_DELAY * 2 ** min(max(attempts - 1, 0), 30)
    return timedelta(seconds=min(doubled, settings.BERTH_COPY_RETRY_MAX_DELAY))


def retry_due(*, now: datetime | None = None) -> int:
    """Queue again every failed copy whose failure may pass and whose backoff is over;
    returns how many. `now` is the sweep's clock."""
    now = now or timezone.now()
    failed = (SnapshotCopy.objects
              .filter(state=SnapshotCopy.State.FAILED, failure_code__in=SnapshotCopy.RETRIED_CODES,
                      attempts__lt=settings.BERTH_COPY_RETRY_ATTEMPTS,
                      snapshot__state=Snapshot.State.READY)
              .order_by("finished", "pk"))
    retried = 0
    for row in failed:
        if row.finished is None or row.finished + retry_delay(row.attempts) > now:
            continue
        if _superseded(row):
            continue
        try:
            with transaction.atomic():
                moved = row.move(only_from=[SnapshotCopy.State.FAILED],
                                 state=SnapshotCopy.State.QUEUED, owner="", failure_code="",
                                 started=None, finished=None, bytes_done=0, retried=now)
        except IntegrityError:
            continue  # another copy of the snapshot to the target is under way
        if moved:
            retried += 1
            logger.info("copy %s is tried again (after %d attempt(s))", row.pk, row.attempts)
            transaction.on_commit(
                lambda pk=row.pk: queue.enqueue(queue.COPY, pk, name=f"copy-{pk}"))
    return retried


def tell_failure(row: SnapshotCopy, target: BackupTarget) -> None:
    """Notify the channels of a failed copy once it needs a person: its failure is not one the
    sweep retries, or it had its last attempt (docs/notifications.md). Once per copy."""
    if row.failure_code in SnapshotCopy.RETRIED_CODES and \
            row.attempts < settings.BERTH_COPY_RETRY_ATTEMPTS:
        return
    outbox.notify(Event.COPY_FAILED, workload=row.workload, code=row.failure_code,
                  message=gettext_noop("The copy of snapshot #%(snapshot)d to the target "
                                       "“%(target)s” failed: %(reason)s"),
                  params={"snapshot": row.snapshot_id or 0, "target": target.name,
                          "reason": _untranslated(offsite.OffsiteError.messages.get(
                              row.failure_code, offsite.OffsiteError.messages["internal"]))},
                  key=f"copy-{row.pk}")


def _untranslated(text) -> str:
    """A lazy message's English source, translated when the notification is written."""
    with translation.override(None):
        return str(text)


def _superseded(row: SnapshotCopy) -> bool:
    """A later copy of the same snapshot to the same target is verified or under way."""
    return SnapshotCopy.objects.filter(
        snapshot_id=row.snapshot_id, target_id=row.target_id, created__gt=row.created,
        state__in=[*SnapshotCopy.ACTIVE_STATES, SnapshotCopy.State.VERIFIED],
    ).exists()


# --- remote retention ----------------------------------------------------------------------

def stale_copies(*, target: BackupTarget, workload_id: int) -> list[SnapshotCopy]:
    """The workload's verified copies on `target` beyond its keep counts, per kind
    (newest snapshots first); never its newest verified copy."""
    verified = SnapshotCopy.objects.filter(target=target, workload_id=workload_id,
                                           state=SnapshotCopy.State.VERIFIED)
    newest_first = verified.order_by(models.F("taken").desc(nulls_last=True), "-created", "-pk")
    last = newest_first.values_list("pk", flat=True).first()
    policy = BackupPolicy.objects.for_workload(Workload.objects.with_parents().get(
        pk=workload_id))
    stale = []
    for kind in CopyKind.values:
        if kind == CopyKind.SCHEDULED and policy is not None and not policy.keep_rules.empty:
            # By age, as the policy says, on each target apart (lib/keep.py).
            rows = {row.pk: row for row in newest_first.filter(kind=kind)}
            decision = keep.protect(
                keep.decide([(pk, row.taken or row.created) for pk, row in rows.items()],
                            policy.keep_rules, tz=policy.zone), {last})
            stale += [rows[pk] for pk in sorted(decision.forget)]
            continue
        count = target.keep_count(kind)
        if count:  # 0 keeps them all
            stale += [row for row in newest_first.filter(kind=kind)[count:] if row.pk != last]
    return stale


def prune(*, target: BackupTarget, workload_id: int) -> int:
    """Remove the workload's stale copies from `target`; returns how many went.

    A copy whose removal fails stays verified, for the next prune to try again.
    """
    stale = stale_copies(target=target, workload_id=workload_id)
    if not stale:
        return 0
    removed = 0
    try:
        store = target.store()
        for row in stale:
            _delete(store, row)
            removed += 1
    except offsite.OffsiteError as exc:
        logger.warning("remote retention on target %s stopped (%s): %s", target.pk, exc.code,
                       redact.for_log(exc.raw, target.secret_values()))
    return removed


# --- removal on request ----------------------------------------------------------------------

def remove_copies(*, snapshot: Snapshot) -> int:
    """Remove the snapshot's verified copies from their targets; returns how many.

    CopiesNotRemoved at the first that cannot be (the ones before it are gone).
    """
    rows = SnapshotCopy.objects.filter(snapshot=snapshot, state=SnapshotCopy.State.VERIFIED)
    removed = 0
    for row in rows.select_related("target"):
        try:
            _delete(row.target.store(), row)
        except offsite.OffsiteError as exc:
            logger.warning("copy %s could not be removed from target %s (%s): %s", row.pk,
                           row.target_id, exc.code,
                           redact.for_log(exc.raw, row.target.secret_values()))
            raise CopiesNotRemoved(row, exc) from None
        removed += 1
    return removed


def _delete(store: offsite.Store, row: SnapshotCopy) -> None:
    """Delete a verified copy's object and sidecar from the target, then mark it removed.

    In that order: a process killed between the two leaves a row that still says
    verified, and the next removal deletes nothing twice (deleting is idempotent).
    """
    for name in (row.remote_key, sidecar.sidecar_name(row.remote_key, encrypted=row.encrypted)):
        store.delete(name)
    row.move(only_from=[SnapshotCopy.State.VERIFIED], state=SnapshotCopy.State.REMOVED,
             removed=timezone.now())
    logger.info("copy %s (%s) removed from target %s", row.pk, row.remote_key, row.target_id)


# --- stray unfinished uploads --------------------------------------------------------------

_last_strays: datetime | None = None


def abort_strays(*, now: datetime | None = None) -> int:
    """Abort every unfinished upload older than BERTH_COPY_STRAY_AFTER that no copy under way
    owns, on every target; returns how many. Runs at most every BERTH_COPY_STRAY_AFTER / 4
    (each target is listed once per run); a target that fails is logged and skipped."""
    global _last_strays
    now = now or timezone.now()
    after = timedelta(seconds=settings.BERTH_COPY_STRAY_AFTER)
    if _last_strays is not None and now - _last_strays < after / 4:
        return 0
    _last_strays = now
    aborted = 0
    for target in BackupTarget.objects.all():
        owned = set()
        for row in SnapshotCopy.objects.filter(target=target,
                                               state__in=SnapshotCopy.ACTIVE_STATES):
            if row.remote_key:
                owned |= {row.remote_key,
                          sidecar.sidecar_name(row.remote_key, encrypted=row.encrypted)}
        try:
            store = target.store()
            for name in store.unfinished(now - after):
                if name in owned:
                    continue
                store.abort_incomplete(name)
                aborted += 1
                logger.info("target %s: aborted an unfinished upload of %s that no copy owns",
                            target.pk, name)
        except offsite.OffsiteError as exc:
            logger.warning("target %s: unfinished uploads could not be listed or aborted "
                           "(%s): %s", target.pk, exc.code,
                           redact.for_log(exc.raw, target.secret_values()))
    return aborted
