"""Recovery from a backup target onto this Berth: the catalogue, and one workload back.

The catalogue is read from the copies' sidecars alone (backups/sidecar.py),
so listing a target downloads no archive. A recovery re-creates the
workload from its sidecar (or takes an existing one), downloads the archive
as a stream into a staged file, checks its size and SHA-256 against the
sidecar, imports it through the same full validation as an uploaded archive
(engine/imports.py) and restores it with the crash-safe restore; a workload
it created is then deployed on the digest (or commit) the sidecar recorded.
Everything on the target is untrusted. docs/disaster-recovery.md is the
runbook.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, router, transaction
from django.db.models.deletion import Collector
from django.utils import timezone
from django.utils.translation import gettext, gettext_noop
from pyrage import x25519

from backups import sidecar
from backups.models import BackupRecovery, BackupTarget, SnapshotCopy
from engine import backups, copies, deploys, imports, queue, restores
from lib import agecrypt, crypto, offsite, owners, redact
from snapshots import reservations, storage
from snapshots.errors import SnapshotError
from snapshots.models import RestoreJob, Snapshot
from workloads.jobs import acting_user
from workloads.models import DeployRecord, EventLog, Project, Stage, VolumeMount, Workload

logger = logging.getLogger(__name__)


_WRONG_IDENTITY = gettext_noop("The identity does not open this copy (another key, or altered "
                               "data).")


_BUSY = gettext_noop("A restore or another recovery of this workload is queued or running; "
                     "wait for it to finish.")
_INTERRUPTED = gettext_noop("The recovery was interrupted (its worker stopped) before its "
                            "restore began; what it had created is removed. Ask for it again.")
_GONE = gettext_noop("The workload this recovery was asked for onto was deleted meanwhile; "
                     "nothing was recovered. Recovering the copy as a new workload is a "
                     "recovery of its own.")
_EXISTS = gettext_noop("A workload %(path)s exists already: recover onto it (choose it as the "
                       "workload to recover into), or remove it first.")


class RecoveryError(Exception):
    """A recovery that cannot go on: a fixed code, and a message in the source language."""

    def __init__(self, code: str, message: str, **params: object) -> None:
        super().__init__(message)
        self.code, self.message, self.params = code, message, params

    def __str__(self) -> str:
        text = gettext(self.message)
        return text % self.params if self.params else text


@dataclass(frozen=True)
class Entry:
    """One copy in a target's catalogue: its object name and what its sidecar says."""

    key: str
    described: sidecar.Described | None
    problem: str = ""  # why the sidecar could not be read (then `described` is None)

    @property
    def workload_path(self) -> str:
        if self.described is None:
            return ""
        w = self.described.workload
        return f"{w['project']['slug']}/{w['stage']['slug']}/{w['slug']}"


@dataclass
class Recovered:
    workload: Workload
    snapshot: Snapshot
    restore: RestoreJob
    deploy: DeployRecord | None = None
    created: bool = False
    # Values the sidecar could not carry (an unencrypted target's secrets): set them, redeploy.
    missing_values: list[str] = field(default_factory=list)


def catalogue(target: BackupTarget, identities=()) -> list[Entry]:
    """Every copy on `target` with a sidecar, newest first within each workload.

    A sidecar that cannot be read (no identity for it, a wrong one, a
    malformed document) is listed with its problem rather than hiding the copy.
    """
    store = target.store()
    names = set(store.names())
    entries = []
    for name in sorted(names):
        key = sidecar.copy_name(name)
        if key is None or key not in names:
            continue
        try:
            _refuse_clear_copy(target, key)
            entries.append(Entry(key=key, described=_read_sidecar(store, name, identities)))
        except RecoveryError as exc:
            entries.append(Entry(key=key, described=None, problem=str(exc)))
    entries.sort(key=lambda e: (e.workload_path, -(e.described.created.timestamp()
                                                   if e.described else 0), e.key))
    return entries


