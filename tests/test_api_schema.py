"""The API answers as its OpenAPI schema says: Schemathesis against a live server.

`test_it_answers_as_its_schema_says` loads /api/schema over HTTP from
pytest-django's live server and runs Schemathesis' command line over every
operation with its default checks (all of them: server errors, status codes,
content types, headers, response bodies, schema-valid bodies accepted and
invalid ones refused, missing headers, unsupported methods, use after free,
resources available after creation, ignored authentication), in all its
phases (examples, coverage, fuzzing, stateful). `tests/schemathesis.toml` holds
its settings and the few places where a schema cannot say what the API
checks, each with why. Any failure fails the test, with Schemathesis' report.

Nothing it does can reach the host or the network:

- the tasks a request queues (deploys, captures, restores, copies, drills,
  recoveries) stay in django-q2's queue: no worker runs in this test, so no
  container starts and no volume is read or written (the tasks' own tests run
  them);
- DOCKER_HOST names a socket that does not exist, so the few requests that ask
  the engine directly (a workload's image size) get its refusal at once;
- absolute volumes are allowed nowhere, and backup directories only under this
  test's own tmp_path.

The run takes a few minutes on two cores (`BERTH_SCHEMATHESIS_EXAMPLES` sets the
examples per operation, 10 by default; `BERTH_SCHEMATHESIS_SEED` the seed, fixed
so that a run is repeatable).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.fixtures import images

CONFIG = Path(__file__).resolve().parent / "schemathesis.toml"
EXAMPLES = int(os.environ.get("BERTH_SCHEMATHESIS_EXAMPLES", "10"))
SEED = int(os.environ.get("BERTH_SCHEMATHESIS_SEED", "1"))
# Generous: the run's own length is the examples' business, this only stops a hung one.
RUN_TIMEOUT = 1800


@pytest.mark.parametrize("path", ["/api/schema", "/api/docs", "/api/docs?script"])
def test_it_serves_the_schema_only_to_those_who_may_read_workloads(api, api_as, outsider, path):
    assert api.get(path).status_code == 401
    assert api_as(outsider).get(path).status_code == 403

    outsider.user_permissions.add(Permission.objects.get(codename="view_workload"))
    reader = User.objects.get(pk=outsider.pk)  # a fresh user: permissions are cached
    assert api_as(reader).get(path).status_code == 200


@pytest.fixture
def admin_token(transactional_db) -> str:
    admin = User.objects.create_superuser("schema-admin", password="correct horse battery")
    return Token.objects.create(user=admin).key


def _seed(token: str, directory: Path) -> None:
    """Rows for the operations to find: a workload with its lists, a queued deploy and
    snapshot, a directory backup target, a copy rule and a backup policy."""
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    def post(path: str, body: dict | None = None, expect: int = 201) -> dict:
        response = api.post(path, body or {}, format="json")
        assert response.status_code == expect, response.content
        return response.json()

    project = post("/api/projects", {"name": "Shop", "slug": "shop"})
    stage = post("/api/stages", {"project": project["id"], "name": "Prod", "slug": "prod"})
    workload = post("/api/workloads", {
        "stage": stage["id"], "name": "Web", "slug": "web", "image": images.HTTPD_CURRENT,
        "volumes": [{"scope": "stage", "source": "web-data", "target": "/data"}],
        "env": [{"name": "PLAIN", "value": "1", "is_secret": False},
                {"name": "SECRET", "value": "s3cret", "is_secret": True}],
        "ports": [{"host_port": 18080, "container_port": 80}],
    })
    post(f"/api/workloads/{workload['id']}/deploy", expect=202)
    post(f"/api/workloads/{workload['id']}/snapshots", expect=202)
    target = post("/api/backup-targets", {
        "name": "NAS", "kind": "directory", "directory": str(directory), "unencrypted": True})
    post("/api/copy-rules", {"project": project["id"], "target": target["id"],
                             "kinds": ["manual"]})
    post("/api/backup-policies", {"workload": workload["id"], "every": "daily",
                                  "at": "03:00", "time_zone": "UTC"})


@pytest.mark.slow
def test_it_answers_as_its_schema_says(live_server, admin_token, settings, monkeypatch,
                                       tmp_path):
    from django_q.conf import Conf

    # The module docstring says why: queued work stays queued, the engine is not there.
    monkeypatch.setattr(Conf, "SYNC", False)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    settings.BERTH_ABSOLUTE_VOLUME_ROOTS = []
    backups = tmp_path / "backups"
    (backups / "nas").mkdir(parents=True)
    settings.BERTH_BACKUP_DIRECTORY_ROOTS = [str(backups)]
    _seed(admin_token, backups / "nas")

    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color",
         "run",
         f"{live_server.url}/api/schema?format=json",
         "--header", f"Authorization: Token {admin_token}",
         "--max-examples", str(EXAMPLES), "--seed", str(SEED), "--workers", "1"],
        capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=tmp_path,
    )

    report = run.stdout[-20_000:] + run.stderr[-5_000:]
    assert run.returncode == 0, f"Schemathesis found mismatches:\n{report}"
    assert "Tested: " in run.stdout, report  # it ran the operations, not only loaded
