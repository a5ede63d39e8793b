"""A repository credential — pasted into the URL or sent write-only — never reaches the
database, the API, a page, a log line, the build log, git's command line or the cache.

The repository is served over real https by `git http-backend` and only answers
with the right Basic credential, so a successful deploy proves the credential
was used, and the server's record of requests shows how it travelled.
"""

from __future__ import annotations

import base64
import logging
import subprocess
import uuid
from pathlib import Path

import pytest
from django.test import Client

from engine import deploys
from lib import gitcache
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.gitserver import https_git_server
from tests.workloads.test_git_deploys import remove_built_images, serving
from tests.workloads.test_secrets import tables_containing
from workloads.models import DeployRecord, EnvVar, Stage, Workload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]

USERNAME = "deploy-bot-4e1f"
PASSWORD = "ghp-token-77c2a9d0e5"  # noqa: S105 - the value under test
ENV_SECRET = "env-secret-for-git-31b7"  # noqa: S105


@pytest.fixture
def served(docker, tmp_path, monkeypatch):
    """A bare repository behind the https server, with one commit that serves "private"."""
    work = GitRepo(tmp_path / "work")
    work.serve("private content\n")
    root = tmp_path / "served"
    root.mkdir()
    subprocess.run(
        ["git", "clone", "--quiet", "--bare", str(work.path), str(root / "app.git")], check=True
    )
    with https_git_server(root, username=USERNAME, password=PASSWORD) as server:
        # How an operator trusts a private forge's CA (passed through to git).
        monkeypatch.setenv("GIT_SSL_CAINFO", str(server.ca_file))
        yield server
    remove_built_images()