def describe(target: BackupTarget, key: str, identities=()) -> sidecar.Described:
    """The sidecar of the copy `key` on `target`, read and checked."""
    parts = key.split("/")
    if (sidecar.copy_name(sidecar.sidecar_name(key, encrypted=sidecar.is_encrypted(key))) != key
            or any(part in ("", ".", "..") for part in parts) or len(key) > 1024):
        raise RecoveryError("not_a_copy", gettext_noop("%(key)s is not the name of a copy."),
                            key=key)
    _refuse_clear_copy(target, key)
    name = sidecar.sidecar_name(key, encrypted=sidecar.is_encrypted(key))
    return _read_sidecar(target.store(), name, identities)


def _refuse_clear_copy(target: BackupTarget, key: str) -> None:
    """A copy in clear on a target that encrypts is not Berth's: anyone able to write to
    the bucket could have put it there, without even knowing a recipient."""
    if target.encrypted and not sidecar.is_encrypted(key):
        raise RecoveryError("not_encrypted", gettext_noop(
            "This copy is not encrypted, but the target encrypts every copy: it was not made "
            "by Berth and is not recovered."))


def recover(*, target: BackupTarget, key: str, identities=(), into: Workload | None = None,
            user: AbstractBaseUser | None = None, row: BackupRecovery | None = None,
            deploy: bool = False,
            progress: Callable[[int, int], None] | None = None) -> Recovered:
    """Bring the copy `key` back: as a new workload from its sidecar, or onto `into`.

    Raises RecoveryError, leaving nothing behind, until the snapshot is
    imported; from then on the restore and the deploy keep their own records
    (the returned RestoreJob and DeployRecord say how they ended). `row`, the
    recovery's record, learns at once what was created, so that the sweep can
    remove it if this process dies before the restore begins. `deploy`: a
    workload it re-creates is then deployed on the digest (or commit) the
    sidecar recorded; off by default, since a copy is only as trustworthy as
    whoever can write to the target (docs/disaster-recovery.md).
    `progress(done, total)` is called as the archive downloads.
    """
    identities = list(identities)
    described = describe(target, key, identities)
    if sidecar.is_encrypted(key) and not identities:
        raise RecoveryError("no_identity", gettext_noop("The copy is encrypted: give the age "
                                                        "identity to recover it."))
    check_room(described.snapshot["size"])
    if into is not None:
        _refuse_busy(into)
    created, missing = into is None, []
    workload = into
    made: list[list] = []
    try:
        if workload is None:
            workload, made, missing = _create(described.workload, user, row)
        staged = download(target, key, described, identities, progress)
        try:
            snapshot = imports.import_snapshot(workload=workload, staged=staged, user=user)
        except SnapshotError as exc:
            raise RecoveryError("refused", gettext_noop("The archive was refused: %(reason)s"),
                                reason=str(exc)) from None
    except BaseException:
        with contextlib.suppress(Exception):
            remove_created(made)
        raise
    EventLog.objects.create(
        workload=workload, user=snapshot.user,
        message=gettext_noop("Recovered snapshot #%(id)d from backup target %(target)s "
                             "(%(key)s)."),
        params={"id": snapshot.pk, "target": target.name, "key": key},
    )
    logger.info("recovering %s from target %s into workload %s", key, target.pk, workload.pk)
    try:
        job = restores.restore(workload=workload, snapshot=snapshot, user=user,
                               from_recovery=True)
    except restores.RestoreBusy:
        raise RecoveryError("busy", _BUSY) from None
    job.refresh_from_db()
    result = Recovered(workload=workload, snapshot=snapshot, restore=job, created=created,
                       missing_values=missing)
    reference = described.workload["running_reference"]
    workload.refresh_from_db()
    if (deploy and job.outcome == RestoreJob.Outcome.SUCCEEDED and created and reference
            and not missing and not workload.running_reference):
        # The restore had nothing to redeploy (the workload never ran here): run it on what
        # the sidecar says it ran, pinned (checked in _create), never a newer tag.
        result.deploy = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.RESTORE,
                                         user=user, reference=reference)
    return result


