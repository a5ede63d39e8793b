"""Set up the environment before Django reads its settings.

Tests run tasks synchronously (django-q2 reads Q_CLUSTER at import) and keep
everything they write in a data dir of their own, whose instance id starts
with "test-" so leftovers of a killed run can be told from real containers.
"""

import os
import secrets
import tempfile
from pathlib import Path

os.environ["BERTH_TASKS_SYNC"] = "1"
os.environ.setdefault("BERTH_DEPLOY_LOCK_TIMEOUT", "60")
if "BERTH_TEST_DATA_DIR" not in os.environ:
    os.environ["BERTH_TEST_DATA_DIR"] = tempfile.mkdtemp(prefix="berth-test-")
_data_dir = Path(os.environ["BERTH_TEST_DATA_DIR"])
os.environ["BERTH_DATA_DIR"] = str(_data_dir)
_instance = _data_dir / "instance_id"
if not _instance.exists():
    _instance.write_text(f"test-{secrets.token_hex(4)}")