@pytest.fixture
def argv_log(monkeypatch) -> list[list[str]]:
    """Every command line Berth starts while the test runs."""
    seen: list[list[str]] = []
    real = subprocess.Popen

    class Recording(real):
        def __init__(self, args, *rest, **kwargs):
            seen.append([str(a) for a in args])
            super().__init__(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", Recording)
    return seen


def admin_client(django_user_model) -> Client:
    admin = django_user_model.objects.create_superuser("root", password="correct horse battery")
    client = Client()
    client.force_login(admin)
    return client


def pages_for(workload: Workload, record: DeployRecord) -> list[str]:
    return [
        "/", f"/workloads/{workload.pk}/", f"/workloads/{workload.pk}/state",
        f"/deploys/{record.pk}/", f"/deploys/{record.pk}/panel",
        "/api/workloads", f"/api/workloads/{workload.pk}",
        f"/api/workloads/{workload.pk}/deploys", f"/api/deploys/{record.pk}",
        f"/api/deploys/{record.pk}/log",
        "/admin/workloads/workload/", f"/admin/workloads/workload/{workload.pk}/change/",
        f"/admin/workloads/deployrecord/{record.pk}/change/",
    ]


def assert_nowhere(secrets: list[str], client: Client, urls: list[str], log_text: str) -> None:
    for secret in secrets:
        assert tables_containing(secret) == [], secret
        for url in urls:
            response = client.get(url)
            assert response.status_code == 200, url
            assert secret.encode() not in response.content, (secret, url)
        assert secret not in log_text, secret


def cache_files_containing(workload_id: int, needle: str) -> list[str]:
    cache = gitcache.cache_path(workload_id)
    return [
        str(path) for path in cache.rglob("*")
        if path.is_file() and needle.encode() in path.read_bytes()
    ]


def test_a_credential_pasted_into_the_url_deploys_and_is_never_shown(
    served, stage_for_api, django_user_model, caplog, argv_log
):
    client = admin_client(django_user_model)
    url_with_credential = served.url.replace("https://", f"https://{USERNAME}:{PASSWORD}@")

    response = client.post(
        "/api/workloads",
        {"stage": stage_for_api.pk, "name": "Private", "slug": "private", "source_kind": "git",
         "git_url": url_with_credential + "app.git", "git_ref": "main"},
        content_type="application/json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["git_url"] == served.url + "app.git"
    assert body["has_git_credential"] is True
    assert "git_username" not in body and "git_password" not in body
    workload = Workload.objects.get(pk=body["id"])
    env = EnvVar(workload=workload, name="API_TOKEN")
    env.set_value(ENV_SECRET, secret=True)
    env.save()

    with caplog.at_level(logging.DEBUG):
        record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)

    assert record.outcome == DeployRecord.Outcome.SUCCEEDED, record.failure_code
    assert serving(workload) == "private content\n"
    # The credential travelled as an Authorization header, and only there.
    header = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    assert any(auth == header for _line, auth in served.requests)
    assert not any(PASSWORD in line or USERNAME in line for line, _auth in served.requests)
    encoded = header.removeprefix("Basic ")
    secrets = [PASSWORD, USERNAME, encoded, ENV_SECRET]
    assert_nowhere(secrets, client, pages_for(workload, record), caplog.text)
    for argv in argv_log:
        assert not any(s in arg for s in secrets for arg in argv), argv
    for secret in secrets:
        assert cache_files_containing(workload.pk, secret) == [], secret
    assert "fetching https://127.0.0.1:" in record.build_log.text


@pytest.mark.parametrize(
    "credential",
    [("wrong-user-2b7c", "wrong-password-9f3e"), ("", "token-only-6a1d83")],
    ids=["wrong-credential", "token-as-username"],
)
def test_a_refused_credential_fails_the_fetch_and_leaks_nowhere(
    served, make_workload, django_user_model, caplog, credential
):
    username, password = credential
    userinfo = f"{username}:{password}" if username else password
    workload = make_workload(
        image="", source_kind=Workload.SourceKind.GIT,
        git_url=served.url.replace("https://", f"https://{userinfo}@") + "app.git",
    )
    workload.refresh_from_db()
    assert workload.git_url == served.url + "app.git"
    client = admin_client(django_user_model)

    with caplog.at_level(logging.DEBUG):
        record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
        client.post(f"/api/workloads/{workload.pk}/deploy")

    assert (record.outcome, record.failure_code) == ("failed", "fetch_failed")
    secrets = [s for s in (username, password) if s]
    assert_nowhere(secrets, client, pages_for(workload, record), caplog.text)
    # The raw error did reach the server log, for the operator to read.
    assert f"deploy {record.pk} of workload {workload.pk} failed (fetch_failed)" in caplog.text


def test_the_build_log_masks_secrets_and_url_credentials_the_build_prints(
    docker, tmp_path, make_workload
):
    repo = GitRepo(tmp_path / "repo")
    repo.serve("x\n", extra=(
        f"RUN echo token={ENV_SECRET} && echo clone https://someone:hunter2-e81f@example.com/x\n"
    ))
    workload = make_workload(image="", source_kind=Workload.SourceKind.GIT, git_url=repo.url)
    env = EnvVar(workload=workload, name="API_TOKEN")
    env.set_value(ENV_SECRET, secret=True)
    env.save()

    record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)

    remove_built_images()
    assert record.outcome == DeployRecord.Outcome.SUCCEEDED, record.failure_code
    text = record.build_log.text
    assert ENV_SECRET not in text and "hunter2-e81f" not in text
    assert "token=[redacted]" in text
    assert "https://[redacted]@example.com/x" in text


@pytest.fixture
def stage_for_api(db) -> Stage:
    from workloads.models import Project

    project = Project.objects.create(name="Private", slug=f"private-{uuid.uuid4().hex[:8]}")
    return Stage.objects.create(project=project, name="Prod", slug="prod")


def test_the_https_server_refuses_git_without_the_credential(served, tmp_path: Path):
    """The fixture really guards the repository (so the tests above prove something)."""
    result = subprocess.run(
        ["git", "ls-remote", served.url + "app.git"], capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "GIT_TERMINAL_PROMPT": "0",
             "GIT_SSL_CAINFO": str(served.ca_file), "HOME": str(tmp_path)},
        check=False,
    )
    assert result.returncode != 0
    assert served.requests and served.requests[-1][1] == ""


def test_a_credential_is_never_sent_to_a_host_it_was_not_given_for(
    served, make_workload, tmp_path
):
    workload = make_workload(
        image="", source_kind=Workload.SourceKind.GIT,
        git_url=served.url.replace("https://", f"https://{USERNAME}:{PASSWORD}@") + "app.git",
    )
    other_root = tmp_path / "other"
    other_root.mkdir()
    with https_git_server(other_root, username="x", password="y") as other:
        # Moved behind the checks' back (a raw update): the deploy still refuses.
        Workload.objects.filter(pk=workload.pk).update(git_url=other.url + "app.git")

        record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)

    assert (record.outcome, record.failure_code) == ("failed", "invalid_config")
    assert other.requests == []
