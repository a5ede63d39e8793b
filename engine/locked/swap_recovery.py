"""Finishing or undoing what a killed deploy or capture did to a workload's containers.

Runs under the workload's lock, from the container journal
(workloads/container_journal.py): a deploy whose new containers all ran
(COMMIT) is finished forward — the old containers removed, the new ones under
their final names, the ledger row succeeded; any other deploy is undone — the
new containers removed, the old ones started again, the row failed as
`interrupted`. A capture that had stopped the workload starts its containers
again. Never both generations running on one volume, never neither.
docs/deploys.md ("After a crash") has the why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from django.utils.translation import gettext_noop

from engine.locked import deploy
from lib import locks, runtime
from snapshots import storage
from snapshots.errors import CaptureError
from snapshots.models import Snapshot
from workloads import container_journal
from workloads.container_journal import Operation
from workloads.models import Container, DeployRecord, EventLog, Workload

logger = logging.getLogger(__name__)

INTERRUPTED_CAPTURE = gettext_noop("The capture was interrupted before it finished.")


class SwapRecoveryError(Exception):
    """A container journal that cannot be read; nothing was changed for it."""


def recover(workload: Workload, *, say: Callable[[str], None] = logger.info) -> int:
    """Finish or undo every operation the workload's container journal holds; how many."""
    locks.assert_held(workload.pk)
    try:
        operations = container_journal.for_workload(workload.pk)
    except (container_journal.JournalError, OSError) as exc:
        raise SwapRecoveryError(str(exc)) from exc
    for operation in operations:
        _note(operation)
        if operation.kind == container_journal.DEPLOY:
            direction = "finishing" if operation.committed else "undoing"
            say(f"Deploy #{operation.row} of workload {workload.pk}: {direction} its swap.")
            _recover_deploy(workload, operation)
        else:
            say(f"Snapshot #{operation.row} of workload {workload.pk}: starting the "
                "containers it had stopped.")
            _recover_capture(workload, operation)
    return len(operations)


def forget(workload_id: int) -> None:
    """A deleted workload's container journals: its containers went with it (remove_workload)."""
    locks.assert_held(workload_id)
    try:
        operations = container_journal.for_workload(workload_id)
    except container_journal.JournalError as exc:
        raise SwapRecoveryError(str(exc)) from exc
    for operation in operations:
        container_journal.remove(operation)


def fail_dead_rows(workload: Workload, *, keep: DeployRecord | None = None) -> int:
    """Under the lock: fail the workload's deploys and captures that cannot still be running.

    A running deploy or a capturing snapshot holds the lock until it ends, so
    while the caller holds it, every one but the caller's own (`keep`) is
    dead — its process was killed, or lives on without it (its database
    connection broke mid-way). One that left a container journal is left to
    recover() (it needs the engine). Queued rows a dead process had taken are
    failed too; queued rows a live worker holds may be waiting for this lock.
    """
    locks.assert_held(workload.pk)
    failed = 0
    for record in DeployRecord.objects.filter(workload=workload).active():
        running = record.outcome == DeployRecord.Outcome.RUNNING
        if (keep is None or record.pk != keep.pk) and _dead(record, running=running) and \
                not container_journal.exists(workload.pk, container_journal.DEPLOY, record.pk):
            failed += _fail_deploy(workload, record)
    for snapshot in Snapshot.objects.filter(workload=workload).active():
        if _dead(snapshot, running=snapshot.state == Snapshot.State.CAPTURING) and \
                not container_journal.exists(workload.pk, container_journal.CAPTURE, snapshot.pk):
            failed += _fail_capture(workload, snapshot)
    return failed


def _dead(row: DeployRecord | Snapshot, *, running: bool) -> bool:
    return running or (bool(row.owner) and not row.owner_alive)


def _note(operation: Operation) -> None:
    if operation.steps and operation.steps[-1]["step"] == container_journal.RECOVER:
        return  # once: a journal the sweep keeps retrying does not grow every minute
    try:
        operation.record(container_journal.RECOVER)
    except OSError:
        # A note for people only; what to do is decided by the containers found.
        logger.warning("the recovery of %s %s could not be journaled", operation.kind,
                       operation.row, exc_info=True)


def _recover_deploy(workload: Workload, operation: Operation) -> None:
    record = DeployRecord.objects.select_related("user").filter(pk=operation.row).first()
    found = runtime.list_containers(workload.pk)
    new = [c for c in found if c.labels.get(runtime.DEPLOY_LABEL) == str(operation.row)]
    old = [c for c in found if c.id in set(operation.old)]
    if operation.committed and new and _all_running(new):
        _finish_forward(workload, operation, record, new, old)
    elif operation.committed and new and not old:
        # The new containers do not run and the old are gone: nothing to go back to.
        logger.error("deploy %s: its new containers do not start and the old ones are "
                     "gone", operation.row)
        _fail_deploy(workload, record)
        container_journal.remove(operation)
    else:
        _undo(workload, operation, record, new)


def _all_running(containers: list[runtime.ContainerInfo]) -> bool:
    for container in containers:
        if not container.running and not _started(container.id):
            return False
    return True


