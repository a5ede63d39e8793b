"""Deploy entry points: the one choke point for every deploy of a workload.

Every interface — the API, the pages, the admin action, the `deploy` and
`rollback` commands — ends in request_deploy() or dispatch(), which take the
workload's lock, finish a restore a dead process left, claim the ledger row
and run the body (engine/locked/deploy.py). A restore's redeploy, already
under the lock, calls the body's dispatch_locked(). docs/deploys.md has the why.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils.translation import gettext as _

from backups.models import BackupRecovery
from engine import logs as workload_logs
from engine import lost, queue
from engine.locked import recovery, swap_recovery
from engine.locked.deploy import DeployError, Failure, record_failure, run
from engine.rollbacks import RollbackRefused, restore_configuration
from lib import locks, owners, runtime
from snapshots.models import RestoreJob
from workloads.models import DeployRecord, Workload

logger = logging.getLogger(__name__)


class RemovalRefused(Exception):
    """The workload may not be removed now: a recovery from backup onto it is queued or
    running (it would find its workload gone)."""

    def __str__(self) -> str:
        return _("A recovery from backup onto this workload is queued or running; wait for "
                 "it to finish.")


def request_deploy(
    *, workload: Workload, reason: str, user: AbstractBaseUser | None = None,
    reference: str = "", rolled_back_from: DeployRecord | None = None,
    rollback_restored: str = "",
) -> DeployRecord:
    """Queue a deploy on the task worker; returns the queued ledger row to follow.

    Raises DeployInProgress while another deploy of the workload is queued or running.
    """
    _clear_dead(workload)
    record = DeployRecord.open(
        workload=workload, reason=reason, user=user, reference=reference,
        rolled_back_from=rolled_back_from, rollback_restored=rollback_restored,
    )
    transaction.on_commit(
        lambda: queue.enqueue(queue.DEPLOY, record.pk, name=f"deploy-{record.pk}")
    )
    return record


def dispatch(
    *, workload: Workload, reason: str, user: AbstractBaseUser | None = None,
    reference: str = "", rolled_back_from: DeployRecord | None = None,
    record: DeployRecord | None = None,
) -> DeployRecord:
    """Deploy `workload` under its lock and return the finished ledger row.

    `reference` pins what to run (an earlier deploy's replay_reference: a
    `repo@sha256:…`, or a git `ref@<commit>`); by default the workload's image
    reference, or git ref, is resolved and pinned anew.
    `record` is a queued row from request_deploy(); if another worker has
    already claimed it, it is returned untouched.

    The row is claimed (queued → running) only once the lock is held, so a
    running deploy always holds its workload's lock: one whose lock is free
    is dead (_clear_dead). A failure before the claim fails
    the row only if it is still queued — a second delivery of the task that
    gave up waiting must not end the deploy the first one runs.
    """
    if record is None:
        _clear_dead(workload, recover=True)
        record = DeployRecord.open(
            workload=workload, reason=reason, user=user, reference=reference,
            rolled_back_from=rolled_back_from, owner=owners.current(),
        )
    if record.outcome != DeployRecord.Outcome.QUEUED:
        return record
    try:
        with locks.workload_lock(workload.pk, keep_waiting=_restore_running(workload)):
            if not record.claim():
                return record
            if _finish_interrupted_restores(workload, record):
                run(workload, record)
    except locks.LockTimeout as exc:
        _fail_unless_taken(workload, record, DeployError(Failure.LOCK_TIMEOUT, str(exc)))
    except Exception:  # noqa: BLE001 - the lock itself failed; still a ledger row
        _fail_unless_taken(workload, record,
                           DeployError(Failure.INTERNAL, traceback.format_exc()))
    except BaseException:
        # Ctrl-C in `manage.py deploy`: the swap put the old containers back;
        # the ledger row must not stay "running".
        _fail_unless_taken(workload, record, DeployError(Failure.INTERRUPTED, "interrupted"))
        raise
    return record


def _clear_dead(workload: Workload, *, recover: bool = False) -> None:
    """Fail unfinished deploys whose process is gone, so they stop blocking new ones.

    Queued rows that can no longer run are failed at once (engine/lost.py); a
    running one whose process died is failed once the workload's lock is
    free, unless it left a swap to finish or undo: the sweep, or the next
    holder of the lock, does that with the engine. `recover` (a command or a
    worker, never a web request): this caller is that holder.
    """
    lost.fail_lost(workload)
    if locks.is_held(workload.pk):
        return  # (a restore's redeploy) someone may be waiting for this very lock
    if not (recover or lost.workloads_with_started_jobs(workload)):
        return
    try:
        with locks.try_workload_lock(workload.pk):
            if recover:
                recovery.recover_workload(workload)
            else:
                swap_recovery.fail_dead_rows(workload)
    except locks.LockTimeout:
        pass  # someone works on the workload; it recovers what it finds first
    except recovery.RecoveryError:
        logger.exception("what a killed process left of workload %s cannot be recovered",
                         workload.pk)


def _fail_unless_taken(workload: Workload, record: DeployRecord, error: DeployError) -> None:
    """Record the failure on a row this call claimed, or on one still queued (claimed here to
    fail it); a row another worker claimed is left to that worker."""
    if record.outcome == DeployRecord.Outcome.RUNNING or record.claim():
        record_failure(workload, record, error, [])


def _restore_running(workload: Workload):
    """While a restore of the workload is active, a deploy waits for it past the lock timeout."""
    return RestoreJob.objects.active().filter(workload=workload).exists


def _finish_interrupted_restores(workload: Workload, record: DeployRecord) -> bool:
    """Recover a restore of this workload that died, before deploying onto its volumes.

    A restore holds the lock to its end, so one whose journal is still on disk
    while we hold the lock was killed: its volumes may be half swapped. False
    (and the deploy fails) if the recovery cannot decide what to do.
    """
    try:
        recovery.recover_workload(workload, keep=record)
    except recovery.RecoveryError as exc:
        record_failure(workload, record, DeployError(Failure.INTERNAL, str(exc)), [])
        return False
    return True


def rollback_target(*, workload: Workload, deploy_id: int) -> DeployRecord:
    """The workload's own deploy `deploy_id`, checked to be a valid rollback target.

    Raises DeployRecord.DoesNotExist for a deploy of another workload (so it
    is indistinguishable from one that does not exist) and RollbackRefused
    when the deploy exists but cannot be replayed.
    """
    target = workload.deploys.get(pk=deploy_id)
    if target.source_kind != workload.source_kind:
        raise RollbackRefused(
            _("Deploy #%(id)d ran from another source kind (%(then)s) than the workload "
              "uses now (%(now)s); switch the workload back to roll back to it.")
            % {
                "id": target.pk,
                "then": Workload.SourceKind(target.source_kind).label,
                "now": Workload.SourceKind(workload.source_kind).label,
            }
        )
    if target.outcome != DeployRecord.Outcome.SUCCEEDED:
        raise RollbackRefused(
            _("Deploy #%(id)d did not succeed; only a successful deploy can be rolled back to.")
            % {"id": target.pk}
        )
    if not target.pinned_reference:
        raise RollbackRefused(
            _("Deploy #%(id)d has no pinned reference to roll back to.") % {"id": target.pk}
        )
    return target


def request_rollback(
    *, workload: Workload, deploy_id: int, user: AbstractBaseUser | None = None,
    configuration: bool = True, secrets: dict[str, str] | None = None,
) -> DeployRecord:
    """Queue a deploy of an earlier successful deploy's pinned reference.

    With `configuration` (the default) the workload's configuration and its
    configured image or ref are first set back to what that deploy ran
    (engine/rollbacks.py; `secrets` supplies values no longer kept), in the
    transaction that queues the deploy: a refusal of either changes nothing.
    """
    target = rollback_target(workload=workload, deploy_id=deploy_id)
    _refuse_during_rollback_with_data(workload)
    with _all_or_nothing(workload):
        restored = _restore(workload, target, configuration, secrets, user)
        return request_deploy(
            workload=workload, reason=DeployRecord.Reason.ROLLBACK, user=user,
            reference=target.replay_reference, rolled_back_from=target,
            rollback_restored=restored,
        )


def rollback(
    *, workload: Workload, deploy_id: int, user: AbstractBaseUser | None = None,
    configuration: bool = True, secrets: dict[str, str] | None = None,
) -> DeployRecord:
    """Roll back now, in this process (the `rollback` command); as request_rollback()."""
    target = rollback_target(workload=workload, deploy_id=deploy_id)
    _clear_dead(workload, recover=True)
    _refuse_during_rollback_with_data(workload)
    with _all_or_nothing(workload):
        restored = _restore(workload, target, configuration, secrets, user)
        record = DeployRecord.open(
            workload=workload, reason=DeployRecord.Reason.ROLLBACK, user=user,
            reference=target.replay_reference, rolled_back_from=target,
            owner=owners.current(), rollback_restored=restored,
        )
    return dispatch(workload=workload, reason=DeployRecord.Reason.ROLLBACK, record=record)


def _refuse_during_rollback_with_data(workload: Workload) -> None:
    """A rollback with data sets its own configuration after the swap: another rollback
    in the meantime would leave one release's code under the other's configuration."""
    if RestoreJob.objects.active().filter(workload=workload).exclude(
            rollback_reference="").exists():
        raise RollbackRefused(_("A rollback with data of this workload is queued or running; "
                                "wait for it to finish."))


@contextmanager
def _all_or_nothing(workload: Workload) -> Iterator[None]:
    """One transaction; on a refusal the workload object forgets what was set on it too."""
    try:
        with transaction.atomic():
            yield
    except BaseException:
        workload.refresh_from_db()
        raise


def _restore(workload: Workload, target: DeployRecord, configuration: bool,
             secrets: dict[str, str] | None, user: AbstractBaseUser | None) -> str:
    """Set the configuration back when asked; what the ledger row says the rollback restored."""
    if not configuration:
        return DeployRecord.RollbackRestored.CODE
    restore_configuration(workload=workload, target=target, secrets=secrets, user=user)
    return DeployRecord.RollbackRestored.CODE_CONFIGURATION


def remove_workload(*, workload: Workload) -> None:
    """Remove the workload's containers from the engine, then its records.

    Under the workload's lock, so a deploy cannot start containers for a
    workload being removed. If the engine cannot remove the containers,
    nothing is deleted (runtime.EngineError): a record deleted while its
    containers run on would leave them holding ports and volumes, unseen.
    RemovalRefused while a recovery onto it is queued or running: a recovery
    takes the lock only for its restore.
    """
    with locks.workload_lock(workload.pk):
        if BackupRecovery.objects.filter(into=workload,
                                         state__in=BackupRecovery.ACTIVE_STATES).exists():
            raise RemovalRefused
        for kept_failed in (False, True):
            for container in runtime.list_containers(workload.pk, kept_failed=kept_failed):
                runtime.remove(container.id)
        workload.delete()


# What the page of a deploy that failed at start shows of each container's log.
FAILED_START_LOG_LINES = 40


def failed_start_logs(*, record: DeployRecord) -> list[tuple[str, list[runtime.LogLine]]]:
    """(container name, its last log lines) of each container a failed start kept.

    Read from the engine when asked (runtime.read_log's bounds), never stored
    (a log can carry anything the app prints), with the workload's known
    secrets masked. Empty once the next deploy removed the containers, or when
    the engine cannot be asked.
    """
    if not record.keeps_failed_containers:
        return []
    try:
        kept = [c for c in runtime.list_containers(record.workload_id, kept_failed=True)
                if c.labels.get(runtime.DEPLOY_LABEL) == str(record.pk)]
        logs = []
        for container in sorted(kept, key=lambda c: c.name):
            found = workload_logs.container_tail(workload=record.workload, docker_id=container.id,
                                                 tail=FAILED_START_LOG_LINES)
            logs.append((container.name, found.lines if found is not None else []))
        return logs
    except runtime.EngineError as exc:
        logger.warning("the log of deploy %s's failed containers could not be read: %s",
                       record.pk, exc)
        return []
