"""The body of a deploy, run under the workload's lock: resolve, swap the containers, record.

The swap keeps a single-writer app from ever running twice on one volume and
never leaves a workload without containers when something fails:

1. resolve the source (engine/locked/sources.py): pull the image and pin it by
   digest, or fetch the repository, pin the commit and build its image;
2. create the new containers (under temporary names) from the pinned image;
3. stop the old containers;
4. take the pre-deploy snapshot when the workload wants one (the old
   containers are stopped already, so it costs no extra stop; fail-open);
5. start the new ones — if that fails, remove them and restart the old;
6. remove the old containers, then give the new ones their final names.

docs/deploys.md says why each step is where it is.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import translation
from django.utils.translation import gettext_noop

from alerts import outbox
from alerts.models import Event
from engine.locked import capture, sources
from lib import crashpoints, locks, owners, runtime
from lib.redact import redact
from workloads import configuration, container_journal
from workloads.models import Container, DeployRecord, EventLog, Workload

logger = logging.getLogger(__name__)

Failure = DeployRecord.Failure


class DeployError(Exception):
    """A deploy step failed; `code` is a DeployRecord.Failure value."""

    def __init__(self, code: str, raw: str = "", exit_code: int | None = None) -> None:
        super().__init__(Failure(code).label)
        self.code = code
        self.raw = raw
        self.exit_code = exit_code


def dispatch_locked(
    *, workload: Workload, reason: str, user: AbstractBaseUser | None = None,
    reference: str = "", backup: bool = True,
    opened: Callable[[DeployRecord], None] | None = None,
    rolled_back_from: DeployRecord | None = None, rollback_restored: str = "",
) -> DeployRecord:
    """dispatch() for a caller that already holds the workload's lock (restore).

    `backup=False` skips the pre-deploy snapshot. The restore passes it: the
    volumes it redeploys onto hold exactly the snapshot it just restored, the
    data they held before is kept as the restore's `pre_restore` snapshot, and
    capturing them here would stretch the workload's downtime with the size
    of its data. `opened` is told the row as soon as it exists (the restore
    links it to its job, so a recovery knows this redeploy ran). `rolled_back_from` and
    `rollback_restored`: a rollback with data's redeploy after its swap (engine/restores.py).
    """
    locks.assert_held(workload.pk)
    record = DeployRecord.open(workload=workload, reason=reason, user=user, reference=reference,
                               owner=owners.current(), rolled_back_from=rolled_back_from,
                               rollback_restored=rollback_restored)
    if opened is not None:
        opened(record)
    record.claim()
    run(workload, record, backup=backup)
    return record


def run(workload: Workload, record: DeployRecord, *, backup: bool = True) -> None:
    secrets: list[str] = []
    try:
        # Re-read: the configuration may have changed while the deploy was queued.
        workload.refresh_from_db()
        _settle_request(workload, record)
        secrets = workload.secret_values()
        workload.mark_deploying()
        _check_config(workload)
        # Recorded before the source is resolved, so a failed pull or build
        # says what it tried too; and again once it is resolved, should an edit
        # have been saved while the image was pulled: the row says what runs.
        configuration.record(workload, record)
        swap = _resolve_and_replace(workload, record, secrets, backup=backup)
    except DeployError as exc:
        record_failure(workload, record, exc, secrets)
        return
    except Exception:  # noqa: BLE001 - every failure must end in a ledger row
        raw = traceback.format_exc()
        record_failure(workload, record, DeployError(Failure.INTERNAL, raw), secrets)
        return
    # The new containers run: whatever fails from here on, the journal (kept
    # until the ledger says so) has the next holder of the lock finish it.
    try:
        finish(workload, record, swap)
    except Exception:  # noqa: BLE001 - the journal keeps what is needed
        logger.exception("deploy %s: the new containers run, but recording it failed; the "
                         "sweep finishes it from its journal", record.pk)


def _resolve_and_replace(workload: Workload, record: DeployRecord, secrets: list[str], *,
                         backup: bool) -> Swap:
    """Pull (or build) the image and swap the containers for ones that run it.

    Image collection of another workload's images can remove the very image this
    deploy just pulled, before its pull was recorded (docs/deploys.md, "Images"):
    the create then finds no image, and as nothing was stopped yet, the deploy
    pulls it once more.
    """
    for attempt in (1, 2):
        try:
            resolved = sources.resolve(workload, record, secrets)
        except sources.SourceFailed as exc:
            raise DeployError(exc.code, exc.raw) from None
        record.pinned_reference, record.image_id = resolved.pinned, resolved.image_id
        configuration.record(workload, record)
        try:
            return _replace_containers(
                workload, resolved.image, record,
                before_start=(lambda: _backup(workload, record)) if backup else None,
            )
        except runtime.ImageMissing as exc:
            if attempt == 2:
                raise DeployError(Failure.CREATE_FAILED, exc.raw) from None
            logger.warning("deploy %s: its image went before the create; pulling it again",
                           record.pk)
    raise AssertionError("unreachable")


def finish(workload: Workload, record: DeployRecord, swap: Swap) -> None:
    """Record a swap that committed: the Container index, the ledger row, the event.

    Then the journal goes. Also how a recovery finishes a killed deploy's swap.
    """
    with transaction.atomic():
        Container.replace_for(workload, swap.new, swap.operation.image)
        record.succeed(swap.operation.pinned, image_id=swap.operation.image_id)
        workload.mark_deployed(record.replay_reference)
        EventLog.objects.create(
            workload=workload, user=record.user, **_deployed_event(record, swap.new)
        )
    if swap.complete:
        container_journal.remove(swap.operation)


def _settle_request(workload: Workload, record: DeployRecord) -> None:
    """Fix what this deploy asks for, against the configuration as it is now.

    A reference without "@" follows the configuration (the tag or git ref of
    now); one with "@" (rollback, restore) is replayed exactly as requested,
    and only if the workload still has the source kind it was recorded with.
    """
    if sources.is_replay(record.requested_reference):
        if record.source_kind != workload.source_kind:
            raise DeployError(Failure.INVALID_CONFIG, "the source kind changed since the deploy")
    else:
        record.source_kind = workload.source_kind
        record.requested_reference = workload.source_reference
    is_git = workload.source_kind == Workload.SourceKind.GIT
    record.repository = workload.git_url if is_git else ""
    record.save(update_fields=["source_kind", "requested_reference", "repository"])


def _deployed_event(record: DeployRecord, new: list) -> dict:
    """The EventLog fields of a successful deploy (translated when shown)."""
    if record.is_git:
        message = gettext_noop("Deployed commit %(commit)s of %(ref)s (replicas: %(replicas)d).")
        params = {"commit": record.pinned_reference[:12], "ref": record.git_ref}
    else:
        message = gettext_noop("Deployed %(reference)s (replicas: %(replicas)d).")
        params = {"reference": record.pinned_reference}
    return {"message": message, "params": params | {"replicas": len(new)}}


def _check_config(workload: Workload) -> None:
    try:
        workload.full_clean(validate_unique=False, validate_constraints=False)
        volumes = list(workload.volumes.all())
        for volume in volumes:
            volume.full_clean(validate_unique=False, validate_constraints=False)
        workload.check_volumes(volumes)
    except ValidationError as exc:
        raise DeployError(Failure.INVALID_CONFIG, str(exc.messages)) from None
    if workload.replicas > 1 and workload.ports.exists():
        raise DeployError(Failure.INVALID_CONFIG, "host ports with more than one replica")
    refused = [str(p) for p in workload.ports.all() if not p.address_allowed()]
    if refused:
        raise DeployError(Failure.INVALID_CONFIG,
                          f"host addresses not in BERTH_PORT_ADDRESSES: {refused}")


def _specs(workload: Workload, pinned: str, record: DeployRecord) -> list[runtime.ContainerSpec]:
    env_vars = list(workload.env_vars.all())
    environment = {env.name: env.get_value() for env in env_vars}
    secret_names = ",".join(sorted(env.name for env in env_vars if env.is_secret))
    ports = {
        f"{p.container_port}/{p.protocol}": (p.host_ip, p.host_port) for p in workload.ports.all()
    }
    binds = {}
    for volume in workload.volumes.all():
        path = volume.host_path()
        os.makedirs(path, exist_ok=True)
        binds[path] = {"bind": volume.target, "mode": "ro" if volume.read_only else "rw"}
    return [
        runtime.ContainerSpec(
            # A temporary name: the old containers still hold the final ones.
            name=f"{workload.container_name(n)}.deploy-{record.pk}",
            image=pinned,
            labels=runtime.labels_for(
                workload.pk,
                **{runtime.REPLICA_LABEL: str(n), runtime.DEPLOY_LABEL: str(record.pk),
                   runtime.SECRET_ENV_LABEL: secret_names},
            ),
            environment=environment,
            ports=ports,
            binds=binds,
            memory_limit=(workload.memory_limit_mib * 1024 * 1024
                          if workload.memory_limit_mib else None),
            health=workload.health_check(),
        )
        for n in range(1, workload.replicas + 1)
    ]


def _backup(workload: Workload, record: DeployRecord) -> None:
    """The pre-deploy snapshot; it never stops the deploy (backup_before_deploy says why)."""
    try:
        capture.backup_before_deploy(workload=workload, record=record)
    except Exception:  # noqa: BLE001 - fail open, even on a bug in the backup itself
        logger.exception("the pre-deploy backup of deploy %s failed", record.pk)


@dataclass
class Swap:
    """A committed swap: the new containers (docker id, name, replica) and its journal.

    `complete` is False when an old container could not be removed or a new
    one renamed: the journal then stays, for the sweep to finish the job.
    """

    new: list[tuple[str, str, int]]
    operation: container_journal.Operation
    complete: bool = True


def _replace_containers(
    workload: Workload, pinned: str, record: DeployRecord,
    before_start: Callable[[], None] | None = None,
) -> Swap:
    """Swap the workload's containers for new ones running `pinned`.

    `before_start` runs once the old containers are stopped and before the new
    ones start. Every step is journaled first (workloads/container_journal.py):
    a process killed anywhere in here leaves the next holder of the lock what
    it needs to finish the swap or undo it. On a failure the new containers
    are removed and the old ones are running again.
    """
    specs = _specs(workload, pinned, record)
    try:
        old = runtime.list_containers(workload.pk)
    except runtime.EngineError as exc:
        raise DeployError(exc.code, exc.raw) from None
    was_running = [c for c in old if c.running]
    operation = container_journal.Operation(
        kind=container_journal.DEPLOY, row=record.pk, workload=workload.pk,
        stopped=[c.id for c in was_running], old=[c.id for c in old], image=pinned,
        pinned=record.pinned_reference, image_id=record.image_id,
    )
    operation.record(container_journal.PREPARE)
    created: list[str] = []
    try:
        for spec in specs:
            created.append(runtime.create(spec))
            crashpoints.reached("deploy.created")
    except runtime.ImageMissing:
        _discard(created)
        container_journal.remove(operation)
        raise  # nothing was stopped: run() pulls it again
    except runtime.EngineError as exc:
        _discard(created)
        container_journal.remove(operation)
        raise DeployError(exc.code, exc.raw) from None
    except BaseException:
        _discard(created)
        container_journal.remove(operation)
        raise

    try:
        operation.record(container_journal.STOP)
        crashpoints.reached("deploy.stopping")
        for container in was_running:
            runtime.stop(container.id)
        crashpoints.reached("deploy.old-stopped")
        if before_start is not None:
            before_start()
        # The old containers could rewrite their volumes until they stopped:
        # check again that no bind goes through a symlink before Docker
        # resolves the paths for the new ones.
        _recheck_binds(workload, specs)
        operation.record(container_journal.START)
        since = time.time()
        for container_id in created:
            runtime.start(container_id)
        runtime.settle(created, since=since, window=settings.BERTH_DEPLOY_SETTLE_SECONDS,
                       health_deadline=settings.BERTH_DEPLOY_HEALTH_TIMEOUT)
        crashpoints.reached("deploy.new-started")
        operation.record(container_journal.COMMIT)
    except runtime.ExitedAtStart as exc:
        # Kept, stopped, for the deploy's page to show their last log lines.
        _undo(operation, created, was_running,
              keep=lambda: _keep_failed(workload, created, specs))
        raise DeployError(exc.code, exc.raw, exit_code=exc.exit_code) from None
    except (runtime.EngineError, ValidationError, OSError) as exc:
        _undo(operation, created, was_running)
        if isinstance(exc, ValidationError):
            raise DeployError(Failure.INVALID_CONFIG, str(exc.messages)) from None
        if isinstance(exc, OSError):
            raise DeployError(Failure.INTERNAL, f"the deploy journal: {exc}") from None
        code = exc.code if exc.code in _START_CODES else Failure.START_FAILED
        raise DeployError(code, exc.raw) from None
    except BaseException:
        # Anything else (Ctrl-C in the deploy command, a bug): the old
        # containers must not stay stopped.
        _undo(operation, created, was_running)
        raise

    crashpoints.reached("deploy.committed")
    removed = all([_best_effort(runtime.remove, container.id) for container in old])
    crashpoints.reached("deploy.old-removed")
    _remove_kept_failed(workload)
    new = rename_new(workload, created, specs)
    complete = removed and all(name == workload.container_name(replica)
                               for _id, name, replica in new)
    return Swap(new=new, operation=operation, complete=complete)


def rename_new(workload: Workload, created: list[str],
               specs: list[runtime.ContainerSpec]) -> list[tuple[str, str, int]]:
    """Give the new containers their final names; (docker id, name, replica) of each."""
    new = []
    for container_id, spec in zip(created, specs, strict=True):
        replica = int(spec.labels[runtime.REPLICA_LABEL])
        name = workload.container_name(replica)
        # Renaming only fails if an old container could not be removed; the
        # new one then keeps its temporary name and still carries the labels.
        if not _best_effort(runtime.rename, container_id, name):
            name = spec.name
        new.append((container_id, name, replica))
    return new


# The engine errors at start that keep their own code; any other is start_failed.
_START_CODES = {Failure.ENGINE_UNREACHABLE, Failure.PORT_IN_USE}


def _undo(operation: container_journal.Operation, created: list[str],
          was_running: list[runtime.ContainerInfo],
          keep: Callable[[], bool] | None = None) -> None:
    """Before the commit: the new containers go, the old ones run again, the journal goes —
    unless a step failed: then the journal stays, for the sweep to try again.

    `keep`, when given, keeps the new containers instead (stopped, out of the
    workload's containers); it returns False if it could not.
    """
    undone = keep() if keep is not None else False
    undone = undone or _discard(created)
    undone = _restart(was_running) and undone
    if not undone:
        return
    try:
        container_journal.remove(operation)
    except OSError:
        logger.exception("deploy %s: its journal could not be removed", operation.row)


def _keep_failed(workload: Workload, created: list[str],
                 specs: list[runtime.ContainerSpec]) -> bool:
    """Stop the new containers that failed at start and mark them kept (FAILED_MARK).

    Only the newest failed deploy's containers are kept: the ones an earlier
    one kept go now. False if a step failed (the caller then removes them).
    """
    _remove_kept_failed(workload)
    for container_id, spec in zip(created, specs, strict=True):
        kept_name = spec.name.replace(".deploy-", runtime.FAILED_MARK)
        if not (_best_effort(runtime.stop, container_id)
                and _best_effort(runtime.rename, container_id, kept_name)):
            return False
    return True


def _remove_kept_failed(workload: Workload) -> None:
    """Remove what an earlier failed start kept for its log (best effort: it runs nothing)."""
    try:
        kept = runtime.list_containers(workload.pk, kept_failed=True)
    except runtime.EngineError as exc:
        logger.warning("workload %s: its kept failed containers were not listed: %s",
                       workload.pk, exc)
        return
    for container in kept:
        _best_effort(runtime.remove, container.id)


def _recheck_binds(workload: Workload, specs: list[runtime.ContainerSpec]) -> None:
    expected = set(specs[0].binds) if specs else set()
    found = {volume.host_path() for volume in workload.volumes.all()}
    if found != expected:
        raise ValidationError("the volumes' host paths changed during the deploy")


def _discard(container_ids: list[str]) -> bool:
    return all([_best_effort(runtime.remove, container_id) for container_id in container_ids])


def _restart(containers: list[runtime.ContainerInfo]) -> bool:
    return all([_best_effort(runtime.start, container.id) for container in containers])


def _best_effort(step, *args) -> bool:
    try:
        step(*args)
    except runtime.EngineError as exc:
        logger.warning("%s(%s) failed during a deploy: %s", step.__name__, args[0], exc)
        return False
    return True


def _untranslated(label) -> str:
    """A lazy label's English source text, to store and translate when shown."""
    with translation.override(None):
        return str(label)


def record_failure(
    workload: Workload, record: DeployRecord, exc: DeployError, secrets: list[str]
) -> None:
    logger.error(
        "deploy %s of workload %s failed (%s): %s",
        record.pk, workload.pk, exc.code, redact(exc.raw, secrets),
    )
    with transaction.atomic():
        record.fail(exc.code, pinned_reference=record.pinned_reference, image_id=record.image_id,
                    exit_code=exc.exit_code)
        workload.mark_failed()
        EventLog.objects.create(
            workload=workload,
            user=record.user,
            level=EventLog.Level.ERROR,
            message=gettext_noop("Deploy failed: %(reason)s"),
            params={"reason": _untranslated(Failure(exc.code).label)},
        )
        # The fixed reason only: the raw error stays in the log line above.
        outbox.notify(Event.DEPLOY_FAILED, workload=workload, code=exc.code,
                      message=gettext_noop("Deploy #%(deploy)d failed: %(reason)s"),
                      params={"deploy": record.pk,
                              "reason": _untranslated(Failure(exc.code).label)},
                      key=f"deploy-{record.pk}")
