"""Disaster recovery end to end: instance A copies, a fresh instance B recovers.

A is this test's own Berth instance. B is a second, separate Berth: its
own data dir, its own empty database (a new PostgreSQL database when the
suite runs on PostgreSQL, else a new SQLite file) and its own instance id,
driven only through `manage.py` in child processes, the way
docs/disaster-recovery.md tells an operator to. Real parts throughout:
Docker, the registry, moto's S3 server over HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.db import connection

from engine import captures, deploys
from snapshots.models import Snapshot
from tests.backups.conftest import S3_ENDPOINT, S3_KEY_ID, S3_SECRET, copied, s3_target
from tests.conftest import REPO_ROOT, container_image_digest, remove_test_containers
from tests.snapshots.conftest import add_volume, fill
from tests.snapshots.trees import describe
from workloads.models import DeployRecord

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]

DATA = {"index.html": b"<h1>served from A</h1>", "db/rows.bin": os.urandom(3 << 20)}


class Instance:
    """A second Berth instance, run through manage.py in child processes."""

    def __init__(self, data_dir: Path, database_url: str) -> None:
        self.data_dir = data_dir
        data_dir.mkdir()
        # A test instance id: a killed run's leftovers are then told apart from a real
        # installation's, and removed by instance label afterwards.
        self.instance_id = f"test-{uuid.uuid4().hex[:8]}"
        (data_dir / "instance_id").write_text(self.instance_id)
        skip = {"PYTEST_XDIST_WORKER", "PYTEST_XDIST_TESTRUNUID", "PYTEST_CURRENT_TEST",
                "BERTH_TEST_DATA_DIR", "BERTH_TEST_DATA_DIR_CREATED"}
        self.env = {k: v for k, v in os.environ.items() if k not in skip} | {
            "DJANGO_SETTINGS_MODULE": "berth.settings", "BERTH_DATA_DIR": str(data_dir),
            "DATABASE_URL": database_url, "BERTH_TASKS_SYNC": "1",
        }
        self.env.pop("BERTH_ENCRYPTION_KEY", None)  # B has a key of its own

    def manage(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run([sys.executable, str(REPO_ROOT / "manage.py"), *args],
                              env=self.env, cwd=REPO_ROOT, input=stdin, capture_output=True,
                              text=True, timeout=600, check=False)
        assert done.returncode == 0, f"manage.py {args[0]}: {done.stdout}\n{done.stderr}"
        return done.stdout

    def query(self, code: str) -> object:
        """Run `code` (which sets `result`) in B's Django shell; the JSON of `result`."""
        out = self.manage("shell", "-c",
                          f"import json\n{code}\nprint('@@' + json.dumps(result))")
        return json.loads(out.rsplit("@@", 1)[1])

    def remove_containers(self) -> None:
        ids = subprocess.run(["docker", "ps", "-aq", "--filter",
                              f"label=berth.instance={self.instance_id}"],
                             capture_output=True, text=True, check=False).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)


