"""Start, stop and restart a workload's containers: an operator's everyday verbs.

Each takes the workload's lock without waiting (a deploy, restore or
capture under way makes it refuse with OperationBusy rather than queue
behind them), acts on every replica through the engine, records the new
state (running, or stopped by an operator) and an event; none is a deploy.
Containers run with the `unless-stopped` restart policy, so a workload an
operator stopped stays stopped across a restart of Docker or of Berth; a
deploy (or a restore's redeploy) runs it again. docs/concepts.md.
"""

from __future__ import annotations

import logging

from django.contrib.auth.models import AbstractBaseUser
from django.utils.translation import gettext, gettext_noop

from lib import locks, runtime
from workloads.jobs import acting_user
from workloads.models import EventLog, Workload

logger = logging.getLogger(__name__)

ACTIONS = ("start", "stop", "restart")


class OperationRefused(Exception):
    """The workload cannot be operated now; the message says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return gettext(self.message)


class OperationBusy(OperationRefused):
    """A deploy, restore or capture holds the workload's lock."""


def operate(*, workload: Workload, action: str, user: AbstractBaseUser | None = None
            ) -> Workload:
    """Start, stop or restart every container of `workload`; returns it with its new state.

    OperationBusy while another job holds the lock, OperationRefused for a
    workload with no container (never deployed) or an unknown action, and the
    engine's errors (runtime.EngineError) as they are.
    """
    if action not in ACTIONS:
        raise OperationRefused(gettext_noop("Start, stop or restart: nothing else."))
    try:
        with locks.try_workload_lock(workload.pk):
            workload.refresh_from_db()
            containers = sorted(runtime.list_containers(workload.pk), key=lambda c: c.name)
            if not containers:
                raise OperationRefused(gettext_noop(
                    "This workload has no containers: deploy it first."))
            for container in containers:
                if action in ("stop", "restart") and container.running:
                    runtime.stop(container.id)
                if action in ("start", "restart"):
                    runtime.start(container.id)
            workload.mark_operated(Workload.State.STOPPED if action == "stop"
                                   else Workload.State.RUNNING)
    except locks.LockTimeout:
        raise OperationBusy(gettext_noop(
            "A deploy, restore or snapshot of this workload is under way; try again when it "
            "has finished.")) from None
    EventLog.objects.create(
        workload=workload, user=acting_user(user),
        message={"start": gettext_noop("Started the workload's containers."),
                 "stop": gettext_noop("Stopped the workload's containers."),
                 "restart": gettext_noop("Restarted the workload's containers.")}[action],
        params={},
    )
    logger.info("workload %s: %s (%d containers)", workload.pk, action, len(containers))
    return workload
