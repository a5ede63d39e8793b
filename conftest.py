"""Root of the test suite; the test environment itself is set in tests/settings.py."""

import os
import shutil


def pytest_sessionfinish(session, exitstatus) -> None:
    # A data dir made for this run (not one named by BERTH_TEST_DATA_DIR to
    # keep for a look afterwards) goes with the run.
    # Under pytest-xdist only the controller removes it, once every worker is done.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if os.environ.get("BERTH_TEST_DATA_DIR_CREATED") == "1":
        shutil.rmtree(os.environ["BERTH_TEST_DATA_DIR"], ignore_errors=True)
