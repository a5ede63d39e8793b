"""Where backups go when they leave the host: an S3 bucket (boto3) or a mounted directory.

A store writes, measures, reads and deletes objects under its prefix. Every
failure is an OffsiteError with a fixed code and message (never the raw
error, which can name hosts and keys); the raw text is kept on `.raw` for a
redacted log line. docs/backups.md describes the targets.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import boto3
import botocore.config
import botocore.exceptions
from django.utils.translation import gettext_lazy as _

from lib import fsutil

# One part at a time per thread, four threads: an upload holds about 32 MiB.
PART_SIZE = 8 << 20
UPLOAD_THREADS = 4
PROBE_PREFIX = ".berth-probe-"


class OffsiteError(Exception):
    code = "internal"
    messages = {
        "unreachable": _("The target cannot be reached (no answer at its address)."),
        "authentication": _("The target refused the credentials (wrong access key or secret)."),
        "no_bucket": _("The bucket does not exist."),
        "no_write": _("The credentials may not write to the target."),
        "no_read": _("The credentials may not read from the target."),
        "no_delete": _("The credentials may not delete from the target."),
        "missing_directory": _("The directory does not exist or is not a directory."),
        "full": _("The target is full."),
        "mismatch": _("What was read back differs from what was written."),
        "not_found": _("The object is not on the target."),
        "internal": _("The target answered with an unexpected error."),
    }

    def __init__(self, code: str, raw: str = "") -> None:
        self.code = code if code in self.messages else "internal"
        self.raw = raw
        super().__init__(str(self.messages[self.code]))

    @property
    def message(self) -> str:
        return str(self.messages[self.code])


@dataclass(frozen=True)
class S3Location:
    endpoint_url: str
    region: str
    bucket: str
    prefix: str
    access_key_id: str
    secret_access_key: str
    path_style: bool = True


def _joined(prefix: str, name: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name


# --- S3 -----------------------------------------------------------------------------------

_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
               "AuthorizationHeaderMalformed", "ExpiredToken", "InvalidClientTokenId"}


def _s3_error(exc: Exception, denied: str) -> OffsiteError:
    """The fixed code for a boto error; `denied` is the code an AccessDenied means here."""
    if isinstance(exc, (botocore.exceptions.EndpointConnectionError,
                        botocore.exceptions.ConnectTimeoutError,
                        botocore.exceptions.ReadTimeoutError,
                        botocore.exceptions.ConnectionClosedError)):
        return OffsiteError("unreachable", str(exc))
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _AUTH_CODES:
            return OffsiteError("authentication", str(exc))
        if code == "NoSuchBucket":
            return OffsiteError("no_bucket", str(exc))
        if code in {"NoSuchKey", "404", "NotFound"}:
            return OffsiteError("not_found", str(exc))
        if code in {"AccessDenied", "403", "AllAccessDisabled"} or status == 403:
            return OffsiteError(denied, str(exc))
        if code in {"EntityTooLarge", "QuotaExceeded"}:
            return OffsiteError("full", str(exc))
    return OffsiteError("internal", str(exc))


class S3Store:
    """Objects under a prefix of one bucket, spoken to over HTTP(S) with boto3."""

    def __init__(self, location: S3Location, *, timeout: int = 30) -> None:
        self.location = location
        config = botocore.config.Config(
            s3={"addressing_style": "path" if location.path_style else "auto"},
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=timeout, read_timeout=timeout * 2,
        )
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=location.endpoint_url or None,
            region_name=location.region or None,
            aws_access_key_id=location.access_key_id,
            aws_secret_access_key=location.secret_access_key,
            config=config,
        )

    def key(self, name: str) -> str:
        return _joined(self.location.prefix, name)

    def put(self, name: str, source: BinaryIO) -> None:
        """Upload `source` (read once, in parts; a failed multipart upload is aborted)."""
        transfer = boto3.s3.transfer.TransferConfig(
            multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE,
            max_concurrency=UPLOAD_THREADS, use_threads=True,
        )
        try:
            self.client.upload_fileobj(source, self.location.bucket, self.key(name),
                                       Config=transfer)
        except boto3.exceptions.S3UploadFailedError as exc:
            cause = exc.__cause__ or exc.__context__ or exc
            raise _s3_error(cause, "no_write") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise _s3_error(exc, "no_write") from None
        except botocore.exceptions.ClientError as exc:
            raise _s3_error(exc, "no_write") from None

    def size(self, name: str) -> int | None:
        """The object's size, or None if there is no such object."""
        try:
            head = self.client.head_object(Bucket=self.location.bucket, Key=self.key(name))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            error = _s3_error(exc, "no_read")
            if error.code == "not_found":
                return None
            raise error from None
        return int(head["ContentLength"])

    def open(self, name: str) -> BinaryIO:
        """The object's content as a stream."""
        try:
            answer = self.client.get_object(Bucket=self.location.bucket, Key=self.key(name))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise _s3_error(exc, "no_read") from None
        return answer["Body"]

    def delete(self, name: str) -> None:
        try:
            self.client.delete_object(Bucket=self.location.bucket, Key=self.key(name))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise _s3_error(exc, "no_delete") from None

    def names(self, under: str = "") -> list[str]:
        """Every object name (relative to the prefix) under `under`."""
        found = []
        paginator = self.client.get_paginator("list_objects_v2")
        start = self.key(under) if under else (self.location.prefix.strip("/") + "/"
                                               if self.location.prefix.strip("/") else "")
        strip = len(self.location.prefix.strip("/")) + 1 if self.location.prefix.strip("/") else 0
        try:
            for page in paginator.paginate(Bucket=self.location.bucket, Prefix=start):
                found += [item["Key"][strip:] for item in page.get("Contents", [])]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise _s3_error(exc, "no_read") from None
        return found


