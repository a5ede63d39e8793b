"""Per-workload locks that serialize deploys, restores and captures across processes.

An exclusive `flock` on `$BERTH_DATA_DIR/locks/workload-<id>.lock`, and on
PostgreSQL also a session-level advisory lock on a database session of its
own. `workload_lock` blocks (with a timeout), `try_workload_lock` does not,
`assert_held` and `still_held` let the locked bodies check their caller.
docs/architecture.md ("Locks") says why both, and why a session of its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connection

# The advisory-lock namespace ("BRTH"), so Berth's keys never collide with
# another application's advisory locks on a shared database.
_PG_NAMESPACE = 0x42525448
_POLL_SECONDS = 0.05
_EXTEND_SECONDS = 60.0

_LIBPQ_KEYWORDS = frozenset({
    "application_name", "connect_timeout", "keepalives", "keepalives_idle",
    "keepalives_interval", "keepalives_count", "tcp_user_timeout", "sslmode", "sslrootcert",
    "sslcert", "sslkey", "sslpassword", "sslcrl", "target_session_attrs", "options",
    "passfile", "service", "gssencmode", "channel_binding",
})

_held = threading.local()


class LockTimeout(Exception):
    """The workload's lock was not acquired in time."""


class LockUnavailable(LockTimeout):
    """The lock could not be taken at all (its file or the database cannot be used)."""


class LockNotHeld(Exception):
    """Code that needs the workload's lock was called without it."""


def _held_locks() -> dict[int, _FileLock | _BothLocks]:
    if not hasattr(_held, "locks"):
        _held.locks = {}
    return _held.locks


def is_held(workload_id: int) -> bool:
    return workload_id in _held_locks()


def assert_held(workload_id: int) -> None:
    if not is_held(workload_id):
        raise LockNotHeld(f"the lock of workload {workload_id} is not held by this thread")


