"""Where backups go when they leave the host: an S3 bucket (boto3) or a mounted directory.

A store writes, measures, reads and deletes objects under its prefix. Every
failure is an OffsiteError with a fixed code and message (never the raw
error, which can name hosts and keys); the raw text is kept on `.raw` for a
redacted log line. docs/backups.md describes the targets.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import boto3
import botocore.config
import botocore.exceptions
import botocore.loaders
import botocore.session
from django.utils.translation import gettext_lazy as _

from lib import fsutil

# Parts of 8 MiB, four uploaded at a time; a stream that cannot seek (an encrypted
# one) is buffered by s3transfer up to ten parts: an upload holds at most about 80 MiB.
PART_SIZE = 8 << 20
UPLOAD_THREADS = 4
PROBE_PREFIX = ".berth-probe-"
UPLOAD_PREFIX = ".berth-upload-"


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
        "not_allowed": _("The directory is not allowed as a target: it must lie under "
                         "BERTH_BACKUP_DIRECTORY_ROOTS, apart from Berth's data and volumes, "
                         "with no symlink on the way."),
        "interrupted": _("The copy was interrupted (its worker stopped) before it was "
                         "verified."),
        "unreadable_secret": _("The stored secret cannot be decrypted: BERTH_ENCRYPTION_KEY "
                               "changed since it was saved."),
        "unavailable": _("The target answered that it cannot serve requests now (a server "
                         "error)."),
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
    secret_access_key: str = field(repr=False)
    path_style: bool = True


def _joined(prefix: str, name: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name


# --- S3 -----------------------------------------------------------------------------------

_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
               "AuthorizationHeaderMalformed", "ExpiredToken", "InvalidClientTokenId"}


_UNAVAILABLE_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"}


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
        # boto3 has already retried these a few times: the server is down or overloaded.
        if code in _UNAVAILABLE_CODES or (isinstance(status, int) and status >= 500):
            return OffsiteError("unavailable", str(exc))
    return OffsiteError("internal", str(exc))


# One loader for every client: a new boto3 session parses botocore's JSON service models
# again, 50-100 ms per client (more than a recovery's first byte on a LAN). The loader only
# caches what it read; credentials stay with each client.
_LOADER = botocore.loaders.create_loader()


def _session() -> boto3.session.Session:
    core = botocore.session.Session()
    core.register_component("data_loader", _LOADER)
    return boto3.session.Session(botocore_session=core)


class S3Store:
    """Objects under a prefix of one bucket, spoken to over HTTP(S) with boto3."""

    def __init__(self, location: S3Location, *, timeout: int = 30) -> None:
        self.location = location
        config = botocore.config.Config(
            s3={"addressing_style": "path" if location.path_style else "auto"},
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=timeout, read_timeout=timeout * 2,
            # botocore would CRC every download in Python, a third of a recovery's CPU;
            # what Berth reads back is checked end to end already (SHA-256, and age's
            # authenticated chunks). Uploads still send their checksums.
            response_checksum_validation="when_required",
        )
        try:
            self.client = _session().client(
                "s3", endpoint_url=location.endpoint_url or None,
                region_name=location.region or None,
                aws_access_key_id=location.access_key_id,
                aws_secret_access_key=location.secret_access_key,
                config=config,
            )
        except (ValueError, botocore.exceptions.BotoCoreError) as exc:
            # An invalid region or endpoint; the message names neither key.
            raise OffsiteError("internal", type(exc).__name__) from None

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

    def ready(self) -> None:
        """The bucket answers to these credentials (before a long upload starts)."""
        try:
            self.client.head_bucket(Bucket=self.location.bucket)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            error = _s3_error(exc, "no_read")
            if error.code == "not_found":  # head_bucket says 404 for a missing bucket
                error = OffsiteError("no_bucket", error.raw)
            if error.code != "no_read":
                raise error from None
            # A HEAD answer has no body to say why it was refused: ask once more with a
            # request whose answer names it (a wrong key, or only no permission to read).
            try:
                self.client.list_objects_v2(Bucket=self.location.bucket, MaxKeys=1)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as again:
                raise _s3_error(again, "no_read") from None
            raise error from None

    def abort_incomplete(self, name: str) -> None:
        """Abort every unfinished multipart upload of `name` (a dead worker's)."""
        key = self.key(name)
        try:
            answer = self.client.list_multipart_uploads(Bucket=self.location.bucket, Prefix=key)
            for upload in answer.get("Uploads", []):
                if upload["Key"] == key:
                    self.client.abort_multipart_upload(Bucket=self.location.bucket, Key=key,
                                                       UploadId=upload["UploadId"])
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise _s3_error(exc, "no_delete") from None

    def unfinished(self, before: datetime) -> list[str]:
        """The names (relative to the prefix) with a multipart upload begun before `before`
        and never completed nor aborted."""
        prefix = self.location.prefix.strip("/")
        strip = len(prefix) + 1 if prefix else 0
        found = []
        try:
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.location.bucket,
                                           Prefix=f"{prefix}/" if prefix else ""):
                found += [upload["Key"][strip:] for upload in page.get("Uploads", [])
                          if upload["Initiated"] < before]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise _s3_error(exc, "no_read") from None
        return sorted(set(found))

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
    if exc.errno in (errno.ENOENT,):
        return OffsiteError("missing_directory", str(exc))
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return OffsiteError("not_allowed", str(exc))
    return OffsiteError("internal", str(exc))


