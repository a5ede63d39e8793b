"""Backup hooks, run under the workload's lock around a capture (docs/concepts.md, "Backup hooks").

A hook is the workload's own command, run with `sh -c` inside its first
replica (the running container with the lowest replica number), once: a dump
written into a volume the replicas share must not be written by each of them
at the same time, and most hooks (a database dump, a flush) need one process
of the application, not all of them.

The pre-backup hook runs while the containers still run, before a `stop`
capture stops them; the post-backup hook runs after they run again (or at the
end of a `live` capture). Each is limited to the workload's
backup_hook_timeout (runtime.exec_in kills it there). What the hooks print
goes to the server log only, with the workload's secrets masked: it is the
application's text, and no page or row shows it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.utils.translation import gettext_noop

from lib import runtime
from lib.redact import for_log
from snapshots.errors import CaptureError
from snapshots.models import Snapshot
from workloads.models import EventLog, HookFailure, Workload

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Messages:
    """A hook's fixed reasons, one set per hook (each reads whole in a translation)."""

    name: str
    failed: str
    timed_out: str
    no_container: str
    engine: str


PRE = _Messages(
    name="pre-backup",
    failed=gettext_noop("The pre-backup hook failed with exit code %(code)d."),
    timed_out=gettext_noop("The pre-backup hook did not finish within %(seconds)d seconds "
                           "and was stopped."),
    no_container=gettext_noop("The pre-backup hook could not run: no container of the "
                              "workload is running."),
    engine=gettext_noop("The pre-backup hook could not be run (Docker: %(error)s)."),
)
POST = _Messages(
    name="post-backup",
    failed=gettext_noop("The post-backup hook after snapshot #%(id)d failed with exit code "
                        "%(code)d."),
    timed_out=gettext_noop("The post-backup hook after snapshot #%(id)d did not finish within "
                           "%(seconds)d seconds and was stopped."),
    no_container=gettext_noop("The post-backup hook after snapshot #%(id)d could not run: no "
                              "container of the workload is running."),
    engine=gettext_noop("The post-backup hook after snapshot #%(id)d could not be run "
                        "(Docker: %(error)s)."),
)


def before(workload: Workload, snapshot: Snapshot) -> None:
    """Run the pre-backup hook, if the workload has one.

    Raises CaptureError when it fails and the workload's policy is `abort`.
    With `continue`, the row keeps the reason as its flag (the panel and the
    API show it beside a ready snapshot) and an event says so; the capture
    goes on.
    """
    command = workload.pre_backup_hook.strip()
    if not command:
        return
    error = _run(workload, snapshot, command, PRE)
    if error is None:
        return
    if workload.pre_hook_failure != HookFailure.CONTINUE:
        raise error
    snapshot.move(only_from=[Snapshot.State.CAPTURING], failure=error.message,
                  failure_params=error.params)
    EventLog.objects.create(
        workload=workload, user=snapshot.user, level=EventLog.Level.WARNING,
        message=gettext_noop("Snapshot #%(id)d is taken although its pre-backup hook failed; "
                             "the snapshots panel says why."),
        params={"id": snapshot.pk},
    )


def after(workload: Workload, snapshot: Snapshot) -> None:
    """Run the post-backup hook, if the workload has one; never raises.

    It runs whatever became of the capture: it is where what the pre-backup
    hook did (a lock, a dump) is undone. A failure is an event, the snapshot
    stays as it is.
    """
    command = workload.post_backup_hook.strip()
    if not command:
        return
    try:
        error = _run(workload, snapshot, command, POST)
        if error is not None:
            EventLog.objects.create(
                workload=workload, user=snapshot.user, level=EventLog.Level.WARNING,
                message=error.message, params=error.params,
            )
    except Exception:  # noqa: BLE001 - the snapshot is taken; a hook must not undo that
        logger.exception("snapshot %s: the post-backup hook of workload %s failed",
                         snapshot.pk, workload.pk)


def _run(workload: Workload, snapshot: Snapshot, command: str,
         messages: _Messages) -> CaptureError | None:
    """Run one hook in the first running replica; the reason it failed, or None."""
    ids = {"id": snapshot.pk} if messages is POST else {}
    secrets = workload.secret_values()
    try:
        container = _first_replica(workload)
        if container is None:
            return CaptureError(messages.no_container, **ids)
        result = runtime.exec_in(container.id, command, timeout=workload.backup_hook_timeout,
                                 secrets=secrets)
    except runtime.EngineError as exc:
        logger.error("snapshot %s: the %s hook of workload %s could not be run: %s",
                     snapshot.pk, messages.name, workload.pk, for_log(exc.raw, secrets))
        return CaptureError(messages.engine, error=str(exc), **ids)
    logger.log(
        logging.INFO if result.ok else logging.WARNING,
        "snapshot %s: the %s hook of workload %s ended (exit code %s, %.1f s%s); its output "
        "ends with:\n%s", snapshot.pk, messages.name, workload.pk, result.exit_code,
        result.seconds, ", timed out" if result.timed_out else "", result.output,
    )
    if result.timed_out or result.exit_code is None:
        return CaptureError(messages.timed_out, seconds=workload.backup_hook_timeout, **ids)
    if result.exit_code != 0:
        return CaptureError(messages.failed, code=result.exit_code, **ids)
    return None


def _first_replica(workload: Workload) -> runtime.ContainerInfo | None:
    running = [c for c in runtime.list_containers(workload.pk) if c.running]
    return min(running, key=_replica, default=None)


def _replica(container: runtime.ContainerInfo) -> tuple[int, str]:
    try:
        number = int(container.labels.get(runtime.REPLICA_LABEL, ""))
    except ValueError:
        number = 1 << 30  # a container without a replica number comes last
    return number, container.name
