"""Git workloads in the API: settings, the write-only credential, commits and build logs."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.workloads.test_api_workloads import payload, row_counts
from tests.workloads.test_secrets import tables_containing
from workloads.models import DeployLog, DeployRecord, Project, Stage, Workload

pytestmark = pytest.mark.django_db
SHA = "3f2c1a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f"
TOKEN = "glpat-never-echoed-5d1e"  # noqa: S105


@pytest.fixture
def stage(db) -> Stage:
    project = Project.objects.create(name="Shop", slug=f"shop-{uuid.uuid4().hex[:8]}")
    return Stage.objects.create(project=project, name="Prod", slug="prod")


def git_payload(stage, **overrides) -> dict:
    return payload(
        stage, source_kind="git", image="", git_url="https://gitlab.com/acme/shop.git",
        git_ref="release/2024", git_dockerfile="docker/Dockerfile", git_context=".",
        build_args={"VERSION": "1.4"}, ports=[],
    ) | overrides


def test_it_creates_a_git_workload_and_shows_its_settings(api_as, operator, stage):
    response = api_as(operator).post("/api/workloads", git_payload(stage), format="json")

    assert response.status_code == 201, response.json()
    data = response.json()
    assert (data["source_kind"], data["git_url"], data["git_ref"]) == (
        "git", "https://gitlab.com/acme/shop.git", "release/2024"
    )
    assert (data["git_dockerfile"], data["git_context"]) == ("docker/Dockerfile", ".")
    assert data["build_args"] == {"VERSION": "1.4"}
    assert data["has_git_credential"] is False
    assert data["repository_web_url"] == "https://gitlab.com/acme/shop"
    assert data["running_commit"] == "" and data["running_commit_url"] is None


def test_a_credential_in_the_url_or_the_fields_is_write_only(api_as, operator, stage):
    client = api_as(operator)
    body = git_payload(stage, git_url=f"https://oauth2:{TOKEN}@gitlab.com/acme/shop.git")

    created = client.post("/api/workloads", body, format="json")

    assert created.status_code == 201, created.json()
    assert TOKEN.encode() not in created.content
    assert created.json()["git_url"] == "https://gitlab.com/acme/shop.git"
    assert created.json()["has_git_credential"] is True
    workload = Workload.objects.get(pk=created.json()["id"])
    assert workload.get_git_credential() == ("oauth2", TOKEN)
    assert tables_containing(TOKEN) == []
    url = f"/api/workloads/{workload.pk}"
    for response in (client.get(url), client.get("/api/workloads")):
        assert TOKEN.encode() not in response.content
        assert b"oauth2" not in response.content

    # A new password alone keeps the stored username.
    client.patch(url, {"git_password": "rotated-9e2f"}, format="json")
    workload.refresh_from_db()
    assert workload.get_git_credential() == ("oauth2", "rotated-9e2f")
    # Leaving both out keeps the credential; sending both empty removes it.
    client.patch(url, {"git_ref": "main"}, format="json")
    workload.refresh_from_db()
    assert workload.has_git_credential
    response = client.patch(url, {"git_username": "", "git_password": ""}, format="json")
    assert response.json()["has_git_credential"] is False
    workload.refresh_from_db()
    assert workload.git_credential_encrypted == ""


def test_a_model_save_never_stores_a_credential_in_the_url(make_workload):
    workload = make_workload(
        image="", source_kind="git", git_url=f"https://me:{TOKEN}@github.com/acme/shop.git"
    )
    Workload.objects.filter(pk=workload.pk).update(git_ref="main")  # no save(): nothing to strip
    workload.git_url = f"https://{TOKEN}@github.com/acme/other.git"
    workload.save(update_fields=["git_url"])

    workload.refresh_from_db()
    assert workload.git_url == "https://github.com/acme/other.git"
    assert workload.get_git_credential() == (TOKEN, "")
    assert tables_containing(TOKEN) == []


BAD_GIT_INPUT = {
    "no url": ({"git_url": ""}, "git_url"),
    "http url": ({"git_url": "http://github.com/acme/shop.git"}, "git_url"),
    "ext transport": ({"git_url": "ext::sh -c id"}, "git_url"),
    "scp-like url": ({"git_url": "git@github.com:acme/shop.git"}, "git_url"),
    "option as ref": ({"git_ref": "--upload-pack=id"}, "git_ref"),
    "range as ref": ({"git_ref": "main..dev"}, "git_ref"),
    "empty ref": ({"git_ref": ""}, "git_ref"),
    "dockerfile outside": ({"git_dockerfile": "../Dockerfile"}, "git_dockerfile"),
    "absolute dockerfile": ({"git_dockerfile": "/etc/passwd"}, "git_dockerfile"),
    "context outside": ({"git_context": "../.."}, "git_context"),
    "bad build arg name": ({"build_args": {"1X": "y"}}, "build_args"),
    "build args not an object": ({"build_args": ["A=1"]}, "build_args"),
    "ssh with a password": ({"git_url": "ssh://git:pw@github.com/acme/shop.git"}, "git_url"),
    "credential for ssh": (
        {"git_url": "ssh://git@github.com/acme/shop.git", "git_password": "pw"}, "git_url"
    ),
}


@pytest.mark.parametrize("case", BAD_GIT_INPUT.values(), ids=BAD_GIT_INPUT.keys())
def test_it_refuses_bad_git_settings_and_creates_nothing(api_as, operator, stage, case):
    change, field = case
    before = row_counts()

    response = api_as(operator).post("/api/workloads", git_payload(stage, **change), format="json")

    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert row_counts() == before
    assert b"pw" not in json.dumps(response.json()).encode().replace(b"password", b"")


def git_record(workload: Workload, **fields) -> DeployRecord:
    record = DeployRecord.open(workload=workload, reason=DeployRecord.Reason.API)
    DeployRecord.objects.filter(pk=record.pk).update(**fields)
    record.refresh_from_db()
    return record


@pytest.fixture
def git_workload(make_workload) -> Workload:
    return make_workload(
        image="", source_kind="git", git_url="https://github.com/acme/shop.git", git_ref="main"
    )


def test_a_git_deploy_shows_its_commit_image_and_build_log(api_as, viewer, git_workload):
    record = git_record(
        git_workload, outcome="succeeded", pinned_reference=SHA, image_id="sha256:" + "ab" * 32,
        repository=git_workload.git_url,
    )
    DeployLog.objects.create(deploy=record, text="Step 1/1 : FROM x\n", failed_step="")
    client = api_as(viewer)

    data = client.get(f"/api/deploys/{record.pk}").json()

    assert (data["source_kind"], data["requested_reference"]) == ("git", "main")
    assert (data["pinned_reference"], data["commit"]) == (SHA, SHA)
    assert data["commit_url"] == f"https://github.com/acme/shop/commit/{SHA}"
    assert data["image_id"] == "sha256:" + "ab" * 32
    assert data["repository"] == "https://github.com/acme/shop.git"
    assert data["build_log_url"] == f"/api/deploys/{record.pk}/log"
    log = client.get(data["build_log_url"]).json()
    assert log == {
        "deploy": record.pk, "finished": True, "text": "Step 1/1 : FROM x\n",
        "truncated": False, "failed_step": "", "updated": log["updated"],
    }


def test_an_image_deploy_has_no_build_log(api_as, viewer, workload):
    record = git_record(workload)
    client = api_as(viewer)
    assert client.get(f"/api/deploys/{record.pk}").json()["build_log_url"] is None
    assert client.get(f"/api/deploys/{record.pk}/log").status_code == 404


@pytest.mark.parametrize(("who", "status"), [(None, 401), ("outsider", 403), ("viewer", 200)])
def test_the_build_log_permission_matrix(request, api, api_as, git_workload, who, status):
    record = git_record(git_workload)
    DeployLog.objects.create(deploy=record, text="x\n")
    client = api_as(request.getfixturevalue(who)) if who else api
    assert client.get(f"/api/deploys/{record.pk}/log").status_code == status


def test_the_build_log_refuses_writes(api_as, operator, git_workload):
    record = git_record(git_workload)
    DeployLog.objects.create(deploy=record, text="x\n")
    assert api_as(operator).post(f"/api/deploys/{record.pk}/log").status_code == 405


def test_a_git_rollback_queues_a_replay_of_ref_at_commit(
    api_as, operator, git_workload, django_capture_on_commit_callbacks
):
    target = git_record(
        git_workload, outcome="succeeded", pinned_reference=SHA, image_id="sha256:" + "ab" * 32
    )
    git_record(git_workload, outcome="succeeded", pinned_reference="e" * 40)

    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        response = api_as(operator).post(
            f"/api/workloads/{git_workload.pk}/rollback",
            # The code only: a row made here has no recorded configuration.
            {"deploy_id": target.pk, "configuration": False}, format="json"
        )

    assert response.status_code == 202, response.content
    data = response.json()
    assert (data["reason"], data["requested_reference"]) == ("rollback", f"main@{SHA}")
    assert data["rolled_back_from"] == target.pk
    assert len(enqueued) == 1


def test_the_schema_documents_the_build_log(api_as, viewer):
    schema = api_as(viewer).get("/api/schema?format=json").json()
    assert "/api/deploys/{id}/log" in schema["paths"]
    fields = schema["components"]["schemas"]["Workload"]["properties"]
    assert "git_url" in fields and "has_git_credential" in fields
    # The password is only ever sent: in the request's component, not in the answer's.
    assert "git_password" not in fields
    sent = schema["components"]["schemas"]["WorkloadRequest"]["properties"]
    assert sent["git_password"].get("writeOnly") is True
    assert "has_git_credential" not in sent


def test_a_stored_credential_cannot_be_sent_to_another_host(api_as, operator, stage):
    client = api_as(operator)
    body = git_payload(stage, git_url=f"https://oauth2:{TOKEN}@gitlab.com/acme/shop.git")
    url = f"/api/workloads/{client.post('/api/workloads', body, format='json').json()['id']}"

    moved = client.patch(url, {"git_url": "https://evil.example/acme/shop.git"}, format="json")

    assert moved.status_code == 400
    assert "another host" in moved.json()["git_url"][0]
    workload = Workload.objects.get(pk=url.rsplit("/", 1)[1])
    assert workload.git_url == "https://gitlab.com/acme/shop.git"
    # Another repository on the same host keeps it; another host needs it again, or none.
    same_host = client.patch(url, {"git_url": "https://gitlab.com/acme/other.git"}, format="json")
    assert same_host.status_code == 200, same_host.json()
    again = client.patch(
        url, {"git_url": "https://git.example.com/acme/shop.git", "git_password": "new-9a0c"},
        format="json",
    )
    assert again.status_code == 200, again.json()
    workload.refresh_from_db()
    # The stored username (a token, perhaps) did not follow to the new host.
    assert workload.get_git_credential() == ("", "new-9a0c")
    assert workload.git_credential_matches_url
    cleared = client.patch(
        url, {"git_url": "https://other.example/x.git", "git_username": "", "git_password": ""},
        format="json",
    )
    assert cleared.status_code == 200, cleared.json()
    assert cleared.json()["has_git_credential"] is False
