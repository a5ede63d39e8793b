"""The workloads API: CRUD with nested children, permissions, bad input, secrets, schema."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.fixtures import images
from workloads.models import (
    Container,
    DeployRecord,
    EnvVar,
    EventLog,
    PortMapping,
    Project,
    Stage,
    VolumeMount,
    Workload,
)

SECRET = "hunter2-the-api-must-never-echo-this"


@pytest.fixture
def stage(db) -> Stage:
    project = Project.objects.create(name="Shop", slug=f"p{uuid.uuid4().hex[:8]}")
    return Stage.objects.create(project=project, name="Prod", slug="prod")


def payload(stage: Stage, **overrides) -> dict:
    body = {
        "stage": stage.pk,
        "name": "Web",
        "slug": "web",
        "source_kind": "image",
        "image": images.HTTPD_CURRENT,
        "replicas": 1,
        "volumes": [{"scope": "stage", "source": "site", "target": "/data"}],
        "env": [{"name": "GREETING", "value": "hello"}],
        "ports": [{"host_port": 18080, "container_port": 80}],
    }
    return body | overrides


def row_counts() -> tuple[int, int, int, int, int]:
    return (
        Workload.objects.count(),
        VolumeMount.objects.count(),
        EnvVar.objects.count(),
        PortMapping.objects.count(),
        DeployRecord.objects.count(),
    )


def create(client: APIClient, body: dict) -> dict:
    response = client.post("/api/workloads", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


# --- create, read, update, delete ------------------------------------------

def test_it_creates_a_workload_with_nested_children(api_as, operator, stage):
    response = api_as(operator).post("/api/workloads", payload(stage), format="json")

    assert response.status_code == 201, response.json()
    workload = Workload.objects.get(stage=stage, slug="web")
    assert response["Location"] == f"/api/workloads/{workload.pk}"
    data = response.json()
    assert data["id"] == workload.pk
    assert data["url"] == f"/api/workloads/{workload.pk}"
    assert data["project_slug"] == stage.project.slug
    assert data["stage_slug"] == "prod"
    assert data["state"] == "new"
    assert data["volumes"][0]["host_path"].endswith(f"/volumes/{stage.project.slug}/prod/site")
    assert data["env"] == [
        {"id": workload.env_vars.get().pk, "name": "GREETING", "value": "hello", "is_secret": False}
    ]
    volume = workload.volumes.get()
    assert (volume.scope, volume.source, volume.target, volume.read_only) == (
        "stage", "site", "/data", False,
    )
    port = workload.ports.get()
    assert (port.host_ip, port.host_port, port.container_port, port.protocol) == (
        "127.0.0.1", 18080, 80, "tcp",
    )
    assert workload.env_vars.get().get_value() == "hello"


def test_it_lists_workloads(api_as, viewer, make_workload):
    first = make_workload()
    second = make_workload()

    response = api_as(viewer).get("/api/workloads")

    assert response.status_code == 200
    data = response.json()
    assert data["count"] == 2
    assert {w["id"] for w in data["results"]} == {first.pk, second.pk}


def test_it_shows_one_workload(api_as, viewer, workload):
    VolumeMount.objects.create(workload=workload, scope="project", source="shared", target="/s")

    response = api_as(viewer).get(f"/api/workloads/{workload.pk}")

    assert response.status_code == 200
    data = response.json()
    assert data["slug"] == "web"
    assert data["image"] == images.HTTPD_CURRENT
    assert [v["target"] for v in data["volumes"]] == ["/s"]
    assert data["env"] == [] and data["ports"] == []


def test_it_replaces_a_given_nested_list_and_keeps_the_others(api_as, operator, stage):
    client = api_as(operator)
    created = create(client, payload(stage))
    workload = Workload.objects.get(pk=created["id"])
    env_ids = list(workload.env_vars.values_list("pk", flat=True))
    port_ids = list(workload.ports.values_list("pk", flat=True))

    response = client.patch(
        f"/api/workloads/{workload.pk}",
        {"volumes": [
            {"scope": "project", "source": "uploads", "target": "/uploads", "read_only": True},
            {"scope": "stage", "source": "cache", "target": "/cache"},
        ]},
        format="json",
    )

    assert response.status_code == 200, response.json()
    workload.refresh_from_db()
    volumes = list(workload.volumes.order_by("target").values_list("scope", "source", "target"))
    assert volumes == [("stage", "cache", "/cache"), ("project", "uploads", "/uploads")]
    assert not VolumeMount.objects.filter(target="/data").exists()
    assert list(workload.env_vars.values_list("pk", flat=True)) == env_ids
    assert list(workload.ports.values_list("pk", flat=True)) == port_ids
    assert [v["target"] for v in response.json()["volumes"]] == ["/uploads", "/cache"]


def test_it_keeps_every_list_when_patching_a_plain_field(api_as, operator, stage):
    client = api_as(operator)
    created = create(client, payload(stage))

    response = client.patch(
        f"/api/workloads/{created['id']}", {"name": "Storefront", "replicas": 1}, format="json"
    )

    assert response.status_code == 200, response.json()
    workload = Workload.objects.get(pk=created["id"])
    assert workload.name == "Storefront"
    assert workload.volumes.count() == 1
    assert workload.env_vars.count() == 1
    assert workload.ports.count() == 1


def test_it_clears_a_list_patched_to_empty(api_as, operator, stage):
    client = api_as(operator)
    created = create(client, payload(stage))

    response = client.patch(f"/api/workloads/{created['id']}", {"env": []}, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["env"] == []
    assert not EnvVar.objects.filter(workload_id=created["id"]).exists()
    assert VolumeMount.objects.filter(workload_id=created["id"]).count() == 1


def test_it_keeps_its_own_host_port_when_the_ports_are_replaced(api_as, operator, stage):
    client = api_as(operator)
    created = create(client, payload(stage))

    response = client.patch(
        f"/api/workloads/{created['id']}",
        {"ports": [{"host_port": 18080, "container_port": 8080}]},
        format="json",
    )

    assert response.status_code == 200, response.json()
    port = PortMapping.objects.get(workload_id=created["id"])
    assert (port.host_port, port.container_port) == (18080, 8080)


def test_it_refuses_a_nested_item_missing_a_field_in_a_patch(api_as, operator, stage):
    client = api_as(operator)
    created = create(client, payload(stage))

    response = client.patch(
        f"/api/workloads/{created['id']}",
        {"volumes": [{"scope": "stage", "source": "other"}]},
        format="json",
    )

    assert response.status_code == 400
    assert "target" in response.json()["volumes"]["0"]
    volume = VolumeMount.objects.get(workload_id=created["id"])
    assert volume.target == "/data"


def test_it_deletes_a_workload_and_everything_it_owns(api_as, operator, stage):
    client = api_as(operator)
    created = create(client, payload(stage))
    workload = Workload.objects.get(pk=created["id"])
    Container.objects.create(
        workload=workload, docker_id="a" * 64, name="berth-x-1", replica=1, image_reference="x"
    )
    DeployRecord.objects.create(workload=workload, reason="api", source_kind="image")
    EventLog.objects.create(workload=workload, message="Deployed")

    response = client.delete(f"/api/workloads/{workload.pk}", HTTP_X_CONFIRM_DELETE=workload.path)

    assert response.status_code == 204
    assert not Workload.objects.filter(pk=workload.pk).exists()
    for model in (VolumeMount, EnvVar, PortMapping, Container, DeployRecord, EventLog):
        assert not model.objects.filter(workload_id=workload.pk).exists(), model.__name__
    assert Stage.objects.filter(pk=stage.pk).exists()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("put", "/api/workloads/{workload}"),
        ("post", "/api/workloads/{workload}"),
        ("delete", "/api/workloads"),
        ("get", "/api/workloads/{workload}/deploy"),
        ("delete", "/api/deploys/{deploy}"),
    ],
)
def test_it_answers_405_to_unsupported_methods(api_as, operator, workload, method, path):
    deploy = DeployRecord.objects.create(workload=workload, reason="api", source_kind="image")
    url = path.format(workload=workload.pk, deploy=deploy.pk)

    response = getattr(api_as(operator), method)(url, {}, format="json")

    assert response.status_code == 405
    workload.refresh_from_db()
    assert workload.name == "Web"
    assert DeployRecord.objects.filter(pk=deploy.pk).exists()


# --- who may do what --------------------------------------------------------

# Each read, with what an allowed caller sees: (id of workload, id of deploy) -> data.
READS = {
    "/api/workloads": lambda w, d: {"count": 1, "first": w},
    "/api/workloads/{workload}": lambda w, d: {"id": w},
    "/api/workloads/{workload}/containers": lambda w, d: {"count": 0},
    "/api/deploys/{deploy}": lambda w, d: {"id": d, "workload": w},
}
# Each write, with the body it sends; test_it_lets_an_operator_* show them allowed.
WRITES = [
    ("post", "/api/workloads", "create"),
    ("patch", "/api/workloads/{workload}", "rename"),
    ("delete", "/api/workloads/{workload}", None),
    ("post", "/api/workloads/{workload}/deploy", None),
]


def _client_for(who: str, request: pytest.FixtureRequest) -> APIClient:
    client = APIClient()
    if who != "anonymous":
        client.force_authenticate(request.getfixturevalue(who))
    return client


def _write_body(kind: str | None, workload: Workload) -> dict | None:
    if kind == "create":
        return {"stage": workload.stage_id, "name": "Api", "slug": "api",
                "image": images.HTTPD_CURRENT}
    if kind == "rename":
        return {"name": "Renamed"}
    return None


def _snapshot() -> tuple:
    return (
        sorted(Workload.objects.values_list("pk", "name")),
        DeployRecord.objects.count(),
    )


@pytest.mark.parametrize("path", READS)
@pytest.mark.parametrize(
    ("who", "expected"),
    [("anonymous", {401, 403}), ("outsider", {403}), ("viewer", {200}), ("operator", {200})],
)
def test_it_guards_every_read(request, workload, path, who, expected):
    deploy = DeployRecord.objects.create(workload=workload, reason="api", source_kind="image")
    client = _client_for(who, request)

    response = client.get(path.format(workload=workload.pk, deploy=deploy.pk))

    assert response.status_code in expected
    if 200 in expected:
        data = response.json()
        if "results" in data and data["results"]:
            data["first"] = data["results"][0].get("id")
        wanted = READS[path](workload.pk, deploy.pk)
        assert {key: data.get(key) for key in wanted} == wanted
    else:
        assert workload.name not in response.content.decode()
        assert images.HTTPD_CURRENT not in response.content.decode()


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
@pytest.mark.parametrize(
    ("who", "expected"),
    [("anonymous", {401, 403}), ("outsider", {403}), ("viewer", {403})],
)
def test_it_refuses_writes_without_the_permission(
    request, workload, method, path, body, who, expected
):
    client = _client_for(who, request)
    before = _snapshot()

    response = getattr(client, method)(
        path.format(workload=workload.pk), _write_body(body, workload), format="json",
        HTTP_X_CONFIRM_DELETE=workload.path,
    )

    assert response.status_code in expected
    assert _snapshot() == before
    workload.refresh_from_db()
    assert workload.name == "Web"


def test_it_lets_an_operator_create(api_as, operator, workload):
    response = api_as(operator).post(
        "/api/workloads", _write_body("create", workload), format="json"
    )

    assert response.status_code == 201, response.json()
    assert Workload.objects.filter(stage=workload.stage, slug="api").exists()


def test_it_lets_an_operator_patch(api_as, operator, workload):
    response = api_as(operator).patch(
        f"/api/workloads/{workload.pk}", {"name": "Renamed"}, format="json"
    )

    assert response.status_code == 200, response.json()
    workload.refresh_from_db()
    assert workload.name == "Renamed"


def test_it_lets_an_operator_delete(api_as, operator, workload):
    response = api_as(operator).delete(f"/api/workloads/{workload.pk}",
                                       HTTP_X_CONFIRM_DELETE=workload.path)

    assert response.status_code == 204
    assert not Workload.objects.filter(pk=workload.pk).exists()


def test_it_lets_an_operator_queue_a_deploy(api_as, operator, workload):
    # No commit happens inside this test's transaction, so the deploy stays
    # queued; test_api_deploy.py runs it against the engine.
    response = api_as(operator).post(f"/api/workloads/{workload.pk}/deploy")

    assert response.status_code == 202
    record = DeployRecord.objects.get(workload=workload)
    assert response.json()["id"] == record.pk
    assert response["Location"] == f"/api/deploys/{record.pk}"
    assert (record.reason, record.outcome, record.user) == ("api", "queued", operator)


def test_it_authenticates_with_a_token(operator, stage):
    token = Token.objects.create(user=operator)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")

    listed = client.get("/api/workloads")
    created = client.post("/api/workloads", payload(stage), format="json")

    assert listed.status_code == 200
    assert created.status_code == 201, created.json()
    assert Workload.objects.filter(stage=stage, slug="web").exists()


def test_it_refuses_a_wrong_token(operator, stage):
    Token.objects.create(user=operator)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)

    response = client.post("/api/workloads", payload(stage), format="json")

    assert response.status_code in {401, 403}
    assert not Workload.objects.exists()


def test_it_enforces_csrf_on_session_auth(operator, stage):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(operator)

    refused = client.post("/api/workloads", payload(stage), format="json")

    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    assert not Workload.objects.exists()

    # The same session with the token the pages send is let through.
    client.get("/login/")
    token = client.cookies["csrftoken"].value
    accepted = client.post(
        "/api/workloads", payload(stage), format="json", HTTP_X_CSRFTOKEN=token
    )
    assert accepted.status_code == 201, accepted.json()


def test_it_reads_with_a_session_without_csrf(api, viewer, workload):
    api.force_login(viewer)

    response = api.get(f"/api/workloads/{workload.pk}")

    assert response.status_code == 200
    assert response.json()["id"] == workload.pk


# --- bad input ----------------------------------------------------------------

def _without(body: dict, *keys: str) -> dict:
    return {k: v for k, v in body.items() if k not in keys}


BAD_INPUT = {
    "missing name, slug and stage": (
        lambda body: _without(body, "name", "slug", "stage"), ["name", "slug", "stage"]
    ),
    "image workload without an image": (lambda body: _without(body, "image"), ["image"]),
    "image with spaces": (lambda body: body | {"image": "httpd :latest"}, ["image"]),
    "bad slug": (lambda body: body | {"slug": "Not A Slug"}, ["slug"]),
    "unknown stage": (lambda body: body | {"stage": 999999}, ["stage"]),
    "replicas 0": (lambda body: body | {"replicas": 0}, ["replicas"]),
    "host ports with replicas": (lambda body: body | {"replicas": 2}, ["replicas"]),
    "volume escaping its stage": (
        lambda body: body | {"volumes": [{"scope": "stage", "source": "../x", "target": "/d"}]},
        ["volumes"],
    ),
    "absolute path in stage scope": (
        lambda body: body | {"volumes": [{"scope": "stage", "source": "/srv/x", "target": "/d"}]},
        ["volumes"],
    ),
    "absolute path in project scope": (
        lambda body: body
        | {"volumes": [{"scope": "project", "source": "/srv/x", "target": "/d"}]},
        ["volumes"],
    ),
    "volume escaping its project": (
        lambda body: body
        | {"volumes": [{"scope": "project", "source": "a/../../x", "target": "/d"}]},
        ["volumes"],
    ),
    "relative path in absolute scope": (
        lambda body: body
        | {"volumes": [{"scope": "absolute", "source": "srv/x", "target": "/d"}]},
        ["volumes"],
    ),
    "system directory as a volume": (
        lambda body: body | {"volumes": [{"scope": "absolute", "source": "/etc", "target": "/d"}]},
        ["volumes"],
    ),
    "relative container path": (
        lambda body: body | {"volumes": [{"scope": "stage", "source": "x", "target": "data"}]},
        ["volumes"],
    ),
    "duplicate volume targets": (
        lambda body: body | {"volumes": [
            {"scope": "stage", "source": "a", "target": "/data"},
            {"scope": "stage", "source": "b", "target": "/data"},
        ]},
        ["volumes"],
    ),
    "duplicate env names": (
        lambda body: body | {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
        ["env"],
    ),
    "bad env name": (lambda body: body | {"env": [{"name": "1A", "value": "x"}]}, ["env"]),
    "env without a value": (lambda body: body | {"env": [{"name": "A"}]}, ["env"]),
    "port out of range": (
        lambda body: body | {"ports": [{"host_port": 70000, "container_port": 80}]}, ["ports"]
    ),
    "duplicate host ports": (
        lambda body: body | {"ports": [
            {"host_port": 18081, "container_port": 80},
            {"host_port": 18081, "container_port": 81},
        ]},
        ["ports"],
    ),
    "volume without a target": (
        lambda body: body | {"volumes": [{"scope": "stage", "source": "a"}]}, ["volumes"]
    ),
    "volumes not a list": (lambda body: body | {"volumes": "/data"}, ["volumes"]),
}


@pytest.mark.parametrize("case", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_it_refuses_bad_input_and_creates_nothing(api_as, operator, stage, case):
    mutate, fields = case
    before = row_counts()

    response = api_as(operator).post("/api/workloads", mutate(payload(stage)), format="json")

    assert response.status_code == 400, response.content
    assert set(fields) <= set(response.json())
    assert row_counts() == before


def test_it_explains_that_a_git_workload_needs_a_repository_url(api_as, operator, stage):
    before = row_counts()

    response = api_as(operator).post(
        "/api/workloads", payload(stage, source_kind="git", image=""), format="json"
    )

    assert response.status_code == 400
    assert response.json()["git_url"] == ["A git workload needs a repository URL."]
    assert row_counts() == before


def test_it_explains_a_volume_error_on_the_item(api_as, operator, stage):
    body = payload(stage, volumes=[
        {"scope": "stage", "source": "ok", "target": "/ok"},
        {"scope": "stage", "source": "../x", "target": "/bad"},
    ])

    response = api_as(operator).post("/api/workloads", body, format="json")

    assert response.status_code == 400
    # Errors are keyed by the index of the item they belong to.
    assert response.json()["volumes"] == {
        "1": {"source": ["A volume source must not contain '..'."]}
    }


def test_it_refuses_a_volume_with_a_missing_scope_cleanly(api_as, operator, stage):
    body = payload(stage, volumes=[{"source": "/srv/x", "target": "/d"}])

    response = api_as(operator).post("/api/workloads", body, format="json")

    # The scope defaults to "stage", where an absolute path is refused.
    assert response.status_code == 400
    assert "source" in response.json()["volumes"]["0"]
    assert not Workload.objects.exists()


def test_it_refuses_malformed_json(api_as, operator, stage):
    before = row_counts()

    response = api_as(operator).post(
        "/api/workloads", data='{"name": "Web", "slug":', content_type="application/json"
    )

    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]
    assert row_counts() == before


def test_it_refuses_a_duplicate_slug_in_a_stage(api_as, operator, workload):
    before = row_counts()

    response = api_as(operator).post(
        "/api/workloads", payload(workload.stage, slug=workload.slug), format="json"
    )

    assert response.status_code == 400
    assert response.json()["slug"] == ["This stage already has a workload with this slug."]
    assert row_counts() == before


def test_it_allows_the_same_slug_in_another_stage(api_as, operator, workload):
    other = Stage.objects.create(project=workload.stage.project, name="Dev", slug="dev")

    response = api_as(operator).post(
        "/api/workloads", payload(other, slug=workload.slug), format="json"
    )

    assert response.status_code == 201, response.json()


def test_it_refuses_a_host_port_another_workload_holds(api_as, operator, workload):
    PortMapping.objects.create(workload=workload, host_port=18080, container_port=80)
    other = Stage.objects.create(project=workload.stage.project, name="Dev", slug="dev")
    before = row_counts()

    response = api_as(operator).post("/api/workloads", payload(other), format="json")

    assert response.status_code == 400
    assert "ports" in response.json()
    assert row_counts() == before


def test_it_refuses_a_bad_patch_and_changes_nothing(api_as, operator, stage):
    client = api_as(operator)
    created = create(client, payload(stage))
    before = row_counts()

    response = client.patch(
        f"/api/workloads/{created['id']}",
        {"name": "Changed", "replicas": 3, "volumes": []},
        format="json",
    )

    assert response.status_code == 400
    assert "replicas" in response.json()
    workload = Workload.objects.get(pk=created["id"])
    assert (workload.name, workload.replicas) == ("Web", 1)
    assert workload.volumes.count() == 1
    assert row_counts() == before


def test_it_refuses_a_patch_to_git_without_a_repository(api_as, operator, workload):
    response = api_as(operator).patch(
        f"/api/workloads/{workload.pk}", {"source_kind": "git"}, format="json"
    )

    assert response.status_code == 400
    assert "git_url" in response.json()
    workload.refresh_from_db()
    assert workload.source_kind == "image"


def test_it_ignores_read_only_fields(api_as, operator, workload):
    response = api_as(operator).patch(
        f"/api/workloads/{workload.pk}",
        {"state": "running", "running_reference": "evil@sha256:00"},
        format="json",
    )

    assert response.status_code == 200
    workload.refresh_from_db()
    assert (workload.state, workload.running_reference) == ("new", "")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/workloads/999999"),
        ("patch", "/api/workloads/999999"),
        ("delete", "/api/workloads/999999"),
        ("post", "/api/workloads/999999/deploy"),
        ("get", "/api/workloads/999999/containers"),
        ("get", "/api/deploys/999999"),
    ],
)
def test_it_answers_404_for_an_unknown_id(api_as, operator, workload, method, path):
    before = row_counts()

    response = getattr(api_as(operator), method)(path, {"name": "X"}, format="json")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
    assert row_counts() == before


# --- secrets --------------------------------------------------------------------

def test_it_never_shows_a_secret_env_value(api_as, operator, stage):
    client = api_as(operator)
    body = payload(stage, env=[
        {"name": "DB_PASSWORD", "value": SECRET, "is_secret": True},
        {"name": "GREETING", "value": "hello"},
    ])

    created = client.post("/api/workloads", body, format="json")

    assert created.status_code == 201
    pk = created.json()["id"]
    env = {e["name"]: e for e in created.json()["env"]}
    assert env["DB_PASSWORD"]["value"] is None and env["DB_PASSWORD"]["is_secret"] is True
    assert env["GREETING"]["value"] == "hello"
    Container.objects.create(
        workload_id=pk, docker_id="b" * 64, name="berth-web-1", replica=1, image_reference="x"
    )
    responses = [
        created,
        client.get(f"/api/workloads/{pk}"),
        client.get("/api/workloads"),
        client.get(f"/api/workloads/{pk}/containers?all=1"),
        client.patch(f"/api/workloads/{pk}", {"name": "Renamed"}, format="json"),
    ]
    for response in responses:
        assert response.status_code in {200, 201}
        assert SECRET.encode() not in response.content
    assert EnvVar.objects.get(workload_id=pk, name="DB_PASSWORD").get_value() == SECRET


def test_it_stores_no_plaintext_secret(api_as, operator, stage):
    body = payload(stage, env=[{"name": "DB_PASSWORD", "value": SECRET, "is_secret": True}])

    create(api_as(operator), body)

    columns = [f.attname for f in EnvVar._meta.concrete_fields]
    for row in EnvVar.objects.values_list(*columns):
        assert all(SECRET not in str(value) for value in row), row
    table = connection.ops.quote_name(EnvVar._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table}")  # noqa: S608 - a fixed table name
        rows = cursor.fetchall()
    assert rows
    assert all(SECRET not in str(value) for row in rows for value in row)
    stored = EnvVar.objects.get(name="DB_PASSWORD")
    assert stored.value == "" and stored.secret_encrypted
    assert stored.get_value() == SECRET


def test_it_stores_no_plaintext_when_a_patch_adds_a_secret(api_as, operator, workload):
    response = api_as(operator).patch(
        f"/api/workloads/{workload.pk}",
        {"env": [{"name": "TOKEN", "value": SECRET, "is_secret": True}]},
        format="json",
    )

    assert response.status_code == 200
    assert SECRET.encode() not in response.content
    table = connection.ops.quote_name(EnvVar._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table}")  # noqa: S608 - a fixed table name
        assert all(SECRET not in str(value) for row in cursor.fetchall() for value in row)
    assert workload.env_vars.get().get_value() == SECRET


# --- containers -------------------------------------------------------------

def test_it_lists_live_containers_and_all_on_request(api_as, viewer, workload):
    live = Container.objects.create(
        workload=workload, docker_id="c" * 64, name="berth-web-1", replica=1,
        image_reference="img@sha256:1",
    )
    Container.objects.create(
        workload=workload, docker_id="d" * 64, name="berth-web-1-old", replica=1,
        image_reference="img@sha256:0", removed="2024-01-01T00:00:00Z",
    )
    client = api_as(viewer)

    live_only = client.get(f"/api/workloads/{workload.pk}/containers")
    everything = client.get(f"/api/workloads/{workload.pk}/containers?all=1")

    assert live_only.status_code == 200
    assert [c["docker_id"] for c in live_only.json()["results"]] == [live.docker_id]
    assert everything.json()["count"] == 2


# --- queries on the list --------------------------------------------------------

def _add_workloads(stage: Stage, count: int) -> None:
    for n in range(count):
        workload = Workload.objects.create(
            stage=stage, name=f"W{n}", slug=f"w{n}-{uuid.uuid4().hex[:6]}",
            image=images.HTTPD_CURRENT,
        )
        VolumeMount.objects.create(workload=workload, scope="stage", source="d", target="/d")
        EnvVar.objects.create(workload=workload, name="A", value="1")
        PortMapping.objects.create(
            workload=workload, host_port=20000 + Workload.objects.count(), container_port=80
        )


def test_it_lists_in_a_fixed_number_of_queries(operator, stage, django_assert_max_num_queries):
    token = Token.objects.create(user=operator)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    # 1 the address's failed logins (web/logins.py), 1 token + user, 2 the user's and
    # its groups' permissions, 1 count for the paginator, 1 workloads joined with stage,
    # project and credential, then one prefetch each for volumes, env vars, ports and
    # live containers (the live state).
    queries = 10

    _add_workloads(stage, 1)
    with django_assert_max_num_queries(queries):
        one = client.get("/api/workloads")
    _add_workloads(stage, 4)
    with django_assert_max_num_queries(queries):
        five = client.get("/api/workloads")

    assert one.json()["count"] == 1
    assert five.json()["count"] == 5
    assert all(len(w["volumes"]) == len(w["env"]) == len(w["ports"]) == 1
               for w in five.json()["results"])


# --- schema and docs ------------------------------------------------------------

def test_it_serves_the_openapi_schema(api_as, viewer):
    response = api_as(viewer).get("/api/schema?format=json")

    assert response.status_code == 200
    schema = json.loads(response.content)
    assert "/api/workloads/{id}/deploy" in schema["paths"]
    assert "202" in schema["paths"]["/api/workloads/{id}/deploy"]["post"]["responses"]
    assert "/api/workloads/{id}/containers" in schema["paths"]


def test_it_serves_docs_without_outside_assets(api_as, viewer):
    response = api_as(viewer).get("/api/docs")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "cdn" not in html.lower()
    sources = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assert sources, html
    assert all(not re.match(r"^(?:[a-z]+:)?//", s) for s in sources), sources
    assert "https://" not in html


ANY_V4 = "0.0.0.0"  # noqa: S104 - an address a port mapping names, never bound here


@pytest.mark.parametrize(("taken", "asked"), [
    ("127.0.0.1", ANY_V4), (ANY_V4, "127.0.0.1"), ("::", "127.0.0.1"), ("10.1.2.3", "::"),
])
def test_a_wildcard_address_clashes_with_any_address_on_its_port(api_as, operator, stage,
                                                                 taken, asked, settings):
    """The engine cannot bind 0.0.0.0:p beside 127.0.0.1:p (`address already in use`)."""
    settings.BERTH_PORT_ADDRESSES = [ANY_V4, "::", "10.1.2.3"]
    first = payload(stage, slug="first", volumes=[], ports=[{"host_ip": taken, "host_port": 18991,
                                                 "container_port": 80}])
    assert api_as(operator).post("/api/workloads", first, format="json").status_code == 201
    second = payload(stage, slug="second", volumes=[], ports=[{"host_ip": asked, "host_port": 18991,
                                                   "container_port": 80}])

    response = api_as(operator).post("/api/workloads", second, format="json")

    assert response.status_code == 400 and "already published" in str(response.json()["ports"])


def test_an_ipv4_wildcard_leaves_an_ipv6_address_alone(api_as, operator, stage, settings):
    settings.BERTH_PORT_ADDRESSES = [ANY_V4]
    for n, address in enumerate([ANY_V4, "::1"]):
        body = payload(stage, slug=f"w{n}", volumes=[],
                       ports=[{"host_ip": address, "host_port": 18992, "container_port": 80}])
        assert api_as(operator).post("/api/workloads", body, format="json").status_code == 201


@pytest.mark.parametrize("address", [ANY_V4, "::", "192.0.2.7"])
def test_a_port_is_published_only_on_loopback_unless_the_site_lists_the_address(
        api_as, operator, stage, settings, address):
    body = payload(stage, volumes=[], ports=[{"host_ip": address, "host_port": 18993,
                                              "container_port": 80}])

    refused = api_as(operator).post("/api/workloads", body, format="json")
    assert refused.status_code == 400 and "BERTH_PORT_ADDRESSES" in str(refused.json()["ports"])
    assert not Workload.objects.exists()

    settings.BERTH_PORT_ADDRESSES = [address]
    assert api_as(operator).post("/api/workloads", body, format="json").status_code == 201
