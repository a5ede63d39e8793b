"""Restore entry points: queue a restore, or run one now.

request_restore() opens the job (single flight per workload) and queues it;
restore() takes the workload's lock, finishes a restore a dead process left,
claims the job and runs the body (engine/locked/restore.py). Neither trusts
the snapshot: docs/restore-protocol.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils.translation import gettext, gettext_noop

from backups.models import BackupRecovery
from engine import deploys, lost, queue, rollbacks
from engine.locked import preflight, recovery
from engine.locked.restore import Restore, refuse
from lib import crashpoints, locks, owners
from snapshots.archive_format import Limits
from snapshots.errors import PreflightError, RestoreError
from snapshots.models import RestoreJob, Snapshot
from workloads import configuration as configuration_rules
from workloads.jobs import acting_user
from workloads.models import DeployRecord, Workload

logger = logging.getLogger(__name__)

Outcome = RestoreJob.Outcome


class RestoreBusy(Exception):
    """Another restore of the workload is queued or running; `active` is that job (if known)."""

    def __init__(self, active: RestoreJob | None) -> None:
        super().__init__("another restore of this workload is queued or running")
        self.active = active

    def __str__(self) -> str:
        return gettext("Another restore of this workload is queued or running; wait for it to "
                       "finish.")


def request_restore(*, workload: Workload, snapshot: Snapshot,
                    user: AbstractBaseUser | None = None,
                    rollback_to: DeployRecord | None = None,
                    rollback_configuration: bool = False) -> RestoreJob:
    """Queue a restore on the task worker; returns the queued job to follow.

    Raises RestoreBusy while another restore of the workload is queued or
    running (a partial unique index says so across processes), and
    PreflightError if the snapshot is not one that can be restored at all.
    `rollback_to`: a rollback with data (request_rollback_with_data).
    """
    job = _open(workload, snapshot, user, recover=False, rollback_to=rollback_to,
                rollback_configuration=rollback_configuration)
    transaction.on_commit(lambda: queue.enqueue(queue.RESTORE, job.pk, name=f"restore-{job.pk}"))
    return job


def restore(*, workload: Workload, snapshot: Snapshot, user: AbstractBaseUser | None = None,
            job: RestoreJob | None = None, limits: Limits | None = None,
            progress: Callable[[RestoreJob], None] | None = None,
            from_recovery: bool = False,
            rollback_to: DeployRecord | None = None,
            rollback_configuration: bool = False) -> RestoreJob:
    """Restore now, in this process, under the workload's lock; returns the finished job.

    `job` is a queued job from request_restore(); it is claimed only once the
    lock is held (so a running job always has the lock), and if another
    worker has claimed it already it is returned untouched. `progress` is
    called with the job whenever its phase or progress changes. `from_recovery`: the
    caller is the recovery from backup onto this workload (engine/disaster.py), which
    otherwise keeps every other restore of it away. `rollback_to`: a rollback with data
    (rollback_with_data).
    """
    if job is None:
        job = _open(workload, snapshot, user, recover=True, from_recovery=from_recovery,
                    rollback_to=rollback_to, rollback_configuration=rollback_configuration)
    try:
        with locks.workload_lock(workload.pk):
            recovery.recover_workload(workload)  # a killed restore of this workload first
            if not job.claim():
                return job
            crashpoints.reached("restore.claimed")
            Restore(job, workload, snapshot, limits or Limits.from_settings(), progress).run()
    except locks.LockTimeout:
        # Only while still queued: a second delivery of the task waits here
        # while the first runs the restore, and must not end it.
        refuse(job, workload, RestoreError(gettext_noop(
            "Another deploy, restore or snapshot of this workload did not finish in time.")),
            only_queued=True)
    except recovery.RecoveryError as exc:
        logger.error("restore %s: an earlier restore could not be recovered: %s", job.pk, exc)
        refuse(job, workload, RestoreError(gettext_noop(
            "An earlier restore of this workload was interrupted and cannot be recovered "
            "automatically; the server log says what was found.")), only_queued=True)
    return job


def _open(workload: Workload, snapshot: Snapshot, user: AbstractBaseUser | None, *,
          recover: bool, from_recovery: bool = False,
          rollback_to: DeployRecord | None = None,
          rollback_configuration: bool = False) -> RestoreJob:
    if snapshot.workload_id != workload.pk:
        raise Snapshot.DoesNotExist(f"snapshot {snapshot.pk} is not one of workload {workload.pk}")
    if not snapshot.is_ready:
        raise PreflightError(gettext_noop("Snapshot #%(id)d is not ready to restore."),
                             id=snapshot.pk)
    _clear_dead(workload, recover=recover)
    if not from_recovery and BackupRecovery.objects.filter(
            into=workload, state__in=BackupRecovery.ACTIVE_STATES).exists():
        # A recovery from backup onto it is under way: it restores the workload itself.
        raise RestoreBusy(None)
    try:
        with transaction.atomic():
            # Run in-process (the command), the job is this process's from the start.
            return RestoreJob.objects.create(
                workload=workload, snapshot=snapshot, bytes_total=snapshot.data_bytes,
                user=acting_user(user), owner=owners.current() if recover else "",
                rollback_to=rollback_to,
                rollback_reference=rollback_to.replay_reference if rollback_to else "",
                rollback_configuration=rollback_configuration and rollback_to is not None,
            )
    except IntegrityError:
        raise RestoreBusy(RestoreJob.objects.active().filter(workload=workload).first()) from None


# --- rollback with data: a restore of the target's pre-deploy snapshot ---------------------

def rollback_with_data_target(*, workload: Workload, deploy_id: int,
                              configuration: bool = False,
                              user: AbstractBaseUser | None = None,
                              ) -> tuple[DeployRecord, Snapshot]:
    """The deploy to roll back to and the snapshot taken just before it ran.

    DeployRecord.DoesNotExist and deploys.RollbackRefused as for a plain rollback;
    RollbackRefused too when the deploy has no ready pre-deploy snapshot or is not
    pinned by image digest, and PreflightError when the workload's volumes changed
    since that snapshot. With `configuration`, also what a rollback of the
    configuration would refuse (engine.rollbacks), and a secret whose kept value is
    gone (a value cannot be supplied: it would have to wait in the job until the
    swap). The restore's own pre-flight checks the data again under the lock.
    """
    target = deploys.rollback_target(workload=workload, deploy_id=deploy_id)
    snapshot = Snapshot.objects.filter(deploy=target, workload=workload,
                                       kind=Snapshot.Kind.PRE_DEPLOY).first()
    if snapshot is None or not snapshot.is_ready:
        raise deploys.RollbackRefused(gettext(
            "Deploy #%(id)d has no ready snapshot taken before it ran, so its data cannot be "
            "put back; roll back without the data.") % {"id": target.pk})
    if "@sha256:" not in target.replay_reference:
        raise deploys.RollbackRefused(gettext(
            "Deploy #%(id)d is not pinned by image digest; a rollback with data needs one.")
            % {"id": target.pk})
    preflight.check_volumes_unchanged(snapshot, workload.captured_volumes())
    if configuration:
        _check_configuration(workload, target, user)
    return target, snapshot


def _check_configuration(workload: Workload, target: DeployRecord,
                         user: AbstractBaseUser | None) -> None:
    """Refuse now what setting the configuration back after the swap would refuse."""
    missing = configuration_rules.missing_secrets(workload, target.configuration or {"env": []})
    if missing:
        raise deploys.RollbackRefused(gettext(
            "The value of the secret variable %(names)s that this deploy ran with is no longer "
            "kept, and a rollback with data cannot take one: roll back with the data but "
            "without the configuration, or the configuration first without the data."
        ) % {"names": ", ".join(missing)})
    # A dry run of the rollback of the configuration: every rule an edit keeps today.
    with transaction.atomic():
        rollbacks.restore_configuration(workload=workload, target=target, user=user)
        transaction.set_rollback(True)
    workload.refresh_from_db()


def request_rollback_with_data(*, workload: Workload, deploy_id: int,
                               user: AbstractBaseUser | None = None,
                               configuration: bool = False) -> RestoreJob:
    """Queue a rollback with data: one restore job, whose redeploy is the rollback.

    The target's pre-deploy snapshot is restored as any snapshot is, and after
    the commit the workload runs the target's pinned digest (and, with
    `configuration`, the configuration it ran, set back just before that redeploy)
    (docs/restore-protocol.md, "Rollback with data"). Raises as
    rollback_with_data_target() and request_restore().
    """
    target, snapshot = rollback_with_data_target(workload=workload, deploy_id=deploy_id,
                                                 configuration=configuration, user=user)
    return request_restore(workload=workload, snapshot=snapshot, user=user, rollback_to=target,
                           rollback_configuration=configuration)


def rollback_with_data(*, workload: Workload, deploy_id: int,
                       user: AbstractBaseUser | None = None, configuration: bool = False,
                       progress: Callable[[RestoreJob], None] | None = None) -> RestoreJob:
    """Roll back with data now, in this process (the `rollback --data` command)."""
    target, snapshot = rollback_with_data_target(workload=workload, deploy_id=deploy_id,
                                                 configuration=configuration, user=user)
    return restore(workload=workload, snapshot=snapshot, user=user, progress=progress,
                   rollback_to=target, rollback_configuration=configuration)


def _clear_dead(workload: Workload, *, recover: bool) -> None:
    """Close the jobs of restores that died, so they block nothing.

    In a web request (`recover=False`) a journal is never recovered — that
    can mean a redeploy and archiving gigabytes — so a killed restore that
    left one keeps its job active, and keeps refusing new restores, until
    the sweep (every minute in the task worker, and at start-up) or the
    workload's next deploy has finished or undone it. The restore command
    (`recover=True`) recovers it first, like any holder of the lock. A
    queued job a dead process had taken is failed at once (engine/lost.py).
    """
    lost.fail_lost(workload)
    try:
        with locks.try_workload_lock(workload.pk):
            if recover:
                recovery.recover_workload(workload)
            else:
                RestoreJob.fail_dead(workload=workload, lock_held=True)
    except locks.LockTimeout:
        pass  # a deploy, restore or capture runs: its rows are alive
    except recovery.RecoveryError:
        logger.exception("an interrupted restore of workload %s cannot be recovered", workload.pk)


