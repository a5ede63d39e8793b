"""Per-workload locks that serialize deploys and restores across processes.

Always an exclusive `flock` on `$BERTH_DATA_DIR/locks/workload-<id>.lock`
(flock locks belong to the open file, so two threads of one process exclude
each other too), and on PostgreSQL also a session-level advisory lock keyed
on the workload id, on the calling thread's database connection, taken after
the file lock.

Why both on PostgreSQL: the advisory lock is what the design names, and what
an administrator sees in pg_locks; but it belongs to a database session, and
a session can end while its process goes on (the connection drops, or Django
closes it after an error and reconnects without the lock). Another process
could then take the lock and work on the same volumes at the same time. The
file lock cannot be lost while its process lives, and every Berth process
shares one host and one data directory (they deploy onto its Docker engine
and its host paths), so holding both means no other process can hold the
lock until this one lets go or dies. A lost advisory lock is taken back by
still_held().

`workload_lock` blocks (with a timeout), `try_workload_lock` does not, and
`assert_held` lets code that must run under the lock (the lock-held deploy
variant used by restore) check that its caller really holds it.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import DatabaseError, connection

# The advisory-lock namespace ("BRTH"), so Berth's keys never collide with
# another application's advisory locks on a shared database.
_PG_NAMESPACE = 0x42525448
_POLL_SECONDS = 0.05
_EXTEND_SECONDS = 60.0

_held = threading.local()


class LockTimeout(Exception):
    """The workload's lock was not acquired in time."""


class LockNotHeld(Exception):
    """Code that needs the workload's lock was called without it."""


def _held_set() -> set[int]:
    if not hasattr(_held, "ids"):
        _held.ids = set()
    return _held.ids


def is_held(workload_id: int) -> bool:
    return workload_id in _held_set()


def assert_held(workload_id: int) -> None:
    if not is_held(workload_id):
        raise LockNotHeld(f"the lock of workload {workload_id} is not held by this thread")


class _PostgresLock:
    def __init__(self, workload_id: int) -> None:
        self.workload_id = workload_id

    def try_acquire(self) -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_PG_NAMESPACE, self.workload_id])
            return bool(cursor.fetchone()[0])

    def release(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_PG_NAMESPACE, self.workload_id])


class _FileLock:
    def __init__(self, workload_id: int) -> None:
        directory = os.path.join(str(settings.DATA_DIR), "locks")
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, f"workload-{workload_id}.lock")
        self.fd: int | None = None

    def try_acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class _BothLocks:
    """The file lock, then the advisory lock; both or neither."""

    def __init__(self, workload_id: int) -> None:
        self.file = _FileLock(workload_id)
        self.advisory = _PostgresLock(workload_id)

    def try_acquire(self) -> bool:
        if not self.file.try_acquire():
            return False
        try:
            if self.advisory.try_acquire():
                return True
        except BaseException:
            self.file.release()
            raise
        self.file.release()
        return False

    def release(self) -> None:
        try:
            self.advisory.release()
        except DatabaseError:
            pass  # the session is gone, and its advisory lock with it
        finally:
            self.file.release()


def _make_lock(workload_id: int):
    if connection.vendor == "postgresql":
        return _BothLocks(workload_id)
    return _FileLock(workload_id)


@contextmanager
def _locked(workload_id: int, timeout: float | None,
            keep_waiting: Callable[[], bool] | None = None) -> Iterator[None]:
    if is_held(workload_id):
        # Re-entering would self-deadlock on SQLite and silently nest on
        # PostgreSQL; callers that hold the lock use the lock-held variants.
        raise RuntimeError(f"the lock of workload {workload_id} is already held by this thread")
    lock = _make_lock(workload_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    while not lock.try_acquire():
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            if keep_waiting is not None and keep_waiting():
                deadline = now + min(_EXTEND_SECONDS, timeout or _EXTEND_SECONDS)
            else:
                raise LockTimeout(
                    f"workload {workload_id} is locked by another deploy or restore"
                )
        time.sleep(_POLL_SECONDS)
    _held_set().add(workload_id)
    try:
        yield
    finally:
        _held_set().discard(workload_id)
        lock.release()


def still_held(workload_id: int) -> bool:
    """Whether this thread really still holds the lock; on PostgreSQL, asked of the database.

    The file lock lives as long as this process keeps its file open, so it
    cannot be lost. A PostgreSQL advisory lock belongs to a session: if the
    session ended (the connection dropped, or Django reconnected after an
    error), the lock is taken again on the current session — no other Berth
    process can hold it meanwhile, as they all need the file lock first. False
    only if that fails (another session took it, or the database cannot be
    reached): a caller about to do something that must not overlap with
    another holder then stops.
    """
    if not is_held(workload_id):
        return False
    if connection.vendor != "postgresql":
        return True
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
                "AND objid = %s AND objsubid = 2 AND pid = pg_backend_pid() AND granted",
                [_PG_NAMESPACE, workload_id],
            )
            if cursor.fetchone() is not None:
                return True
        return _PostgresLock(workload_id).try_acquire()
    except DatabaseError:
        return False


def workload_lock(workload_id: int, *, timeout: float | None = None,
                  keep_waiting: Callable[[], bool] | None = None):
    """Hold the workload's lock for the `with` block, waiting up to `timeout` seconds.

    With the default timeout of None, waits for BERTH_DEPLOY_LOCK_TIMEOUT.
    When that has passed, a caller's `keep_waiting()` may ask to wait on (a
    deploy waits for a restore of any length), asked again every minute.
    """
    if timeout is None:
        timeout = settings.BERTH_DEPLOY_LOCK_TIMEOUT
    return _locked(workload_id, timeout, keep_waiting)


def try_workload_lock(workload_id: int):
    """Hold the workload's lock for the `with` block, or raise LockTimeout at once."""
    return _locked(workload_id, 0)
