"""Importing an archive made elsewhere: untrusted input, kept only once fully validated.

The upload is first written, hashed, beside the archives (same filesystem,
so keeping it is a rename). It is then extracted in full by the safe
extractor into a scratch directory — against the workload's current volume
count and the configured caps — and the scratch directory is removed. Only an
archive that extracts cleanly becomes a snapshot; anything else raises
ArchiveError and leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_noop

from engine.locked import copy_policy, retention
from snapshots import archive, storage
from snapshots.models import Snapshot
from workloads.jobs import acting_user
from workloads.models import EventLog, Workload

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Staged:
    """An upload written to a temporary file beside the archives."""

    path: Path
    size: int
    sha256: str


def stage(source: BinaryIO) -> Staged:
    """Copy `source` into a temporary file beside the archives, hashing it."""
    fd, path = storage.open_temp(storage.uploads_dir(), prefix=".upload-")
    digest, size = hashlib.sha256(), 0
    try:
        while chunk := source.read(_CHUNK):
            size += len(chunk)
            digest.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        storage.discard(path)
        raise
    finally:
        os.close(fd)
    return Staged(path=path, size=size, sha256=digest.hexdigest())


def validate(path: Path, *, volume_count: int) -> archive.Extracted:
    """A full extraction of the archive at `path` into a scratch directory, then removed."""
    scratch = storage.scratch_path()
    try:
        with open(path, "rb") as source:
            return archive.extract_tree(source, str(scratch), volume_count=volume_count)
    finally:
        storage.discard(scratch)


def import_snapshot(*, workload: Workload, staged: Staged,
                    user: AbstractBaseUser | None = None) -> Snapshot:
    """Keep a staged upload as a snapshot of `workload` once it validates in full.

    The staged file is consumed: moved into place on success, removed on any
    failure (ArchiveError for a hostile, corrupt or oversized archive).
    """
    name = storage.new_archive_name("imported")
    try:
        extracted = validate(staged.path, volume_count=len(workload.captured_volumes()))
        storage.place(staged.path, workload.pk, name)
    except BaseException:
        storage.discard(staged.path)
        raise
    try:
        snapshot = _record(workload, staged, name, extracted.manifest, user)
    except BaseException:
        storage.remove_archive(workload.pk, name)
        raise
    retention.prune(workload)
    copy_policy.queue_copies(snapshot)
    return snapshot


def _record(workload: Workload, staged: Staged, name: str, manifest: dict,
            user: AbstractBaseUser | None) -> Snapshot:
    with transaction.atomic():
        snapshot = Snapshot.objects.create(
            workload=workload, kind=Snapshot.Kind.MANUAL, state=Snapshot.State.READY,
            imported=True, user=acting_user(user),
            created=timezone.now(),
        )
        snapshot.succeed(archive=name, size=staged.size, sha256=staged.sha256,
                         manifest=manifest)
        EventLog.objects.create(
            workload=workload, user=snapshot.user,
            message=gettext_noop("Imported snapshot #%(id)d."), params={"id": snapshot.pk},
        )
    return snapshot


def import_file(*, workload: Workload, source: BinaryIO,
                user: AbstractBaseUser | None = None) -> Snapshot:
    """stage() then import_snapshot(): the `import_snapshot` command's path."""
    return import_snapshot(workload=workload, staged=stage(source), user=user)
