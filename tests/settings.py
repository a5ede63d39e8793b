"""The test suite's settings: Berth's one settings module, read with a test environment.

pytest-django imports settings before any conftest runs, so the environment
is set here, up front: tasks run synchronously (django-q2 reads Q_CLUSTER at
import) and everything is written to a data dir of this run's own, whose
instance id starts with "test-" so leftovers of a killed run can be told from
a real installation's containers.
"""

import os
import secrets
import tempfile
from pathlib import Path

os.environ["BERTH_TASKS_SYNC"] = "1"
# pytest's tmp_path lives under /tmp: tests may bind absolute volumes there.
os.environ.setdefault("BERTH_ABSOLUTE_VOLUME_ROOTS", tempfile.gettempdir())
os.environ.setdefault("BERTH_DEPLOY_LOCK_TIMEOUT", "60")
# Shorter than in production: every deploy waits it out (the tests of an exit at
# start set a longer one).
os.environ.setdefault("BERTH_DEPLOY_SETTLE_SECONDS", "0.3")
# scrypt at the production 2**18 takes seconds a seal on a busy machine; the format is the same.
os.environ.setdefault("BERTH_PASSPHRASE_WORK_FACTOR", "10")
# The git tests' file:// repositories live under pytest's tmp_path, in /tmp too.
os.environ.setdefault("BERTH_GIT_FILE_ROOTS", tempfile.gettempdir())
if "BERTH_TEST_DATA_DIR" not in os.environ:
    os.environ["BERTH_TEST_DATA_DIR"] = tempfile.mkdtemp(prefix="berth-test-")
    os.environ["BERTH_TEST_DATA_DIR_CREATED"] = "1"
_data_dir = Path(os.environ["BERTH_TEST_DATA_DIR"])
# Under pytest-xdist each worker is a Berth instance of its own: its own data
# dir, locks, journals and instance id (so it finds and removes only its own
# containers) and its own moving registry tag. pytest-django gives each worker
# its own test database.
_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker:
    _data_dir = _data_dir / _worker
    _data_dir.mkdir(exist_ok=True)
os.environ["BERTH_DATA_DIR"] = str(_data_dir)
_instance = _data_dir / "instance_id"
if not _instance.exists():
    _instance.write_text(f"test-{secrets.token_hex(4)}")
# The registry tag this run (or worker) moves between v1 and v2 (tests/fixtures/images.py).
if _worker or "BERTH_TEST_CURRENT_TAG" not in os.environ:
    os.environ["BERTH_TEST_CURRENT_TAG"] = _instance.read_text().strip()

from berth.settings import *  # noqa: E402, F403

# The test suite has no collectstatic manifest: the plain storage, whose
# unhashed URLs pytest-django's live_server serves through the finders.
STORAGES["staticfiles"] = {  # noqa: F405
    "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
}
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405 - whitenoise warns without it

# Crash and pause points in the restore engine (lib/crashpoints.py): only
# this test settings module turns them on; berth/settings.py has no such switch.
BERTH_TEST_CRASH_POINTS = True