# --- a directory ----------------------------------------------------------------------------

def _os_error(exc: OSError, denied: str) -> OffsiteError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OffsiteError("full", str(exc))
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OffsiteError(denied, str(exc))
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return OffsiteError("missing_directory", str(exc))
    return OffsiteError("internal", str(exc))


class DirectoryStore:
    """Files under a directory (a mounted NAS share, a second disk); writes are durable."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, name: str) -> Path:
        target = (self.root / name).resolve()
        if not str(target).startswith(str(self.root.resolve()) + os.sep):
            raise OffsiteError("internal", f"{name!r} leaves the target directory")
        return target

    def put(self, name: str, source: BinaryIO) -> None:
        if not self.root.is_dir():
            raise OffsiteError("missing_directory", str(self.root))
        target = self.path(name)
        temp = target.with_name(f".berth-upload-{secrets.token_hex(8)}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(temp, "xb") as out:
                shutil.copyfileobj(source, out, PART_SIZE)
                out.flush()
                os.fsync(out.fileno())
            os.rename(temp, target)
            fsutil.fsync_dir(str(target.parent))
        except OSError as exc:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise _os_error(exc, "no_write") from None

    def size(self, name: str) -> int | None:
        try:
            return self.path(name).stat().st_size
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _os_error(exc, "no_read") from None

    def open(self, name: str) -> BinaryIO:
        try:
            return open(self.path(name), "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            raise OffsiteError("not_found", name) from None
        except OSError as exc:
            raise _os_error(exc, "no_read") from None

    def delete(self, name: str) -> None:
        try:
            self.path(name).unlink(missing_ok=True)
        except OSError as exc:
            raise _os_error(exc, "no_delete") from None

    def names(self, under: str = "") -> list[str]:
        base = self.path(under) if under else self.root
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*")
                      if p.is_file() and not p.name.startswith(".berth-upload-"))


Store = S3Store | DirectoryStore


def check(store: Store) -> None:
    """Write a probe object, read it back, delete it; OffsiteError with the step's code."""
    name = f"{PROBE_PREFIX}{secrets.token_hex(8)}"
    payload = secrets.token_bytes(64)
    if isinstance(store, DirectoryStore) and not store.root.is_dir():
        raise OffsiteError("missing_directory", str(store.root))
    store.put(name, _Bytes(payload))
    try:
        with contextlib.closing(store.open(name)) as stream:
            if stream.read() != payload:
                raise OffsiteError("mismatch")
    finally:
        store.delete(name)
    if store.size(name) is not None:
        raise OffsiteError("no_delete", "the probe is still there after its delete")


class _Bytes:
    """A readable of fixed bytes (upload_fileobj wants .read only)."""

    def __init__(self, data: bytes) -> None:
        self._data, self._at = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size is None or size < 0 else self._at + size
        chunk, self._at = self._data[self._at:end], min(end, len(self._data))
        return chunk