def _started(container_id: str) -> bool:
    try:
        runtime.start(container_id)
    except runtime.EngineError as exc:
        logger.warning("container %s did not start: %s", container_id, exc.raw)
        return False
    return True


def _finish_forward(workload: Workload, operation: Operation, record: DeployRecord | None,
                    new: list[runtime.ContainerInfo],
                    old: list[runtime.ContainerInfo]) -> None:
    for container in old:
        runtime.remove(container.id)
    renamed = []
    for container in sorted(new, key=lambda c: int(c.labels.get(runtime.REPLICA_LABEL, 0))):
        replica = int(container.labels.get(runtime.REPLICA_LABEL, 1))
        name = workload.container_name(replica)
        if container.name != name:
            try:
                runtime.rename(container.id, name)
            except runtime.EngineError as exc:
                logger.warning("container %s keeps its name %s: %s", container.id,
                               container.name, exc.raw)
                name = container.name
        renamed.append((container.id, name, replica))
    if record is not None and record.outcome in DeployRecord.ACTIVE:
        complete = all(name == workload.container_name(replica) for _i, name, replica in renamed)
        deploy.finish(workload, record,
                      deploy.Swap(new=renamed, operation=operation, complete=complete))
        EventLog.objects.create(
            workload=workload, user=record.user, level=EventLog.Level.WARNING,
            message=gettext_noop("Deploy #%(deploy)d was interrupted (its process stopped) "
                                 "after its new containers started; Berth finished it."),
            params={"deploy": record.pk},
        )
    else:
        # Recorded already (its process died later, or a rename had failed): only the
        # names in the index may be out of date.
        for container_id, name, _replica in renamed:
            Container.objects.filter(docker_id=container_id).update(name=name)
        container_journal.remove(operation)


def _undo(workload: Workload, operation: Operation, record: DeployRecord | None,
          new: list[runtime.ContainerInfo]) -> None:
    for container in new:
        runtime.remove(container.id)
    if operation.has(container_journal.STOP):
        _start_again(workload, operation)
    if record is not None:
        _fail_deploy(workload, record)
    container_journal.remove(operation)


def _start_again(workload: Workload, operation: Operation) -> bool:
    """Start the containers the operation stopped (or was stopping) once they are down.

    The engine goes on stopping a container after the process that asked for
    it died: one that still shows as running may be in its stop timeout. Its
    stop is asked for again (which waits for the one in progress, and does
    nothing to a stopped container) before it is started — unless it started
    after the stopping was journaled: nothing the dead process asked for can
    stop it any more, and it is left running.
    """
    since = _stopping_since(operation)
    present = {c.id: c for c in runtime.list_containers(workload.pk)}
    started = True
    for container_id in operation.stopped:
        container = present.get(container_id)
        if container is None:
            continue
        if container.running and since is not None:
            began = runtime.started_at(container_id)
            if began is not None and began > since:
                continue
        runtime.stop(container_id)
        started = _started(container_id) and started
    if not started:
        message = {
            container_journal.DEPLOY: gettext_noop(
                "The containers deploy #%(id)d had stopped could not be started again after "
                "its process stopped; deploy the workload to bring it back."),
            container_journal.CAPTURE: gettext_noop(
                "The containers snapshot #%(id)d had stopped could not be started again after "
                "its process stopped; deploy the workload to bring it back."),
        }[operation.kind]
        EventLog.objects.create(workload=workload, level=EventLog.Level.ERROR, message=message,
                                params={"id": operation.row})
    return started


def _stopping_since(operation: Operation) -> datetime | None:
    """When the operation journaled that it was about to stop the containers."""
    step = container_journal.STOP if operation.kind == container_journal.DEPLOY \
        else container_journal.PREPARE
    for entry in operation.steps:
        if entry["step"] == step:
            try:
                return datetime.fromisoformat(entry["at"])
            except (KeyError, TypeError, ValueError):
                return None
    return None


def _fail_deploy(workload: Workload, record: DeployRecord | None) -> int:
    if record is None or record.outcome not in DeployRecord.ACTIVE:
        return 0
    if record.outcome == DeployRecord.Outcome.QUEUED:
        return DeployRecord.objects.filter(pk=record.pk, outcome=record.outcome) \
            .fail_interrupted()
    deploy.record_failure(workload, record,
                          deploy.DeployError(DeployRecord.Failure.INTERRUPTED,
                                             "its process stopped"), [])
    return 1


def _recover_capture(workload: Workload, operation: Operation) -> None:
    _start_again(workload, operation)
    snapshot = Snapshot.objects.filter(pk=operation.row).first()
    if snapshot is not None and snapshot.is_active:
        _fail_capture(workload, snapshot)
    container_journal.remove(operation)


def _fail_capture(workload: Workload, snapshot: Snapshot) -> int:
    if not snapshot.fail(CaptureError(INTERRUPTED_CAPTURE), only_from=snapshot.state):
        return 0
    # Killed after placing its archive and before recording it: the file is no one's.
    storage.remove_archive(workload.pk, snapshot.archive)
    EventLog.objects.create(
        workload=workload, user=snapshot.user, level=EventLog.Level.WARNING,
        message=gettext_noop("Snapshot #%(id)d failed; the snapshots panel says why."),
        params={"id": snapshot.pk},
    )
    return 1