def check_room(size: int) -> None:
    """The archive must fit the upload cap, and the staging filesystem with its reserve
    beside what extractions in progress have reserved."""
    if size > settings.BERTH_SNAPSHOT_MAX_UPLOAD_BYTES:
        raise RecoveryError("too_large", gettext_noop(
            "The archive (%(size)d bytes, says its sidecar) is larger than "
            "BERTH_SNAPSHOT_MAX_UPLOAD_BYTES."), size=size)
    where = storage.uploads_dir()
    while not where.exists() and where != where.parent:  # made at the first upload
        where = where.parent
    # What extractions in progress have reserved is not free (snapshots/reservations.py).
    free = shutil.disk_usage(where).free - reservations.held(os.stat(where).st_dev)[0]
    if free < size + settings.BERTH_SNAPSHOT_RESERVE_BYTES:
        raise RecoveryError("no_space", gettext_noop(
            "There is not enough free space here for the archive (%(size)d bytes) and the "
            "reserve (BERTH_SNAPSHOT_RESERVE_BYTES)."), size=size)


def _refuse_busy(workload: Workload) -> None:
    if RestoreJob.objects.active().filter(workload=workload).exists():
        raise RecoveryError("busy", _BUSY)


def remove_created(made: list[list]) -> None:
    """Remove what a failed recovery created, newest first: the workload unless someone
    deployed it meanwhile, then its stage and project only while deleting them would take
    nothing else with them (a workload, a copy rule added meanwhile)."""
    with transaction.atomic():
        for label, pk in reversed(made):
            model = {"workload": Workload, "stage": Stage, "project": Project}[label]
            row = model.objects.select_for_update().filter(pk=pk).first()
            if row is None:
                continue
            if label == "workload":
                if not DeployRecord.objects.filter(workload=row).exists():
                    row.delete()
            elif _alone(row):
                row.delete()


def _alone(row) -> bool:
    """Whether deleting `row` would delete nothing but itself."""
    collector = Collector(using=router.db_for_write(type(row)))
    collector.collect([row])
    if any(model is not type(row) and rows for model, rows in collector.data.items()):
        return False
    return not any(q.exists() if hasattr(q, "exists") else q for q in collector.fast_deletes)


# --- a recovery queued for the task worker ---------------------------------------------------


def request_recovery(*, target: BackupTarget, key: str, identity: str = "",
                     passphrase: str = "", into: Workload | None = None,
                     user: AbstractBaseUser | None = None, deploy: bool = False,
                     queued: bool = True) -> BackupRecovery:
    """Check what can be checked now, then open the recovery; RecoveryError if refused.

    The sidecar is read here (with `identity`, else the target's stored one),
    so a wrong identity or key is refused at once. The identity is kept,
    encrypted, only until the recovery ends (a passphrase is turned into the
    identity it opens: the passphrase itself is never kept). `queued=False`
    opens it for this process to run at once (the command).
    """
    identities = identities_for(target, identity, passphrase)
    if passphrase:
        identity = "\n".join(str(i) for i in identities)
    described = describe(target, key, identities)
    check_room(described.snapshot["size"])
    if into is None:
        definition = described.workload
        if Workload.objects.filter(stage__project__slug=definition["project"]["slug"],
                                   stage__slug=definition["stage"]["slug"],
                                   slug=definition["slug"]).exists():
            raise RecoveryError("exists", _EXISTS, path=_path(definition))
    else:
        _refuse_busy(into)
    try:
        with transaction.atomic():
            row = BackupRecovery.objects.create(
                target=target, remote_key=key, into=into, onto_existing=into is not None,
                user=acting_user(user),
                deploy_after=deploy and into is None,
                identity_encrypted=crypto.encrypt(identity) if identity else "",
                bytes_total=described.snapshot["size"],
                owner="" if queued else owners.current(),
            )
    except IntegrityError:
        raise RecoveryError("busy", _BUSY) from None
    if queued:
        transaction.on_commit(lambda: queue.enqueue(queue.RECOVER, row.pk,
                                                    name=f"recover-{row.pk}"))
    return row


