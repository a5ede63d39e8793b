"""Helpers for the tests that kill Berth's workers: a child process that runs one call."""

from __future__ import annotations

import os
import time
from pathlib import Path

from snapshots import storage
from tests.fixtures import forking
from workloads import container_journal

# The child imports Django from scratch, then runs the code it is given.
CHILD = """
import sys
import django
django.setup()
from engine import captures, deploys, restores, tasks
from snapshots.models import RestoreJob, Snapshot
from workloads.models import DeployRecord, Workload
exec(sys.argv[1])
"""


def spawn(code: str, **env: str) -> forking.Child:
    """Run `code` in a child process forked from this test (its database and data dir)."""
    return forking.run_code(CHILD, code, **env)


def wait_for(path: Path, child: forking.Child, timeout: float = 60) -> None:
    """Until `path` exists (a pause point reached), failing if the child ends first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def temporary_files() -> list[str]:
    """Temporary archives, uploads and scratch trees anywhere under the snapshots root."""
    found = []
    for directory, dirnames, filenames in os.walk(storage.root()):
        found += [os.path.join(directory, n) for n in dirnames + filenames
                  if n.startswith(storage.TEMP_PREFIXES)]
    return sorted(found)


def container_journals() -> list[str]:
    folder = container_journal.directory()
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def swept():
    """One sweep, as the next minute's would run it, and its report (checked clean).

    A killed child's PostgreSQL session (and so its advisory lock) ends a moment
    after the process: until it has, the sweep finds the workload busy and
    leaves it for the next sweep, which the retry here stands for.
    """
    from engine import sweep

    deadline = time.monotonic() + 10
    while True:
        report = sweep.recover_all()
        if not report.busy or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not report.problems and not report.busy, report
    return report
