"""Set up the environment before Django reads its settings.

Tests run tasks synchronously (django-q2 reads Q_CLUSTER at import) and keep
everything they write in a data dir of their own, whose instance id starts
with "test-" so leftovers of a killed run can be told from real containers.
"""

import os
import secrets
import shutil
import tempfile
from pathlib import Path

os.environ["BERTH_TASKS_SYNC"] = "1"
os.environ.setdefault("BERTH_DEPLOY_LOCK_TIMEOUT", "60")
_created = "BERTH_TEST_DATA_DIR" not in os.environ
if _created:
    os.environ["BERTH_TEST_DATA_DIR"] = tempfile.mkdtemp(prefix="berth-test-")
_data_dir = Path(os.environ["BERTH_TEST_DATA_DIR"])
os.environ["BERTH_DATA_DIR"] = str(_data_dir)
_instance = _data_dir / "instance_id"
if not _instance.exists():
    _instance.write_text(f"test-{secrets.token_hex(4)}")


def pytest_sessionfinish(session, exitstatus) -> None:
    # The data dir was made for this run (unless BERTH_TEST_DATA_DIR named one to
    # keep for a look afterwards): remove it with the run.
    if _created:
        shutil.rmtree(_data_dir, ignore_errors=True)