def run_recovery(row: BackupRecovery,
                 progress: Callable[[int, int], None] | None = None) -> Recovered | None:
    """The recovery's body (the task's, or the command's): the row says how it ended.

    Returns what was recovered, or None if it failed before the import.
    """
    if not row.move(only_from=[BackupRecovery.State.QUEUED], state=BackupRecovery.State.RUNNING,
                    started=timezone.now(), owner=owners.current()):
        return None

    def report(done: int, total: int) -> None:
        _progress(row, done)
        if progress is not None:
            progress(done, total)

    try:
        text = crypto.decrypt(row.identity_encrypted) if row.identity_encrypted else ""
        identities = identities_for(row.target, text)
        result = recover(target=row.target, key=row.remote_key, identities=identities,
                         into=_still_there(row), user=row.user, row=row,
                         deploy=row.deploy_after, progress=report)
    except RecoveryError as exc:
        _end(row, BackupRecovery.State.FAILED, failure_code=exc.code,
             failure_message=exc.message, failure_params=exc.params)
        return None
    except Exception as exc:  # noqa: BLE001 - a recovery ends failed, never half-recorded
        logger.exception("recovery %s failed", row.pk)
        _end(row, BackupRecovery.State.FAILED, failure_code="internal",
             failure_message=gettext_noop("The recovery failed unexpectedly (%(error)s); the "
                                          "server log has the details."),
             failure_params={"error": type(exc).__name__})
        return None
    except BaseException:
        # Ctrl-C in the command: ended here, not left for the sweep.
        _end(row, BackupRecovery.State.FAILED, failure_code="interrupted",
             failure_message=_INTERRUPTED)
        raise
    ok = result.restore.outcome == RestoreJob.Outcome.SUCCEEDED and (
        result.deploy is None or result.deploy.outcome == DeployRecord.Outcome.SUCCEEDED)
    failure = {} if ok else {
        "failure_code": "restore" if result.restore.outcome != RestoreJob.Outcome.SUCCEEDED
        else "deploy",
        "failure_message": gettext_noop("The data was imported, but the restore or the deploy "
                                        "did not succeed: see the workload's history.")}
    _end(row, BackupRecovery.State.SUCCEEDED if ok else BackupRecovery.State.FAILED,
         into=result.workload, snapshot=result.snapshot, restore=result.restore,
         deploy=result.deploy, bytes_done=row.bytes_total, **failure)
    return result


def _still_there(row: BackupRecovery) -> Workload | None:
    """The workload a recovery onto an existing one goes to; RecoveryError if it was deleted
    since (its `into` is then null): recover(into=None) would re-create it from the sidecar,
    which the permissions checked when it was asked for do not allow."""
    if not row.onto_existing:
        return None
    workload = Workload.objects.filter(pk=row.into_id).first() if row.into_id else None
    if workload is None:
        raise RecoveryError("workload_gone", _GONE)
    return workload


def fail_lost() -> int:
    """Fail the recoveries whose worker died (or that no worker took in time), erasing the
    identities they kept; what one created is removed if its restore never began."""
    failed = 0
    for row in BackupRecovery.objects.filter(state__in=BackupRecovery.ACTIVE_STATES):
        if not row.is_lost():
            continue
        if _end(row, BackupRecovery.State.FAILED, only_from=BackupRecovery.ACTIVE_STATES,
                failure_code="interrupted", failure_message=_INTERRUPTED):
            failed += 1
            if row.created_rows and not RestoreJob.objects.filter(
                    workload_id=row.into_id).exists():
                try:
                    remove_created(row.created_rows)
                except Exception:  # noqa: BLE001 - logged; the workload stays for the operator
                    logger.exception("recovery %s: what it created could not be removed",
                                     row.pk)
    return failed


