"""Named points in the restore engine and the recovery sweep where a test can kill the process.

`reached("restore.committed")` does nothing in a real installation. Only when
the setting BERTH_TEST_CRASH_POINTS is True — and only tests/settings.py sets
it; berth/settings.py neither defines it nor reads it from the environment, so
no environment variable, file or database row of an installation can switch
it on — does it read two environment variables:

- BERTH_CRASH_POINT=<name>: the process ends at once with os._exit(CRASH_EXIT)
  (no cleanup, no `finally`, no atexit: as close to a power cut as a test gets);
- BERTH_PAUSE_POINT=<name> with BERTH_PAUSE_FILE=<path>: the process creates
  `<path>.reached` and waits until `<path>` exists, so a test can look at (or
  race against) the engine stopped at that point.

tests/snapshots/test_crashpoints.py proves that berth.settings cannot enable them.
"""

from __future__ import annotations

import os
import time

from django.conf import settings

CRASH_EXIT = 86
PAUSE_SECONDS = 120


def enabled() -> bool:
    return getattr(settings, "BERTH_TEST_CRASH_POINTS", False) is True


def reached(name: str) -> None:
    if not enabled():
        return
    if os.environ.get("BERTH_CRASH_POINT") == name:
        os._exit(CRASH_EXIT)
    if os.environ.get("BERTH_PAUSE_POINT") == name:
        _pause(os.environ["BERTH_PAUSE_FILE"])


def _pause(release: str) -> None:
    with open(release + ".reached", "w"):
        pass
    deadline = time.monotonic() + PAUSE_SECONDS
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.02)
