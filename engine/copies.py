"""Copies of snapshots to backup targets: queue one, upload it encrypted, verify it.

The archive is encrypted on the host as it streams to the target (age, to
the target's recipients) and is never written out in clear or whole in
memory. A copy is verified only once the object read back from the target
has the size and SHA-256 that were sent (docs/backups.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from datetime import UTC

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from backups.models import BackupTarget, SnapshotCopy
from engine import queue
from lib import agecrypt, offsite, redact
from snapshots import storage
from snapshots.models import Snapshot
from workloads.jobs import acting_user

logger = logging.getLogger(__name__)

READ_BACK_CHUNK = 1 << 20


class CopyRefused(Exception):
    def __init__(self, message: str, *, active: SnapshotCopy | None = None) -> None:
        super().__init__(message)
        self.active = active


def object_name(snapshot: Snapshot, *, encrypted: bool) -> str:
    """`<project>/<stage>/<workload>/<UTC time>-<kind>-<id>.tar.zst[.age]`."""
    workload = snapshot.workload
    when = snapshot.created.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = ".tar.zst.age" if encrypted else ".tar.zst"
    return (f"{workload.stage.project.slug}/{workload.stage.slug}/{workload.slug}/"
            f"{when}-{snapshot.kind}-{snapshot.pk}{suffix}")


def request_copy(*, snapshot: Snapshot, target: BackupTarget,
                 user: AbstractBaseUser | None = None) -> SnapshotCopy:
    """Queue a copy of a ready snapshot to `target`; CopyRefused if it cannot be."""
    if snapshot.state != Snapshot.State.READY:
        raise CopyRefused(str(_("Only a ready snapshot can be copied.")))
    with transaction.atomic():
        active = (SnapshotCopy.objects.select_for_update()
                  .filter(snapshot=snapshot, target=target,
                          state__in=SnapshotCopy.ACTIVE_STATES).first())
        if active is not None:
            raise CopyRefused(str(_("A copy of this snapshot to this target is already "
                                    "under way.")), active=active)
        row = SnapshotCopy.objects.create(
            snapshot=snapshot, workload=snapshot.workload, target=target,
            encrypted=target.encrypted, user=acting_user(user),
        )
    transaction.on_commit(lambda: queue.enqueue(queue.COPY, row.pk, name=f"copy-{row.pk}"))
    return row


def copy_snapshot(row: SnapshotCopy) -> SnapshotCopy:
    """Upload and verify one queued copy (the task's body); the row says how it ended."""
    if not row.move(only_from=[SnapshotCopy.State.QUEUED], state=SnapshotCopy.State.UPLOADING,
                    started=timezone.now(), attempts=row.attempts + 1):
        return row
    target, snapshot = row.target, row.snapshot
    try:
        if snapshot is None or snapshot.state != Snapshot.State.READY:
            raise offsite.OffsiteError("not_found", "the local snapshot is gone")
        name = object_name(snapshot, encrypted=row.encrypted)
        SnapshotCopy.objects.filter(pk=row.pk).update(remote_key=name)
        row.remote_key = name
        store = target.store()
        row.start_progress(snapshot.size)
        size, digest = _upload(store, name, snapshot, row, target)
        _verify(store, name, size, digest)
    except offsite.OffsiteError as exc:
        _fail(row, target, exc)
        return row
    except Exception as exc:  # noqa: BLE001 - a copy ends failed, never half-recorded
        _fail(row, target, offsite.OffsiteError("internal", f"{type(exc).__name__}: {exc}"))
        return row
    row.move(only_from=[SnapshotCopy.State.UPLOADING], state=SnapshotCopy.State.VERIFIED,
             size=size, sha256=digest, finished=timezone.now(), failure_code="")
    logger.info("snapshot %s copied to target %s as %s (%d bytes)", snapshot.pk, target.pk,
                name, size)
    return row


class _Counted:
    """A readable that hashes and counts what passes through it, reporting progress."""

    def __init__(self, source, report=None) -> None:
        self.source, self.report = source, report
        self.size, self.hash = 0, hashlib.sha256()

    def read(self, amount: int = -1) -> bytes:
        chunk = self.source.read(amount)
        self.size += len(chunk)
        self.hash.update(chunk)
        if self.report is not None and chunk:
            self.report(self.size)
        return chunk


def _upload(store: offsite.Store, name: str, snapshot: Snapshot, row: SnapshotCopy,
            target: BackupTarget) -> tuple[int, str]:
    """Stream the archive (encrypted, unless the target is not) to `name`; (size, sha256)."""
    try:
        archive = storage.open_archive(snapshot.workload_id, snapshot.archive)
    except OSError as exc:
        raise offsite.OffsiteError("not_found", f"the local archive: {exc}") from None
    with archive:
        plain = _Counted(archive, _throttled(row))
        if not row.encrypted:
            sent = _Counted(plain)
            store.put(name, sent)
            return sent.size, sent.hash.hexdigest()
        read_end, write_end = os.pipe()
        failure: list[BaseException] = []

        def encrypt() -> None:
            with os.fdopen(write_end, "wb") as sink:
                try:
                    agecrypt.encrypt_stream(plain, sink, target.recipient_list)
                except BaseException as exc:  # noqa: BLE001 - reported by the uploader
                    failure.append(exc)

        worker = threading.Thread(target=encrypt, name=f"berth-encrypt-{row.pk}", daemon=True)
        worker.start()
        with os.fdopen(read_end, "rb") as source:
            sent = _Counted(source)
            try:
                store.put(name, sent)
            finally:
                # Closing the read end ends an encryption the upload gave up on.
                with contextlib.suppress(OSError):
                    source.close()
                worker.join()
        if failure and not isinstance(failure[0], BrokenPipeError):
            raise offsite.OffsiteError("internal", f"encryption: {failure[0]}")
        if plain.size != snapshot.size:
            raise offsite.OffsiteError("mismatch", "the local archive changed while it was sent")
        return sent.size, sent.hash.hexdigest()


def _throttled(row: SnapshotCopy):
    """Progress reports at most every 4 MiB (each is a database write)."""
    last = [0]

    def report(done: int) -> None:
        if done - last[0] >= 4 << 20:
            last[0] = done
            row.report_progress(done)

    return report


def _verify(store: offsite.Store, name: str, size: int, digest: str) -> None:
    """Read the object back: its size and SHA-256 must be what was sent."""
    if store.size(name) != size:
        raise offsite.OffsiteError("mismatch", "the size read back differs")
    check = hashlib.sha256()
    with contextlib.closing(store.open(name)) as stream:
        while chunk := stream.read(READ_BACK_CHUNK):
            check.update(chunk)
    if check.hexdigest() != digest:
        raise offsite.OffsiteError("mismatch", "the SHA-256 read back differs")


def _fail(row: SnapshotCopy, target: BackupTarget, error: offsite.OffsiteError) -> None:
    """End the copy failed with its code.

    An upload that failed left nothing (a failed multipart upload is aborted,
    a directory write goes through a temporary file). An object that arrived
    but read back wrong is removed, and any earlier copy under the same name
    with it: it was overwritten.
    """
    if error.code == "mismatch" and row.remote_key:
        with contextlib.suppress(Exception):
            target.store().delete(row.remote_key)
        SnapshotCopy.objects.filter(target=target, remote_key=row.remote_key,
                                    state=SnapshotCopy.State.VERIFIED).update(
            state=SnapshotCopy.State.FAILED, failure_code="mismatch")
    row.move(only_from=[SnapshotCopy.State.UPLOADING], state=SnapshotCopy.State.FAILED,
             failure_code=error.code, finished=timezone.now())
    logger.warning("copy %s of snapshot %s to target %s failed (%s): %s", row.pk,
                   row.snapshot_id, target.pk, error.code,
                   redact.redact(redact.redact_url_credentials(error.raw), target.secret_values()))
