"""The per-workload lock, across real processes (PostgreSQL advisory lock or flock)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.test import override_settings

from engine import deploys
from lib import locks
from tests.conftest import REPO_ROOT, child_env
from workloads.models import DeployRecord

HOLD_SECONDS = 1.0

# A child process: wait for the go file, take the lock, hold it, report when.
CHILD = """
import json, os, sys, time
import django
django.setup()
from lib.locks import workload_lock
workload_id, go, hold = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.01)
with workload_lock(workload_id, timeout=60):
    acquired = time.time()
    print("locked", flush=True)
    time.sleep(hold)
    released = time.time()
print(json.dumps([acquired, released]), flush=True)
"""


def spawn(workload_id: int, go: Path, hold: float = HOLD_SECONDS) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(workload_id), str(go), str(hold)],
        cwd=REPO_ROOT, env=child_env() | {"DJANGO_SETTINGS_MODULE": "berth.settings"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def started(children: list[subprocess.Popen], go: Path) -> None:
    """Let the children race for their locks once every one is set up (a busy machine can
    take longer to start a child than a lock is held)."""
    for child in children:
        assert child.stdout.readline().strip() == "ready"
    go.touch()


def holder_locked(child: subprocess.Popen) -> bool:
    """Whether the child says it took its lock (after saying it is ready)."""
    return [child.stdout.readline().strip() for _ in range(2)] == ["ready", "locked"]


def intervals(children: list[subprocess.Popen]) -> list[tuple[float, float]]:
    result = []
    for child in children:
        out, err = child.communicate(timeout=90)
        assert child.returncode == 0, err
        result.append(tuple(json.loads(out.strip().splitlines()[-1])))
    return sorted(result)


@pytest.mark.django_db(transaction=True)
def test_it_serializes_two_processes_on_one_workload(tmp_path):
    go = tmp_path / "go"
    children = [spawn(7001, go), spawn(7001, go)]
    started(children, go)
    (a_start, a_end), (b_start, b_end) = intervals(children)
    assert b_start >= a_end, "the second process got the lock while the first held it"


@pytest.mark.django_db(transaction=True)
def test_it_does_not_serialize_different_workloads(tmp_path):
    go = tmp_path / "go"
    children = [spawn(7002, go), spawn(7003, go)]
    started(children, go)
    (a_start, a_end), (b_start, b_end) = intervals(children)
    assert b_start < a_end, "different workloads waited for each other"


@pytest.mark.django_db(transaction=True)
def test_it_times_out_and_try_variant_fails_at_once(tmp_path):
    go = tmp_path / "go"
    go.touch()
    holder = spawn(7004, go, hold=5.0)
    assert holder_locked(holder)
    try:
        started = time.monotonic()
        with pytest.raises(locks.LockTimeout), locks.try_workload_lock(7004):
            pass
        with pytest.raises(locks.LockTimeout), locks.workload_lock(7004, timeout=0.3):
            pass
        assert time.monotonic() - started < 4, "the try variant or the timeout blocked"
    finally:
        holder.kill()
        holder.wait()
    # Once the holder is gone (killed: its lock dies with it), the lock is free.
    with locks.workload_lock(7004, timeout=10):
        assert locks.is_held(7004)
    assert not locks.is_held(7004)


@pytest.mark.django_db(transaction=True)
def test_it_refuses_to_reenter_and_tracks_what_is_held():
    with locks.workload_lock(7005):
        locks.assert_held(7005)
        with pytest.raises(RuntimeError), locks.workload_lock(7005):
            pass
    with pytest.raises(locks.LockNotHeld):
        locks.assert_held(7005)


@pytest.mark.django_db(transaction=True)
def test_dispatch_waits_for_the_lock_held_by_another_process(tmp_path, make_workload):
    """dispatch() takes the same lock: while another process holds it, a deploy times out."""
    workload = make_workload()
    go = tmp_path / "go"
    go.touch()
    holder = spawn(workload.pk, go, hold=5.0)
    assert holder_locked(holder)
    try:
        with override_settings(BERTH_DEPLOY_LOCK_TIMEOUT=1):
            record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    finally:
        holder.kill()
        holder.wait()
    assert record.outcome == DeployRecord.Outcome.FAILED
    assert record.failure_code == DeployRecord.Failure.LOCK_TIMEOUT
    assert not workload.containers.exists()


@pytest.mark.django_db(transaction=True)
def test_still_held_asks_where_the_lock_lives():
    from django.db import connection

    assert not locks.still_held(7006)
    with locks.workload_lock(7006):
        assert locks.still_held(7006)
        if connection.vendor == "postgresql":
            advisory = locks._held_locks()[7006].advisory
            assert advisory_holders(7006) == [advisory.session.info.backend_pid]
            # The lock's session ended (as when the connection drops): still_held
            # takes the lock back on a new session.
            advisory.session.close()
            assert locks.still_held(7006)
            assert advisory_holders(7006) == [advisory.session.info.backend_pid]
            # Another session took it meanwhile (no Berth process can: it needs the
            # file lock first): still_held says so.
            advisory.session.close()
            with other_session() as other:
                other.execute("SELECT pg_advisory_lock(%s, %s)", [locks._PG_NAMESPACE, 7006])
                assert not locks.still_held(7006)
            assert locks.still_held(7006)  # the other session ended: taken back
    assert not locks.still_held(7006)
    if connection.vendor == "postgresql":
        assert advisory_holders(7006) == []  # released with its session


@pytest.mark.django_db(transaction=True)
def test_a_failed_transaction_around_the_lock_does_not_keep_it():
    """The advisory lock lives on its own session: a transaction that failed inside the
    `with` block cannot stop its release."""
    from django.db import DatabaseError, connection, transaction

    if connection.vendor != "postgresql":
        pytest.skip("the advisory lock exists on PostgreSQL only")
    with pytest.raises(DatabaseError), transaction.atomic(), locks.workload_lock(7008), \
            connection.cursor() as cursor:
        cursor.execute("SELECT 1/0")
    assert advisory_holders(7008) == []
    with locks.try_workload_lock(7008):
        assert locks.still_held(7008)


@pytest.mark.django_db(transaction=True)
def test_djangos_own_database_options_do_not_reach_the_lock_session(monkeypatch):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the advisory lock exists on PostgreSQL only")
    options = {**connection.settings_dict.get("OPTIONS", {}), "isolation_level": 1,
               "server_side_binding": True, "application_name": "berth-web"}
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", options)
    with locks.workload_lock(7010):
        session = locks._held_locks()[7010].advisory.session
        assert session.info.parameter_status("application_name") == "berth-web"
        assert locks.still_held(7010)


@pytest.mark.django_db(transaction=True)
def test_a_lock_directory_that_cannot_be_used_is_a_clear_lock_error(settings, tmp_path):
    blocked = tmp_path / "data"
    blocked.mkdir()
    (blocked / "locks").write_text("not a directory")
    settings.DATA_DIR = blocked
    with pytest.raises(locks.LockUnavailable, match="cannot be used"), \
            locks.workload_lock(7009, timeout=1):
        pass
    assert not locks.is_held(7009)


def advisory_holders(workload_id: int) -> list[int]:
    with other_session() as other:
        return [row[0] for row in other.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
            "AND objid = %s AND granted", [locks._PG_NAMESPACE, workload_id]).fetchall()]


@pytest.mark.django_db(transaction=True)
def test_a_lost_advisory_lock_does_not_let_another_process_in(tmp_path):
    """The file lock is held as long as the process lives: a child waits for it even while
    the holder's database session (and its advisory lock) is gone."""
    from django.db import connection

    go = tmp_path / "go"
    go.touch()
    with locks.workload_lock(7007):
        if connection.vendor == "postgresql":
            locks._held_locks()[7007].advisory.session.close()  # the advisory lock is gone
        child = spawn(7007, go, hold=0.1)
        time.sleep(1.5)
        assert child.poll() is None, "another process got the lock"
        released = time.time()
    [(acquired, _end)] = intervals([child])
    assert acquired >= released


@contextmanager
def other_session():
    """A second PostgreSQL session, outside Django's connection handling."""
    import psycopg
    from django.db import connection

    db = connection.settings_dict
    with psycopg.connect(dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"],
                         host=db["HOST"] or None, port=db["PORT"] or None,
                         autocommit=True) as conn:
        yield conn
