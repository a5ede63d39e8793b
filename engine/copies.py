"""Copies of snapshots to backup targets: queue one, upload it encrypted, verify it.

The archive is encrypted on the host as it streams to the target (age, to
the target's recipients as they are when the copy runs) and is never written
out in clear or whole in memory. The upload ends only if the whole local
archive, with the size and SHA-256 its snapshot recorded, went through the
encryption; otherwise the upload is abandoned (an S3 multipart upload is
aborted, a directory write's temporary file removed). A copy is verified only
once the object read back from the target has the size and SHA-256 that were
sent; its sidecar (backups/sidecar.py) is stored and verified beside it.
docs/backups.md describes copies.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from backups import sidecar
from backups.models import BackupTarget, SnapshotCopy
from engine import copy_upkeep, queue
from lib import agecrypt, offsite, owners, redact, streams
from snapshots import storage
from snapshots.models import Snapshot
from workloads.jobs import acting_user

logger = logging.getLogger(__name__)

READ_BACK_CHUNK = 1 << 20


class CopyRefused(Exception):
    def __init__(self, message: str, *, active: SnapshotCopy | None = None) -> None:
        super().__init__(message)
        self.active = active


class _SourceFailed(Exception):
    """The local side of an upload failed: the target must not keep what it got."""

    def __init__(self, error: offsite.OffsiteError) -> None:
        super().__init__(error.raw)
        self.error = error


def object_name(snapshot: Snapshot, row: SnapshotCopy, *, encrypted: bool) -> str:
    """`<project>/<stage>/<workload>/<UTC time>-<kind>-<snapshot id>-c<copy id>.tar.zst[.age]`.

    One name per copy: copying again never overwrites what an earlier copy
    left and verified.
    """
    workload = snapshot.workload
    when = snapshot.created.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = ".tar.zst.age" if encrypted else ".tar.zst"
    return (f"{workload.stage.project.slug}/{workload.stage.slug}/{workload.slug}/"
            f"{when}-{snapshot.kind}-{snapshot.pk}-c{row.pk}{suffix}")


def request_copy(*, snapshot: Snapshot, target: BackupTarget,
                 user: AbstractBaseUser | None = None) -> SnapshotCopy:
    """Queue a copy of a ready snapshot to `target`; CopyRefused if it cannot be."""
    try:
        with transaction.atomic():
            # The snapshot's row is the lock two requests at once queue behind.
            current = Snapshot.objects.select_for_update().filter(pk=snapshot.pk).first()
            if current is None or current.state != Snapshot.State.READY:
                raise CopyRefused(str(_("Only a ready snapshot can be copied.")))
            active = SnapshotCopy.objects.filter(
                snapshot=snapshot, target=target, state__in=SnapshotCopy.ACTIVE_STATES).first()
            if active is not None:
                raise CopyRefused(str(_("A copy of this snapshot to this target is already "
                                        "under way.")), active=active)
            row = SnapshotCopy.of(current, target, user=acting_user(user))
            row.save()
    except IntegrityError:  # another request created the active copy first
        raise CopyRefused(str(_("A copy of this snapshot to this target is already under "
                                "way."))) from None
    transaction.on_commit(lambda: queue.enqueue(queue.COPY, row.pk, name=f"copy-{row.pk}"))
    return row


def copy_snapshot(row: SnapshotCopy) -> SnapshotCopy:
    """Upload and verify one queued copy (the task's body); the row says how it ended."""
    if not row.move(only_from=[SnapshotCopy.State.QUEUED], state=SnapshotCopy.State.UPLOADING,
                    started=timezone.now(), attempts=row.attempts + 1, owner=owners.current()):
        return row
    # The target as it is now: never in clear to a target that says "encrypted".
    target = BackupTarget.objects.get(pk=row.target_id)
    snapshot = row.snapshot
    sent_to_target = False
    try:
        if snapshot is None or snapshot.state != Snapshot.State.READY:
            raise offsite.OffsiteError("not_found", "the local snapshot is gone")
        encrypted = target.encrypted
        name = object_name(snapshot, row, encrypted=encrypted)
        SnapshotCopy.objects.filter(pk=row.pk).update(
            remote_key=name, encrypted=encrypted, bytes_total=snapshot.size, bytes_done=0)
        row.remote_key, row.encrypted = name, encrypted
        store = target.store()
        store.ready()  # a missing bucket or a refused key, before reading anything
        sent_to_target = True
        size, digest = _upload(store, name, snapshot, target, encrypted=encrypted)
        _verify(store, name, size, digest)
        _put_sidecar(store, name, snapshot, target, encrypted=encrypted)
    except (offsite.OffsiteError, _SourceFailed) as exc:
        error = exc.error if isinstance(exc, _SourceFailed) else exc
        _fail(row, target, error, remove=sent_to_target)
        return row
    except Exception as exc:  # noqa: BLE001 - a copy ends failed, never half-recorded
        _fail(row, target, offsite.OffsiteError("internal", f"{type(exc).__name__}: {exc}"),
              remove=sent_to_target)
        return row
    row.move(only_from=[SnapshotCopy.State.UPLOADING], state=SnapshotCopy.State.VERIFIED,
             size=size, sha256=digest, finished=timezone.now(), failure_code="",
             bytes_done=snapshot.size)
    logger.info("snapshot %s copied to target %s as %s (%d bytes)", snapshot.pk, target.pk,
                name, size)
    try:
        copy_upkeep.prune(target=target, workload_id=row.workload_id)
    except Exception:  # noqa: BLE001 - the copy is verified whatever retention does
        logger.exception("remote retention on target %s failed", target.pk)
    return row


class _Counted:
    """A readable that hashes and counts what passes through it (read by one thread)."""

    def __init__(self, source) -> None:
        self.source = source
        self.size, self.hash = 0, hashlib.sha256()

    def read(self, amount: int = -1) -> bytes:
        chunk = self.source.read(amount)
        self.size += len(chunk)
        self.hash.update(chunk)
        return chunk


class _Checked(_Counted):
    """The local archive: at its end it must be exactly what the snapshot recorded.

    Anything else (a shorter, longer or altered file, a read error) raises
    instead of ending the stream, so the upload is abandoned, never completed.
    """

    def __init__(self, source, snapshot: Snapshot) -> None:
        super().__init__(source)
        self.snapshot = snapshot
        self.error: offsite.OffsiteError | None = None
        self.complete = False  # read to its end, and it was what the snapshot recorded

    def read(self, amount: int = -1) -> bytes:
        if self.error is not None:
            raise _SourceFailed(self.error)
        try:
            chunk = super().read(amount)
        except OSError as exc:
            self.error = offsite.OffsiteError("internal", f"local archive: {exc}")
            raise _SourceFailed(self.error) from None
        if not chunk:
            if (self.size, self.hash.hexdigest()) != (self.snapshot.size, self.snapshot.sha256):
                self.error = offsite.OffsiteError(
                    "mismatch", "the local archive is not what its snapshot recorded")
                raise _SourceFailed(self.error)
            self.complete = True
        return chunk


class _Encrypted(_Counted):
    """The encryption's output: its end is an end only if the encryption finished and read
    the whole archive (pyrage may end its output early when its input raises)."""

    def __init__(self, source, plain: _Checked, worker: threading.Thread,
                 failure: list) -> None:
        super().__init__(source)
        self.plain, self.worker, self.failure = plain, worker, failure

    def read(self, amount: int = -1) -> bytes:
        chunk = super().read(amount)
        if not chunk:
            self.worker.join()
            if self.plain.error is not None:
                raise _SourceFailed(self.plain.error)
            if self.failure:
                raise _SourceFailed(offsite.OffsiteError("internal",
                                                         f"encryption: {self.failure[0]}"))
            if not self.plain.complete:
                raise _SourceFailed(offsite.OffsiteError(
                    "internal", "the encryption ended before the archive did"))
        return chunk


def _upload(store: offsite.Store, name: str, snapshot: Snapshot, target: BackupTarget, *,
            encrypted: bool) -> tuple[int, str]:
    """Stream the archive (encrypted, unless the target is not) to `name`; (size, sha256)."""
    try:
        archive = storage.open_archive(snapshot.workload_id, snapshot.archive)
    except OSError as exc:
        raise offsite.OffsiteError("not_found", f"the local archive: {exc}") from None
    with archive:
        plain = _Checked(archive, snapshot)
        if not encrypted:
            sent = _Counted(plain)
            _put(store, name, sent)
            if not plain.complete:
                raise _SourceFailed(plain.error or offsite.OffsiteError(
                    "internal", "the upload ended before the archive did"))
            return sent.size, sent.hash.hexdigest()
        recipients = target.recipient_list
        read_end, write_end = os.pipe()
        failure: list[BaseException] = []

        def encrypt() -> None:
            try:
                with os.fdopen(write_end, "wb") as sink:
                    agecrypt.encrypt_stream(plain, sink, recipients)
            except BaseException as exc:  # noqa: BLE001 - the uploader's reader raises it
                failure.append(exc)

        worker = threading.Thread(target=encrypt, name="berth-encrypt", daemon=True)
        worker.start()
        with os.fdopen(read_end, "rb") as source:
            sent = _Encrypted(source, plain, worker, failure)
            try:
                _put(store, name, sent)
            finally:
                # Closing the read end ends an encryption the upload gave up on.
                with contextlib.suppress(OSError):
                    source.close()
                worker.join()
        return sent.size, sent.hash.hexdigest()


def _put_sidecar(store: offsite.Store, name: str, snapshot: Snapshot, target: BackupTarget, *,
                 encrypted: bool) -> None:
    """Store the copy's sidecar (backups/sidecar.py) beside it, verified the same way."""
    document = json.dumps(sidecar.describe(snapshot, with_secrets=encrypted),
                          sort_keys=True).encode()
    if encrypted:
        sealed = io.BytesIO()
        agecrypt.encrypt_stream(io.BytesIO(document), sealed, target.recipient_list)
        document = sealed.getvalue()
    side = sidecar.sidecar_name(name, encrypted=encrypted)
    store.put(side, io.BytesIO(document))
    _verify(store, side, len(document), hashlib.sha256(document).hexdigest())


def _remove(store: offsite.Store, name: str, *, encrypted: bool) -> None:
    """Remove a copy's object, its sidecar and any unfinished upload of them."""
    for each in (name, sidecar.sidecar_name(name, encrypted=encrypted)):
        with contextlib.suppress(Exception):
            store.delete(each)
            store.abort_incomplete(each)


def _put(store: offsite.Store, name: str, source) -> None:
    """store.put, with a failure of the local side told apart from one of the target."""
    try:
        store.put(name, source)
    except (_SourceFailed, offsite.OffsiteError):
        raise
    except Exception as exc:
        # boto3 wraps what the reader raised; find ours in the chain.
        cause = exc
        while cause is not None:
            if isinstance(cause, _SourceFailed):
                raise cause from None
            cause = cause.__cause__ or cause.__context__
        raise


def _verify(store: offsite.Store, name: str, size: int, digest: str) -> None:
    """Read the object back: its size and SHA-256 must be what was sent."""
    if store.size(name) != size:
        raise offsite.OffsiteError("mismatch", "the size read back differs")
    check = hashlib.sha256()
    with contextlib.closing(store.open(name)) as stream:
        try:
            while chunk := stream.read(READ_BACK_CHUNK):
                check.update(chunk)
        except Exception as exc:  # noqa: BLE001 - botocore's streaming errors too
            raise offsite.OffsiteError("no_read", f"{type(exc).__name__}: {exc}") from None
    if check.hexdigest() != digest:
        raise offsite.OffsiteError("mismatch", "the SHA-256 read back differs")


def _fail(row: SnapshotCopy, target: BackupTarget, error: offsite.OffsiteError, *,
          remove: bool) -> None:
    """End the copy failed with its code, removing whatever of it reached the target.

    The name is this copy's own, so nothing another copy verified is touched.
    """
    if remove and row.remote_key:
        with contextlib.suppress(Exception):
            _remove(target.store(), row.remote_key, encrypted=row.encrypted)
    if not row.move(only_from=[SnapshotCopy.State.UPLOADING], state=SnapshotCopy.State.FAILED,
                    failure_code=error.code, finished=timezone.now()):
        return
    logger.warning("copy %s of snapshot %s to target %s failed (%s): %s", row.pk,
                   row.snapshot_id, target.pk, error.code,
                   redact.for_log(error.raw, target.secret_values()))
    copy_upkeep.tell_failure(row, target)


class _Told:
    """A writable that passes everything on and tells `progress` the bytes so far, in the
    caller's thread (the sink itself is written in another)."""

    def __init__(self, out, progress: Callable[[int], None]) -> None:
        self.out, self.progress, self.done = out, progress, 0

    def write(self, data) -> int:
        written = self.out.write(data)
        self.done += len(data)
        self.progress(self.done)
        return written


def download(row: SnapshotCopy, sink, *, identities=(),
             progress: Callable[[int], None] | None = None) -> tuple[int, str]:
    """Write the archive a verified copy holds into `sink`, decrypted with `identities` when
    the copy is encrypted; (size, SHA-256) of what was written, for the caller to compare.

    Three threads overlap: the object is read ahead in large chunks, decrypted in
    process (lib/agestream.py), then hashed and written behind (lib/streams.py).
    OffsiteError for the target's failures, agecrypt.AgeError for a wrong identity or
    altered data, the sink's own error (an OSError) as it is; `sink` then holds a part
    of the archive: the caller discards it. `progress(bytes)` is called in the caller's
    thread as the archive comes (the sink is written in another: it must not report).
    """
    target = BackupTarget.objects.get(pk=row.target_id)
    source = target.store().open(row.remote_key)
    try:
        with streams.ReadAhead(source) as ahead, streams.WriteBehind(sink) as out:
            told = _Told(out, progress) if progress is not None else out
            try:
                if row.encrypted:
                    agecrypt.decrypt_stream(ahead, told, list(identities))
                else:
                    while chunk := ahead.read(READ_BACK_CHUNK):
                        told.write(chunk)
            except Exception as exc:  # noqa: BLE001 - sorted below
                if ahead.error is not None:  # the target's stream failed, whatever came of it
                    raise offsite.OffsiteError("no_read", f"{type(ahead.error).__name__}: "
                                                          f"{ahead.error}") from None
                if isinstance(exc, (offsite.OffsiteError, agecrypt.AgeError)) \
                        or exc is out.error:
                    raise
                raise offsite.OffsiteError("no_read", f"{type(exc).__name__}: {exc}") from None
    finally:
        with contextlib.suppress(Exception):
            source.close()
    return out.size, out.hexdigest()


def fail_lost() -> int:
    """Fail the copies whose worker died, and those no worker took in BERTH_TASK_LOST_AFTER
    (since they were queued, or queued again by a retry);
    what a dead upload left on its target (an unfinished multipart upload) is removed."""
    failed = 0
    stale = SnapshotCopy.objects.filter(state__in=SnapshotCopy.ACTIVE_STATES).select_related(
        "target")
    for row in stale:
        if not row.is_lost(since=row.retried or row.created):
            continue
        if row.move(only_from=SnapshotCopy.ACTIVE_STATES, state=SnapshotCopy.State.FAILED,
                    failure_code="interrupted", finished=timezone.now()):
            failed += 1
            copy_upkeep.tell_failure(row, row.target)
            if row.remote_key:
                with contextlib.suppress(Exception):
                    _remove(row.target.store(), row.remote_key, encrypted=row.encrypted)
    return failed
