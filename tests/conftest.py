"""Fixtures shared by the whole suite: users, workloads and the real Docker engine."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import connection
from rest_framework.test import APIClient

from lib import runtime
from tests.fixtures import images
from workloads.models import Project, Stage, Workload

REPO_ROOT = Path(__file__).resolve().parent.parent


# --- the real Docker engine and registry -----------------------------------

def _docker_unavailable_reason() -> str | None:
    if not runtime.engine_status().reachable:
        return "no Docker engine answers (run `make services` as root)"
    for registry in (images.REGISTRY, images.AUTH_REGISTRY):
        try:
            urllib.request.urlopen(f"http://{registry}/v2/", timeout=3)  # noqa: S310
        except urllib.error.HTTPError as exc:
            if exc.code != 401:  # the auth registry answers 401 without credentials
                return f"the registry on {registry} answers {exc.code}"
        except OSError:
            return f"no registry on {registry} (run `make services` as root)"
    return None


@pytest.fixture(scope="session")
def docker_engine():
    """The real engine with the test images in the local registry, or a loud skip.

    Under BERTH_REQUIRE_DOCKER=1 (CI) a missing engine fails the test instead.
    """
    reason = _docker_unavailable_reason()
    if reason:
        if os.environ.get("BERTH_REQUIRE_DOCKER") == "1":
            pytest.fail(f"BERTH_REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(f"SKIPPED FOR LACK OF DOCKER: {reason}")
    yield
    remove_test_containers()


def remove_test_containers() -> None:
    """Remove every container this test run's Berth instance created."""
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={runtime.instance_label()}"],
        capture_output=True, text=True, check=False,
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)


@pytest.fixture
def docker(docker_engine):
    """Per test: the engine, and no containers of ours left behind afterwards."""
    yield
    remove_test_containers()


def registry_digest(reference: str) -> str:
    """The registry's current digest for repo:tag (sha256:…)."""
    repo, tag = reference.rsplit(":", 1)
    name = repo.split("/", 1)[1]
    request = urllib.request.Request(  # noqa: S310 - the local test registry
        f"http://{images.REGISTRY}/v2/{name}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        return response.headers["Docker-Content-Digest"]


def move_current_tag(version: str) -> str:
    """Point this run's moving tag at v1 or v2 in the registry; returns the new digest."""
    subprocess.run(
        [str(REPO_ROOT / "scripts" / "move-test-tag.sh"), version, images.CURRENT_TAG],
        check=True, capture_output=True,
    )
    return registry_digest(images.HTTPD_CURRENT)


@pytest.fixture
def current_tag(docker):
    """This run's moving tag at v1 for the test, and put back at v1 afterwards."""
    move_current_tag("v1")
    yield
    move_current_tag("v1")


def container_image_digest(docker_id: str) -> str:
    """The digest-pinned reference a container was created from (its Config.Image)."""
    out = subprocess.run(
        ["docker", "inspect", docker_id], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out)[0]["Config"]["Image"]


# --- job owners ------------------------------------------------------------

def dead_owner() -> str:
    """The owner string (lib/owners.py) of a process that ran on this host and has exited."""
    from lib import owners

    child = subprocess.Popen(["sleep", "30"])
    try:
        owner = owners.of(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not owners.is_alive(owner)
    return owner


# --- users -----------------------------------------------------------------

def _user(username: str, group: str | None) -> User:
    user = User.objects.create_user(username=username, password="correct horse battery")
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def operator(db) -> User:
    return _user("olga-operator", "operators")


@pytest.fixture
def viewer(db) -> User:
    return _user("victor-viewer", "viewers")


@pytest.fixture
def outsider(db) -> User:
    return _user("oscar-outsider", None)


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def api_as(api):
    def login(user: User) -> APIClient:
        api.force_authenticate(user)
        return api
    return login


# --- workloads -------------------------------------------------------------

@pytest.fixture
def make_workload(db):
    """Build a workload in a project with a unique slug (container names never clash)."""

    def make(image: str = images.HTTPD_CURRENT, **fields) -> Workload:
        project = Project.objects.create(name="Test", slug=f"t{uuid.uuid4().hex[:8]}")
        stage = Stage.objects.create(project=project, name="Prod", slug="prod")
        fields.setdefault("name", "Web")
        fields.setdefault("slug", "web")
        return Workload.objects.create(stage=stage, image=image, **fields)

    return make


@pytest.fixture
def workload(make_workload) -> Workload:
    return make_workload()


def child_env() -> dict[str, str]:
    """Environment for a child process that must use this test run's database and data dir."""
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        login = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        host = f"{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}"
        url = f"postgres://{login}@{host}/{db['NAME']}"
    else:
        url = f"sqlite://{db['NAME']}"
    return os.environ | {"DATABASE_URL": url, "BERTH_DATA_DIR": str(settings.DATA_DIR)}