def _end(row: BackupRecovery, state: str, *, only_from=(BackupRecovery.State.RUNNING,),
         **values) -> bool:
    return row.move(only_from=only_from, state=state, identity_encrypted="",
                    finished=timezone.now(), **values)


def _progress(row: BackupRecovery, done: int) -> None:
    # At most every 1% (and at the end): the row is read by pages that poll.
    step = max(1, row.bytes_total // 100)
    if done - row.bytes_done >= step or done == row.bytes_total:
        row.report_progress(done)


def identities_for(target: BackupTarget, text: str,
                   passphrase: str = "") -> list[x25519.Identity]:
    """The identities in `text` and the one `passphrase` opens on the target (its
    berth-identity.age); with neither, the target's stored identity (none for an
    unencrypted one). RecoveryError for what does not parse or open."""
    found: list[x25519.Identity] = []
    if passphrase:
        try:
            found += backups.identities_from_passphrase(target, passphrase)
        except agecrypt.AgeError as exc:
            raise RecoveryError("wrong_passphrase", gettext_noop(
                "The passphrase gives no identity: %(reason)s"), reason=str(exc)) from None
    if not text and not found and target.has_identity:
        text = target.get_identity()
    if text:
        try:
            found += agecrypt.parse_identities(text)
        except agecrypt.AgeError:
            raise RecoveryError("bad_identity", gettext_noop(
                "This is not an age identity (AGE-SECRET-KEY-1...).")) from None
    return found


def _path(definition: dict) -> str:
    return f"{definition['project']['slug']}/{definition['stage']['slug']}/{definition['slug']}"


# --- the sidecar -------------------------------------------------------------------------


def _read_sidecar(store: offsite.Store, name: str, identities) -> sidecar.Described:
    try:
        size = store.size(name)
        if size is None:
            raise RecoveryError("no_sidecar", gettext_noop("The copy has no sidecar on the "
                                                           "target."))
        if size > sidecar.MAX_BYTES:
            raise RecoveryError("bad_sidecar", gettext_noop("The copy's sidecar is not "
                                                            "usable: %(reason)s"),
                                reason="too large")
        with contextlib.closing(store.open(name)) as stream:
            data = stream.read(sidecar.MAX_BYTES + 1)
    except offsite.OffsiteError as exc:
        raise RecoveryError(exc.code, str(exc.messages[exc.code])) from None
    if name.endswith(".age"):
        if not identities:
            raise RecoveryError("no_identity", gettext_noop(
                "The copy is encrypted: give the age identity to read it."))
        plain = io.BytesIO()
        try:
            agecrypt.decrypt_stream(io.BytesIO(data), plain, identities)
        except agecrypt.AgeError:
            raise RecoveryError("wrong_identity", _WRONG_IDENTITY) from None
        data = plain.getvalue()
    try:
        return sidecar.parse(data)
    except sidecar.SidecarError as exc:
        raise RecoveryError("bad_sidecar", gettext_noop("The copy's sidecar is not usable: "
                                                        "%(reason)s"), reason=str(exc)) from None


# --- the workload --------------------------------------------------------------------------


def _create(definition: dict, user,
            row: BackupRecovery | None = None) -> tuple[Workload, list, list[str]]:
    """Re-create the workload a sidecar describes, through the models' own validation.

    Returns the workload, the rows created (to remove on failure, newest
    last) and the names of values the sidecar did not carry.
    """
    made: list[list] = []
    missing: list[str] = []
    try:
        _check_reference(definition)
        with transaction.atomic():
            project = Project.objects.filter(slug=definition["project"]["slug"]).first()
            if project is None:
                project = _valid(Project(slug=definition["project"]["slug"],
                                         name=definition["project"]["name"]))
                made.append(["project", project.pk])
            stage = Stage.objects.filter(project=project, slug=definition["stage"]["slug"]).first()
            if stage is None:
                stage = _valid(Stage(project=project, slug=definition["stage"]["slug"],
                                     name=definition["stage"]["name"]))
                made.append(["stage", stage.pk])
            if Workload.objects.filter(stage=stage, slug=definition["slug"]).exists():
                raise RecoveryError("exists", _EXISTS, path=_path(definition))
            args = definition["build_args"]
            missing += [f"build arg {name}" for name, value in args.items() if value is None]
            workload = _valid(Workload(
                stage=stage, slug=definition["slug"], name=definition["name"],
                source_kind=definition["source_kind"], image=definition["image"],
                git_url=definition["git_url"], git_ref=definition["git_ref"],
                git_dockerfile=definition["git_dockerfile"],
                git_context=definition["git_context"],
                build_args={name: value or "" for name, value in args.items()},
                replicas=definition["replicas"],
                snapshot_consistency=definition["snapshot_consistency"],
                **_hooks(definition.get("hooks")),
            ))
            made.append(["workload", workload.pk])
            volumes = [workload.volumes.model(workload=workload, **v)
                       for v in definition["volumes"]]
            for volume in volumes:
                volume.full_clean(exclude=["workload"])
            workload.check_volumes(volumes)
            host_paths = [volume.host_path(workload) for volume in volumes]
            if len(set(host_paths)) != len(host_paths):
                raise ValidationError({"volumes": ["two volumes share a host directory"]})
            for path in host_paths:
                _refuse_used_path(path)
            for volume in volumes:
                volume.save()
            for port in definition["ports"]:
                _valid(workload.ports.model(workload=workload, **port))
            for env in definition["env"]:
                variable = workload.env_vars.model(workload=workload, name=env["name"])
                if env["secret"] and env["value"] is None:
                    missing.append(env["name"])
                variable.set_value(env["value"] or "", secret=env["secret"])
                _valid(variable)
            EventLog.objects.create(
                workload=workload, user=user if user is not None and user.pk else None,
                message=gettext_noop("Created from a backup's definition."), params={},
            )
            if row is not None:
                # In the same transaction: a kill after it leaves a row that knows what it
                # made, for the sweep to remove.
                row.move(only_from=BackupRecovery.ACTIVE_STATES, into=workload,
                         created_rows=made, missing_values=missing)
    except ValidationError as exc:
        raise RecoveryError("invalid_definition", gettext_noop(
            "The workload's definition cannot be re-created here: %(reason)s"),
            reason="; ".join(_messages(exc))) from None
    except IntegrityError:
        raise RecoveryError("invalid_definition", gettext_noop(
            "The workload's definition cannot be re-created here: %(reason)s"),
            reason="it clashes with what exists (a host port or a name in use)") from None
    return workload, made, missing


def _hooks(hooks: dict | None) -> dict:
    """The backup hooks' fields from a sidecar (none in one written before hooks existed)."""
    if hooks is None:
        return {}
    return {"pre_backup_hook": hooks["pre"], "post_backup_hook": hooks["post"],
            "backup_hook_timeout": hooks["timeout"], "pre_hook_failure": hooks["on_failure"]}


def _check_reference(definition: dict) -> None:
    """What the sidecar says the workload ran must be its own source, pinned.

    An image workload ran `<its repository>@sha256:<digest>`; a git workload
    `<its ref>@<commit>`. Anything else (another image, a bare tag) would
    deploy something the definition does not show, or a newer tag.
    """
    reference = definition["running_reference"]
    if not reference:
        return
    if definition["source_kind"] == Workload.SourceKind.GIT:
        pattern = re.escape(definition["git_ref"]) + r"@(?:[0-9a-f]{40}|[0-9a-f]{64})"
    else:
        pattern = re.escape(_repository(definition["image"])) + r"@sha256:[0-9a-f]{64}"
    if not re.fullmatch(pattern, reference):
        raise ValidationError({"running_reference": [
            "it is not the workload's own image or git ref, pinned"]})


def _repository(image: str) -> str:
    """`host/repo` of `host/repo:tag` or `host/repo@sha256:…`."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name[: len(name) - len(last)] + last.split(":", 1)[0]


def _refuse_used_path(path: str) -> None:
    """A re-created workload's volume must not take over data that is already on the host:
    its directory must be missing or empty, and no other workload's volume."""
    for other in VolumeMount.objects.select_related("workload__stage__project"):
        try:
            theirs = other.host_path()
        except ValidationError:
            continue  # an invalid volume holds no path
        if theirs == path:
            raise ValidationError({"volumes": [
                f"{path} is a volume of workload {other.workload}"]})
    try:
        if os.path.lexists(path) and (os.path.islink(path) or not os.path.isdir(path)
                                      or os.listdir(path)):
            raise ValidationError({"volumes": [
                f"{path} exists and holds data; recover onto a workload created by hand"]})
    except OSError as exc:
        raise ValidationError({"volumes": [f"{path} cannot be read ({exc.strerror})"]}) from None


def _valid(row):
    row.full_clean()
    row.save()
    return row


def _messages(exc: ValidationError) -> list[str]:
    if hasattr(exc, "error_dict"):
        return [f"{name}: {' '.join(m for e in errors for m in e.messages)}"
                for name, errors in exc.error_dict.items()]
    return list(exc.messages)


# --- the archive ----------------------------------------------------------------------------


_LARGER = gettext_noop("The archive is larger than its sidecar says: it is not the copy it "
                       "claims to be.")


class _Bounded:
    """The staged file's writer: no more than the sidecar said (it runs in download()'s
    writing thread, so it never touches the database)."""

    def __init__(self, fd: int, limit: int) -> None:
        self.fd, self.limit, self.done = fd, limit, 0
        self.exceeded = False

    def write(self, data) -> int:
        self.done += len(data)
        if self.done > self.limit:
            self.exceeded = True
            raise RecoveryError("mismatch", _LARGER)
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        return len(data)


def download(target: BackupTarget, key: str, described: sidecar.Described,
              identities: list[x25519.Identity], progress) -> imports.Staged:
    """Download (and decrypt) the archive into a staged file; its size and SHA-256 must be
    the sidecar's. The staged file is removed on any failure."""
    expected_size, expected_sha = described.snapshot["size"], described.snapshot["sha256"]
    fd, path = storage.open_temp(storage.uploads_dir(), prefix=".upload-")
    try:
        size, digest = _fetch(target, key, _Bounded(fd, expected_size), identities,
                              progress=(lambda done: progress(done, expected_size))
                              if progress is not None else None)
        os.fsync(fd)
        if (size, digest) != (expected_size, expected_sha):
            raise RecoveryError("mismatch", gettext_noop(
                "The archive's size or SHA-256 differs from its sidecar's: it is not the copy "
                "it claims to be."))
    except BaseException:
        os.close(fd)
        storage.discard(path)
        raise
    os.close(fd)
    return imports.Staged(path=path, size=size, sha256=digest)


def _fetch(target: BackupTarget, key: str, sink: _Bounded, identities,
           progress: Callable[[int], None] | None) -> tuple[int, str]:
    """copies.download() into `sink`, its failures as RecoveryError."""
    # download() reads the object through a copy row; this one is never saved.
    row = SnapshotCopy(target=target, remote_key=key, encrypted=sidecar.is_encrypted(key))
    try:
        return copies.download(row, sink, identities=identities, progress=progress)
    except Exception as exc:
        if sink.exceeded:  # however the download reported it, the bound stopped it
            raise RecoveryError("mismatch", _LARGER) from None
        if isinstance(exc, offsite.OffsiteError):
            logger.warning("recovery of %s from target %s: %s (%s)", key, target.pk, exc.code,
                           redact.for_log(exc.raw, target.secret_values()))
            raise RecoveryError(exc.code, str(exc.messages[exc.code])) from None
        if isinstance(exc, agecrypt.AgeError):
            raise RecoveryError("wrong_identity", _WRONG_IDENTITY) from None
        if isinstance(exc, OSError):
            raise RecoveryError("local", gettext_noop(
                "The archive could not be written here: %(reason)s"),
                reason=exc.strerror or type(exc).__name__) from None
        raise