@pytest.fixture
def instance_b(tmp_path):
    """A fresh Berth: new data dir, new empty database, migrated."""
    if connection.vendor == "postgresql":
        import psycopg

        name = f"berth_b_{uuid.uuid4().hex[:10]}"
        db = connection.settings_dict
        login = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        server = f"postgres://{login}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}"
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        url = f"{server}/{name}"
    else:
        name, server, url = "", "", f"sqlite:///{tmp_path / 'b.sqlite3'}"
    b = Instance(tmp_path / "b", url)
    try:
        b.manage("migrate", "--noinput")
        yield b
    finally:
        b.remove_containers()
        if name:
            import psycopg

            with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_fresh_instance_recovers_a_workload_with_its_data_and_digest(
    docker, current_tag, make_workload, bucket, identity, recipient, instance_b, tmp_path
):
    # A: a running workload with data, a snapshot of it, copied offsite.
    web = make_workload(pre_backup_hook="sync", backup_hook_timeout=30)
    web.env_vars.create(name="GREETING", value="hello")
    secret = web.env_vars.model(workload=web, name="API_TOKEN")
    secret.set_value("s3cr3t-token-value", secret=True)
    secret.save()
    volume = add_volume(web, "data", "/data")
    fill(volume, DATA)
    deployed = deploys.dispatch(workload=web, reason=DeployRecord.Reason.MANUAL)
    assert deployed.outcome == DeployRecord.Outcome.SUCCEEDED, deployed.failure_code
    web.refresh_from_db()
    snapshot = captures.capture_snapshot(workload=web)
    assert snapshot.state == Snapshot.State.READY, snapshot.reason
    copy = copied(snapshot, s3_target(bucket, recipient))
    assert copy.state == copy.State.VERIFIED, copy.failure_code
    tree_on_a = describe(volume)
    remove_test_containers()  # A's host is lost (and B's containers take the same names)

    # B: the operator adds the same target (as the admin's form would) ...
    b = instance_b
    b.query(
        "from backups.models import BackupTarget\n"
        f"t = BackupTarget(name='offsite', kind='s3', endpoint_url={S3_ENDPOINT!r},"
        f" region='us-east-1', bucket={bucket!r}, prefix='berth',"
        f" access_key_id={S3_KEY_ID!r}, recipients={recipient!r})\n"
        f"t.set_secret_access_key({S3_SECRET!r})\n"
        "t.full_clean(); t.save(); result = t.pk\n"
    )
    key_file = tmp_path / "identity.txt"
    key_file.write_text(f"{identity}\n")
    key_file.chmod(0o600)

    # ... lists the catalogue with the identity ...
    listing = b.manage("backup_catalogue", "offsite", "--identity-file", str(key_file))
    path = f"{web.stage.project.slug}/{web.stage.slug}/{web.slug}"
    assert path in listing and copy.remote_key in listing, listing
    assert "manual" in listing

    # ... and recovers the workload from it, the identity on standard input.
    out = b.manage("recover_from_backup", "offsite", copy.remote_key, "--identity-file", "-",
                   "--deploy", stdin=f"{identity}\n")
    assert "Restored" in out and "Deployed" in out, out

    state = b.query(
        "from workloads.models import Workload, Container\n"
        f"w = Workload.objects.get(slug={web.slug!r}, stage__slug={web.stage.slug!r},"
        f" stage__project__slug={web.stage.project.slug!r})\n"
        "v = w.volumes.get()\n"
        "result = {'reference': w.running_reference, 'state': w.state,"
        " 'path': v.host_path(),"
        " 'env': {e.name: e.get_value() for e in w.env_vars.all()},"
        " 'hooks': [w.pre_backup_hook, w.backup_hook_timeout],"
        " 'containers': [c.docker_id for c in Container.objects.filter(workload=w)]}\n"
    )
    assert state["state"] == "running"
    assert state["reference"] == web.running_reference  # the same digest, not a newer tag
    assert state["env"] == {"GREETING": "hello", "API_TOKEN": "s3cr3t-token-value"}
    assert state["hooks"] == ["sync", 30]
    assert Path(state["path"]).is_relative_to(b.data_dir)
    assert describe(state["path"]) == tree_on_a
    [container] = state["containers"]
    assert container_image_digest(container) == web.running_reference


def test_recovery_without_the_identity_is_refused_and_changes_nothing(
    make_workload, bucket, recipient, instance_b, tmp_path
):
    web = make_workload()
    fill(add_volume(web, "data", "/data"), {"a.txt": b"a"})
    snapshot = captures.capture_snapshot(workload=web)
    copy = copied(snapshot, s3_target(bucket, recipient))
    b = instance_b
    b.query(
        "from backups.models import BackupTarget\n"
        f"t = BackupTarget(name='offsite', kind='s3', endpoint_url={S3_ENDPOINT!r},"
        f" region='us-east-1', bucket={bucket!r}, prefix='berth',"
        f" access_key_id={S3_KEY_ID!r}, recipients={recipient!r})\n"
        f"t.set_secret_access_key({S3_SECRET!r})\n"
        "t.full_clean(); t.save(); result = t.pk\n"
    )
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "manage.py"), "recover_from_backup", "offsite",
         copy.remote_key], env=b.env, cwd=REPO_ROOT, capture_output=True, text=True,
        check=False)
    assert done.returncode != 0
    assert "no_identity" in done.stderr
    assert b.query("from workloads.models import Workload, Project\n"
                   "result = [Workload.objects.count(), Project.objects.count()]\n") == [0, 0]
