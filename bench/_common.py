"""What every benchmark shares: a stand-alone Berth, the docker CLI, and test data.

Not a benchmark itself (`make bench` runs bench/*.py except files starting
with an underscore). Each bench runs Berth in a temporary data directory with
its own instance id, so its containers and files are easy to tell apart from
a real installation's and are removed at the end.
"""

from __future__ import annotations

import os
import random
import secrets
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20


class BenchError(Exception):
    """The bench cannot run here (a missing service, a failed step); the message says why."""


def prepare_environment(data_dir: Path, *, database_url: str = "", sync: bool = True) -> str:
    """Point Berth at a fresh data dir and database (SQLite in `data_dir` by default).

    Must run before Django is imported: settings and django-q2's Q_CLUSTER are
    read once, at import. Returns the instance id (`bench-<hex>`).
    """
    instance = f"bench-{secrets.token_hex(4)}"
    # Written before settings load, so leftovers of a killed run are easy to tell apart.
    (data_dir / "instance_id").write_text(instance)
    (data_dir / "static").mkdir()  # STATIC_ROOT; whitenoise warns when it is missing
    os.environ["BERTH_DATA_DIR"] = str(data_dir)
    os.environ["DATABASE_URL"] = database_url or f"sqlite://{data_dir / 'berth.sqlite3'}"
    os.environ.pop("BERTH_REDIS_URL", None)  # the ORM broker, the embedded default
    os.environ["BERTH_TASKS_SYNC"] = "1" if sync else "0"
    os.environ["DJANGO_SETTINGS_MODULE"] = "berth.settings"
    os.environ.setdefault("BERTH_LOG_LEVEL", "WARNING")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return instance


def setup_django() -> None:
    """django.setup() and the migrations, once the environment is prepared."""
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def docker(*args: str, check: bool = True) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise BenchError(f"docker {' '.join(args[:3])}… failed: {result.stderr.strip()}")
    return result.stdout.strip()


def remove_labelled(label: str) -> int:
    """Remove every container carrying `label`; returns how many there were."""
    ids = docker("ps", "-aq", "--filter", f"label={label}", check=False).split()
    if ids:
        docker("rm", "-f", *ids, check=False)
    return len(ids)


def half_compressible(rnd: random.Random, size: int) -> bytes:
    """Half random bytes, half repetitive text: zstd -3 makes it about half the size."""
    out = bytearray()
    while len(out) < size:
        out += rnd.randbytes(2048) + (b"berth bench line %06d\n" % rnd.randrange(10**6)) * 80
    return bytes(out[:size])
