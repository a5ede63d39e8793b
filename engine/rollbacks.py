"""Rollback of a workload's configuration, and what a rollback would change.

`restore_configuration()` sets a workload's configuration back to what an
earlier deploy ran (workloads/configuration.py) and its configured image or
ref to what that deploy ran, so that the next plain deploy does not go
forward by surprise. It queues nothing: `engine.deploys.request_rollback()`
calls it in the transaction that queues the deploy, and another operation
(a rollback with data) can call it inside its own. docs/deploys.md,
"Rollback", has the why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.utils import timezone
from django.utils.translation import gettext as _

from snapshots.models import Snapshot
from workloads import configuration, edits
from workloads.models import DeployRecord, RegistryCredential, Workload

CHANGE_PERMISSION = "workloads.change_workload"


class RollbackRefused(Exception):
    """The chosen deploy cannot be rolled back to; the message says why."""


def restore_configuration(
    *, workload: Workload, target: DeployRecord, secrets: dict[str, str] | None = None,
    user: AbstractBaseUser | None = None,
) -> Workload:
    """Set `workload` back to the configuration deploy `target` ran, and its image or git ref
    to the digest or commit it ran; returns the workload.

    RollbackRefused when the target's configuration was not recorded;
    ValidationError (keyed `secrets`, `configuration` or
    `registry_credential`) when a secret's value is no longer kept and not
    supplied in `secrets`, or the recorded configuration breaks a rule an edit
    must keep today. Either way nothing is changed.
    """
    if target.configuration is None:
        raise RollbackRefused(_(
            "Deploy #%(id)d ran before Berth recorded configurations: its configuration "
            "was not recorded. Roll back the code only."
        ) % {"id": target.pk})
    if user is not None:
        if not user.has_perm(CHANGE_PERMISSION):
            # The configuration is the workload's settings, env and secrets: rolling it
            # back is an edit, which the permission to roll back alone does not give.
            raise PermissionDenied(_(
                "Rolling back the configuration changes the workload's settings: it needs "
                "the permission to change workloads too. Roll back the code only."))
        _check_credential_use(user, workload, target.configuration)
    configuration.apply(workload, target.configuration, reference=target.pinned_reference,
                        secrets=secrets)
    return workload


def _check_credential_use(user: AbstractBaseUser, workload: Workload, snapshot: dict) -> None:
    """Attaching a registry credential takes its permission, also through a rollback."""
    if workload.source_kind != Workload.SourceKind.IMAGE:
        return
    recorded = snapshot["settings"].get("registry_credential")
    new = RegistryCredential.objects.filter(pk=recorded).first() if recorded else None
    current = workload.registry_credential if workload.registry_credential_id else None
    edits.check_credential_use(user, current=current, new=new)


@dataclass(frozen=True)
class Preview:
    """What a rollback to `target` changes (the rollback dialog, GET …/diff)."""

    target: DeployRecord
    configured: str
    running: str
    code: str
    configures: str
    recorded: bool
    changes: list[configuration.Change]
    missing_secrets: list[str]
    snapshot: Snapshot | None
    snapshot_age: timedelta | None

    @property
    def code_changes(self) -> bool:
        return self.running != self.code

    @property
    def snapshot_taken(self) -> datetime | None:
        return self.snapshot.created if self.snapshot else None


def preview(*, workload: Workload, target: DeployRecord) -> Preview:
    """What differs between the workload now and deploy `target`: the code, each setting, each
    env name, the ports and volumes, and the snapshot taken before `target` ran, if any."""
    recorded = target.configuration is not None
    snapshot = _pre_deploy_snapshot(target)
    return Preview(
        target=target,
        configured=workload.source_reference,
        running=workload.running_reference,
        code=target.replay_reference,
        configures=target.pinned_reference,
        recorded=recorded,
        changes=(configuration.diff(configuration.describe(workload), target.configuration)
                 if recorded else []),
        missing_secrets=(configuration.missing_secrets(workload, target.configuration)
                         if recorded else []),
        snapshot=snapshot,
        snapshot_age=timezone.now() - snapshot.created if snapshot else None,
    )


def _pre_deploy_snapshot(target: DeployRecord) -> Snapshot | None:
    try:
        snapshot = target.pre_deploy_snapshot
    except ObjectDoesNotExist:
        return None
    return snapshot if snapshot.state == Snapshot.State.READY else None
