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
from workloads.models import Workload

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
def admin(db) -> User:
    return User.objects.create_superuser("schema-admin", password="correct horse battery")


@pytest.fixture
def schema(api_as, viewer) -> dict:
    return api_as(viewer).get("/api/schema?format=json").json()


def test_it_documents_the_errors_an_operation_answers(schema):
    detail = schema["paths"]["/api/workloads/{id}"]
    assert set(detail["get"]["responses"]) == {"200", "401", "403", "404"}
    assert set(detail["delete"]["responses"]) >= {"204", "401", "403", "404", "409", "428",
                                                  "503"}
    error = detail["delete"]["responses"]["428"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/Error"}
    listing = schema["paths"]["/api/workloads"]["get"]
    assert set(listing["responses"]) == {"200", "401", "403", "404"}  # 404: no such page
    page = next(p for p in listing["parameters"] if p["name"] == "page")
    assert page["schema"] == {"type": "integer", "minimum": 1}
    assert "400" in schema["paths"]["/api/workloads"]["post"]["responses"]


def test_it_marks_what_may_be_null_and_what_is_only_read_or_written(schema):
    components = schema["components"]["schemas"]
    for name, field in [("Workload", "repository_web_url"), ("Workload", "running_commit_url"),
                        ("Deploy", "commit_url"), ("Deploy", "user")]:
        assert components[name]["properties"][field].get("nullable") is True, (name, field)
    assert components["EnvVar"]["properties"]["value"].get("nullable") is True
    assert "git_password" not in components["Workload"]["properties"]
    assert "repository_web_url" not in components["WorkloadRequest"]["properties"]


@pytest.mark.parametrize("page", ["", "0", "-1", "abc", "last", "1.0", "²"])
def test_a_page_that_is_not_a_page_number_is_not_found(api_as, viewer, workload, page):
    response = api_as(viewer).get(f"/api/workloads?page={page}")

    assert response.status_code == 404
    assert response.json() == {"detail": "Invalid page."}


@pytest.mark.parametrize("size", ["0", "101", "abc", ""])
def test_a_page_size_out_of_bounds_is_refused(api_as, viewer, workload, size):
    response = api_as(viewer).get(f"/api/workloads/{workload.pk}/deploys?page_size={size}")

    assert response.status_code == 400
    assert "page_size" in response.json()


def test_a_page_size_within_bounds_is_taken(api_as, viewer, workload):
    response = api_as(viewer).get(f"/api/workloads/{workload.pk}/deploys?page_size=100")

    assert response.status_code == 200


@pytest.mark.parametrize(("field", "value"), [
    ("name", 0), ("slug", 1), ("replicas", "2"), ("replicas", True), ("stage", "1"),
    ("snapshot_consistency", 0),
])
def test_a_value_of_the_wrong_json_type_is_refused_not_coerced(api_as, operator, workload,
                                                               field, value):
    before = Workload.objects.values().get(pk=workload.pk)

    response = api_as(operator).patch(f"/api/workloads/{workload.pk}", {field: value},
                                      format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert Workload.objects.values().get(pk=workload.pk) == before


@pytest.mark.parametrize("query", ["workload=%C2%B2", "workload=-1", "workload=x",
                                   "workload=99999999999999999999"])
def test_a_filter_that_is_not_an_id_is_refused(api_as, admin, query):
    assert api_as(admin).get(f"/api/copy-rules?{query}").status_code == 400


def test_a_drill_of_a_body_that_is_not_an_object_is_refused(api_as, admin):
    response = api_as(admin).post("/api/drills", [None, None], format="json")

    assert response.status_code == 400


@pytest.mark.parametrize("path", ["/api/deploys/0.5", "/api/workloads/", "/api/nothing%0A"])
def test_a_path_under_the_api_that_names_no_endpoint_is_a_json_404(api, api_as, viewer, path):
    assert api.get(path).status_code == 401
    response = api_as(viewer).get(path)

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


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
