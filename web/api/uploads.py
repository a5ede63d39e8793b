"""Receiving an archive upload: straight to a file beside the archives, hashed and capped.

Django's own upload handlers would buffer in memory or write to the system's
temporary directory, without a size cap on files. This handler writes the
one `archive` field to a temporary file on the archives' filesystem (so a
valid import is a rename), hashes it as it arrives, and refuses with 413 as
soon as it passes BERTH_SNAPSHOT_MAX_UPLOAD_BYTES, or with 507 as soon as
writing it would leave less than BERTH_SNAPSHOT_RESERVE_BYTES free beside
what extractions in progress have reserved. The view
installs it only once the caller is authenticated and allowed to import, and
removes anything the request did not hand over to an import (`discard()`)
however the request ends.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.utils.translation import gettext_lazy as _
from django.utils.translation import gettext_noop
from rest_framework import exceptions, status

from engine.imports import Staged
from snapshots import reservations, storage
from snapshots.errors import InsufficientSpace

FIELD = "archive"
# Multipart framing around the file: boundaries, headers, other small fields.
FRAMING_BYTES = 64 * 1024
# Free space is read afresh at least this often while an upload arrives.
SPACE_RECHECK_BYTES = 64 << 20


class UploadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = _("The upload is larger than the limit (BERTH_SNAPSHOT_MAX_UPLOAD_BYTES).")
    default_code = "upload_too_large"


class StagedUpload(UploadedFile):
    def __init__(self, staged: Staged, name: str) -> None:
        super().__init__(open(staged.path, "rb"), name=name,  # noqa: SIM115 - closed by Django
                         content_type="application/zstd", size=staged.size)
        self.staged = staged


class SnapshotUploadHandler(FileUploadHandler):
    def __init__(self, request=None, *, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.fd: int | None = None
        self.path: Path | None = None
        self.digest = hashlib.sha256()
        self.size = 0
        self.room = 0  # bytes that may still be written before free space is read again

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        if content_length and content_length > self.limit + FRAMING_BYTES:
            raise UploadTooLarge
        return None  # go on with the normal parsing

    def new_file(self, field_name, file_name, *args, **kwargs) -> None:
        super().new_file(field_name, file_name, *args, **kwargs)
        if field_name == FIELD and self.path is None:
            self.fd, self.path = storage.open_temp(storage.uploads_dir(), prefix=".upload-")

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        if self.fd is None:
            return None  # another field, or a second archive: dropped
        self.size += len(raw_data)
        if self.size > self.limit:
            self.discard()
            raise UploadTooLarge
        self._claim(len(raw_data))
        self.digest.update(raw_data)
        view = memoryview(raw_data)
        while view:
            view = view[os.write(self.fd, view):]
        return None

    def _claim(self, size: int) -> None:
        """Keep BERTH_SNAPSHOT_RESERVE_BYTES free on the archives' filesystem, beside what
        extractions in progress have reserved."""
        if size > self.room:
            stat = os.fstatvfs(self.fd)
            # What extractions in progress have reserved is not free (snapshots/reservations.py).
            held, _entries = reservations.held(os.fstat(self.fd).st_dev)
            free = stat.f_bavail * stat.f_frsize - settings.BERTH_SNAPSHOT_RESERVE_BYTES - held
            if size > free:
                self.discard()
                raise InsufficientSpace(gettext_noop(
                    "There is not enough free space to receive the upload."))
            self.room = min(free, SPACE_RECHECK_BYTES)
        self.room -= size

    def file_complete(self, file_size: int) -> StagedUpload | None:
        if self.fd is None:
            return None
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = None
        staged = Staged(path=self.path, size=self.size, sha256=self.digest.hexdigest())
        return StagedUpload(staged, self.file_name or "archive.tar.zst")

    def upload_interrupted(self) -> None:
        self.discard()

    def discard(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        storage.discard(self.path)