class _FileLock:
    def __init__(self, workload_id: int) -> None:
        self.path = os.path.join(str(settings.DATA_DIR), "locks", f"workload-{workload_id}.lock")
        self.fd: int | None = None

    def try_acquire(self) -> bool:
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise LockUnavailable(f"the lock file {self.path} cannot be used ({exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException as exc:
            os.close(fd)
            if isinstance(exc, OSError):
                raise LockUnavailable(f"the lock file {self.path} cannot be locked ({exc})") \
                    from None
            raise
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def held(self) -> bool:
        return self.fd is not None


class _AdvisoryLock:
    """pg_try_advisory_lock on an autocommit session opened for it; closing it releases."""

    def __init__(self, workload_id: int) -> None:
        self.workload_id = workload_id
        self.session = None

    def _connect(self):
        import psycopg

        db = connection.settings_dict
        # Only libpq's own connection keywords from OPTIONS (Django's, like
        # isolation_level, are not for a bare session).
        params = {"application_name": "berth-lock", "connect_timeout": 10}
        params |= {k: v for k, v in db.get("OPTIONS", {}).items() if k in _LIBPQ_KEYWORDS}
        try:
            return psycopg.connect(
                dbname=db["NAME"], user=db["USER"] or None, password=db["PASSWORD"] or None,
                host=db["HOST"] or None, port=db["PORT"] or None, autocommit=True, **params,
            )
        except psycopg.Error as exc:
            raise LockUnavailable(f"the database cannot be reached for the lock ({exc})") \
                from None

    def try_acquire(self) -> bool:
        import psycopg

        session = self._connect()
        try:
            got = session.execute("SELECT pg_try_advisory_lock(%s, %s)",
                                  [_PG_NAMESPACE, self.workload_id]).fetchone()[0]
        except BaseException as exc:
            session.close()  # whatever the server did, the lock ends with the session
            if isinstance(exc, psycopg.Error):
                raise LockUnavailable(f"the advisory lock failed ({exc})") from None
            raise
        if not got:
            session.close()
            return False
        self.session = session
        return True

    def release(self) -> None:
        import psycopg

        if self.session is not None:
            session, self.session = self.session, None
            try:
                # Unlocked before the close: a closed session's lock ends only once the
                # server has handled the goodbye, which a try-lock right after (the sweep,
                # the next deploy) may come before.
                with contextlib.suppress(psycopg.Error):
                    session.execute("SELECT pg_advisory_unlock(%s, %s)",
                                    [_PG_NAMESPACE, self.workload_id])
            finally:
                session.close()

    def held(self) -> bool:
        """Whether the lock's session still holds it, asked of PostgreSQL."""
        import psycopg

        if self.session is None:
            return False
        try:
            return self.session.execute(
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
                "AND objid = %s AND objsubid = 2 AND pid = pg_backend_pid() AND granted",
                [_PG_NAMESPACE, self.workload_id],
            ).fetchone() is not None
        except psycopg.Error:
            return False

    def take_back(self) -> bool:
        """After the session was lost: a new session, and the lock on it if nobody has it."""
        self.release()
        try:
            return self.try_acquire()
        except LockUnavailable:
            return False


class _BothLocks:
    """The file lock, then the advisory lock; both or neither."""

    def __init__(self, workload_id: int) -> None:
        self.file = _FileLock(workload_id)
        self.advisory = _AdvisoryLock(workload_id)

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
        finally:
            self.file.release()

    def held(self) -> bool:
        return self.file.held() and (self.advisory.held() or self.advisory.take_back())


def _make_lock(workload_id: int) -> _FileLock | _BothLocks:
    if connection.vendor == "postgresql":
        return _BothLocks(workload_id)
    return _FileLock(workload_id)


@contextmanager
def _locked(workload_id: int, timeout: float | None,
            keep_waiting: Callable[[], bool] | None = None) -> Iterator[None]:
    if is_held(workload_id):
        # Re-entering would self-deadlock on the file lock; callers that hold
        # the lock use the lock-held variants.
        raise RuntimeError(f"the lock of workload {workload_id} is already held by this thread")
    lock = _make_lock(workload_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
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
        _held_locks()[workload_id] = lock
        yield
    finally:
        # (Also when an exception arrives between the acquisition and here.)
        _held_locks().pop(workload_id, None)
        lock.release()


def still_held(workload_id: int) -> bool:
    """Whether this thread really still holds the lock; on PostgreSQL, asked of the database.

    The file lock lives as long as this process keeps its file open, so it
    cannot be lost. If the advisory lock's session ended (the connection
    dropped), the lock is taken again on a new session — no other Berth
    process can hold it meanwhile, as they all need the file lock first.
    False only if that fails (another session took it, or the database
    cannot be reached): a caller about to do something that must not overlap
    with another holder then stops.
    """
    lock = _held_locks().get(workload_id)
    return lock is not None and lock.held()


def workload_lock(workload_id: int, *, timeout: float | None = None,
                  keep_waiting: Callable[[], bool] | None = None):
    """Hold the workload's lock for the `with` block, waiting up to `timeout` seconds.

    With the default timeout of None, waits for BERTH_DEPLOY_LOCK_TIMEOUT.
    When that has passed, a caller's `keep_waiting()` may ask to wait on (a
    deploy waits for a restore of any length), asked again every minute.
    LockUnavailable (a LockTimeout) if the lock cannot be taken at all.
    """
    if timeout is None:
        timeout = settings.BERTH_DEPLOY_LOCK_TIMEOUT
    return _locked(workload_id, timeout, keep_waiting)


def try_workload_lock(workload_id: int):
    """Hold the workload's lock for the `with` block, or raise LockTimeout at once."""
    return _locked(workload_id, 0)


def held_by_anyone(workload_id: int) -> bool:
    """Whether some process (this one included) holds the workload's file lock now.

    Read from /proc/locks, without taking the lock: a probe that took it, even
    for an instant, could make another process's try_workload_lock() refuse.
    False where /proc/locks or the lock file cannot be read.
    """
    path = os.path.join(str(settings.DATA_DIR), "locks", f"workload-{workload_id}.lock")
    try:
        stat = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as locks_file:
            lines = locks_file.read().splitlines()
    except OSError:
        return False
    # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF": the device in hex, the inode.
    wanted = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    for line in lines:
        fields = line.split()
        if "FLOCK" in fields and "->" not in fields and wanted in fields:
            return True
    return False