class DirectoryStore:
    """Files under a directory (a mounted NAS share, a second disk); writes are durable.

    No path is resolved as a whole: the root is opened one component at a
    time from `/` with O_NOFOLLOW, and every file relative to it, so a symlink
    planted in the path or the share (after the target was validated, too)
    is refused, never followed.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.normpath(str(root)))

    def _open_root(self) -> int:
        fd = os.open("/", fsutil.DIR_FLAGS)
        try:
            for part in self.root.parts[1:]:
                child = os.open(part, fsutil.DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
        except OSError as exc:
            os.close(fd)
            raise _os_error(exc, "no_read") from None
        return fd

    @staticmethod
    def _split(name: str) -> tuple[list[str], str]:
        parts = name.split("/")
        if name.startswith("/") or "\0" in name or any(p in {"", ".", ".."} for p in parts):
            raise OffsiteError("internal", f"{name!r} is not a clean relative name")
        return parts[:-1], parts[-1]

    @contextlib.contextmanager
    def _directory(self, parents: list[str], *,
                   created: list[list[str]] | None = None) -> Iterator[int]:
        """The directory `parents` below the root, opened without following symlinks;
        with `created`, missing ones are made and listed there."""
        fds = [self._open_root()]
        try:
            for index, part in enumerate(parents):
                if created is not None:
                    try:
                        os.mkdir(part, 0o700, dir_fd=fds[-1])
                        created.append(parents[:index + 1])
                    except FileExistsError:
                        pass
                fds.append(os.open(part, fsutil.DIR_FLAGS, dir_fd=fds[-1]))
            yield fds[-1]
        finally:
            for fd in reversed(fds):
                os.close(fd)

    def put(self, name: str, source: BinaryIO) -> None:
        parents, leaf = self._split(name)
        temp = f"{UPLOAD_PREFIX}{leaf}-{secrets.token_hex(8)}"
        created: list[list[str]] = []
        try:
            with self._directory(parents, created=created) as directory:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600, dir_fd=directory)
                try:
                    try:
                        with os.fdopen(fd, "wb", closefd=False) as out:
                            shutil.copyfileobj(source, out, PART_SIZE)
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    os.rename(temp, leaf, src_dir_fd=directory, dst_dir_fd=directory)
                    os.fsync(directory)
                finally:
                    with contextlib.suppress(OSError):  # gone after the rename
                        os.unlink(temp, dir_fd=directory)
        except OSError as exc:
            self._remove_empty(created)
            raise _os_error(exc, "no_write") from None
        except BaseException:
            self._remove_empty(created)
            raise

    def abort_incomplete(self, name: str) -> None:
        """Remove what a dead write of `name` left: its temporary files."""
        parents, leaf = self._split(name)
        try:
            with self._directory(parents) as directory:
                for entry in os.listdir(directory):
                    if entry.startswith(f"{UPLOAD_PREFIX}{leaf}-"):
                        os.unlink(entry, dir_fd=directory)
        except (FileNotFoundError, OffsiteError):
            return
        except OSError as exc:
            raise _os_error(exc, "no_delete") from None

    def unfinished(self, before: datetime) -> list[str]:
        """The names with a temporary file of a write begun before `before` left beside them."""
        cutoff = before.timestamp()
        found = set()
        try:
            with self._directory([]) as directory:
                for top, _dirs, files, top_fd in os.fwalk(dir_fd=directory, onerror=_raise):
                    for entry in files:
                        if not entry.startswith(UPLOAD_PREFIX):
                            continue
                        info = os.stat(entry, dir_fd=top_fd, follow_symlinks=False)
                        leaf = entry[len(UPLOAD_PREFIX):].rsplit("-", 1)[0]
                        if stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff and leaf:
                            found.add(os.path.normpath(os.path.join(top, leaf)))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _os_error(exc, "no_read") from None
        return sorted(found)

    def ready(self) -> None:
        """The directory can be opened (every use checks again)."""
        os.close(self._open_root())

    def _remove_empty(self, created: list[list[str]]) -> None:
        """Remove the directories a failed put made (deepest first), if still empty."""
        for path in reversed(created):
            with contextlib.suppress(OSError, OffsiteError), self._directory(path[:-1]) as d:
                os.rmdir(path[-1], dir_fd=d)

    def size(self, name: str) -> int | None:
        parents, leaf = self._split(name)
        try:
            with self._directory(parents) as directory:
                found = os.stat(leaf, dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _os_error(exc, "no_read") from None
        if not stat.S_ISREG(found.st_mode):
            raise OffsiteError("not_allowed", f"{name!r} is not a regular file")
        return found.st_size

    def open(self, name: str) -> BinaryIO:
        parents, leaf = self._split(name)
        try:
            with self._directory(parents) as directory:
                # Non-blocking, so that a FIFO planted in the share cannot hang the open.
                fd = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                             dir_fd=directory)
        except FileNotFoundError:
            raise OffsiteError("not_found", name) from None
        except OSError as exc:
            raise _os_error(exc, "no_read") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OffsiteError("not_allowed", f"{name!r} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

    def delete(self, name: str) -> None:
        parents, leaf = self._split(name)
        try:
            with self._directory(parents) as directory:
                os.unlink(leaf, dir_fd=directory)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _os_error(exc, "no_delete") from None

    def names(self, under: str = "") -> list[str]:
        parents = self._split(under)[0] + [self._split(under)[1]] if under else []
        found = []
        try:
            with self._directory(parents) as directory:
                for top, _dirs, files, top_fd in os.fwalk(dir_fd=directory, onerror=_raise):
                    found += [os.path.normpath(os.path.join(under, top, f)) for f in files
                              if not f.startswith(UPLOAD_PREFIX)
                              and stat.S_ISREG(os.stat(f, dir_fd=top_fd,
                                                       follow_symlinks=False).st_mode)]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _os_error(exc, "no_read") from None
        return sorted(found)


def _raise(exc: OSError) -> None:
    raise exc


Store = S3Store | DirectoryStore


def check(store: Store) -> None:
    """Write a probe object, read it back, delete it; OffsiteError with the step's code."""
    name = f"{PROBE_PREFIX}{secrets.token_hex(8)}"
    payload = secrets.token_bytes(64)
    try:
        store.put(name, io.BytesIO(payload))
        with contextlib.closing(store.open(name)) as stream:
            try:
                back = stream.read()
            except (OSError, botocore.exceptions.BotoCoreError) as exc:
                raise OffsiteError("no_read", str(exc)) from None
        if back != payload:
            raise OffsiteError("mismatch")
    except OffsiteError:
        with contextlib.suppress(OffsiteError):  # the first failure is the one to report
            store.delete(name)
        raise
    store.delete(name)
    if store.size(name) is not None:
        raise OffsiteError("no_delete", "the probe is still there after its delete")
