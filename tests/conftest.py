"""Fixtures shared by the whole suite: users, workloads and the real Docker engine."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import connection
from django.utils import translation
from rest_framework.test import APIClient

from lib import runtime
from tests.fixtures import images
from workloads.models import Project, Stage, Workload

REPO_ROOT = Path(__file__).resolve().parent.parent


# --- markers and workers --------------------------------------------------

DOCKER_FIXTURES = {"docker_engine"}  # every fixture that needs the engine depends on this one
BROWSER_DIR = REPO_ROOT / "tests" / "browser"


def pytest_collection_modifyitems(config, items) -> None:
    """Mark what needs the engine or the browser, so `-m "not docker"` makes a fast lane."""
    for item in items:
        if DOCKER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.docker)
        if BROWSER_DIR in item.path.parents:
            item.add_marker(pytest.mark.browser)


def _flock(name: str, operation: int) -> int:
    fd = os.open(Path(os.environ["BERTH_TEST_DATA_DIR"]) / name, os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, operation)
    return fd


@pytest.fixture(autouse=True)
def _machine_share(request):
    """Under pytest-xdist, a test marked `alone` has the machine to itself.

    Every other test holds a shared lock on a file of this run; an `alone` test
    takes it exclusively, holding a gate meanwhile so that no new test slips in
    while it waits for those already running to end.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    alone = request.node.get_closest_marker("alone") is not None
    gate = _flock("gate.lock", fcntl.LOCK_EX)
    try:
        share = _flock("machine.lock", fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
    finally:
        if not alone:
            os.close(gate)
    try:
        yield
    finally:
        os.close(share)
        if alone:
            os.close(gate)


# Lasts the whole run in the data dir: keys, the instance id, the database, static files.
KEPT_STATE = {"encryption_key", "secret_key", "instance_id", "static", "locks"}


@pytest.fixture(autouse=True)
def _fresh_state():
    """Each test starts with no snapshots, journals, volumes or caches of an earlier one,
    and in the site's language.

    A test is one transaction that is rolled back: the files its rows pointed
    to stay on disk (the removal waits for a commit that never comes), and on
    SQLite the next test's rows get the same ids. So the data dir's state is
    rolled back too.
    """
    yield
    # A request in Russian leaves its language active in this thread (LocaleMiddleware
    # does not put it back): the next test starts in the site's language again.
    translation.activate(settings.LANGUAGE_CODE)
    for entry in settings.DATA_DIR.iterdir():
        if entry.name in KEPT_STATE or ".sqlite3" in entry.name:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


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
        [str(REPO_ROOT / "scripts" / "move-test-tag.sh"), version, "current",
         images.CURRENT_REPOSITORY],
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


# --- commits inside the test's transaction ---------------------------------

@pytest.fixture
def commits_as_in_production(monkeypatch):
    """The test's own transaction is invisible to on_commit, as in production.

    A non-transactional test runs inside a transaction that is rolled back,
    so nothing the code under test queues for its commit (a deploy, a
    capture, a restore: run at once under BERTH_TASKS_SYNC; a file's removal)
    would ever run. With this fixture a callback runs when the code's own
    outermost atomic block ends, or at once outside any, as it would in
    production; a rolled-back block drops its callbacks, as Django does. It
    spares the test a transactional test's flush of every table.
    """
    from django.db.backends.base.base import BaseDatabaseWrapper
    from django.db.transaction import Atomic, get_connection

    def only_the_tests(connection) -> bool:
        return all(getattr(block, "_from_testcase", False) for block in connection.atomic_blocks)

    def run_pending(connection) -> None:
        while connection.run_on_commit:
            _savepoints, callback, robust = connection.run_on_commit.pop(0)
            run(callback, robust)

    def run(callback, robust) -> None:
        if not robust:
            callback()
            return
        try:
            callback()
        except Exception:  # noqa: BLE001 - Django logs and goes on for robust callbacks
            import logging

            logging.getLogger("django.db.backends.base").exception("robust on_commit failed")

    on_commit, exit_ = BaseDatabaseWrapper.on_commit, Atomic.__exit__

    def immediate_on_commit(self, func, robust=False):
        if self.in_atomic_block and only_the_tests(self):
            run(func, robust)
        else:
            on_commit(self, func, robust)

    def exit_and_commit(self, exc_type, exc_value, traceback):
        outcome = exit_(self, exc_type, exc_value, traceback)
        connection = get_connection(self.using)
        if (not getattr(self, "_from_testcase", False) and connection.in_atomic_block
                and only_the_tests(connection)):
            run_pending(connection)
        return outcome

    monkeypatch.setattr(BaseDatabaseWrapper, "on_commit", immediate_on_commit)
    monkeypatch.setattr(Atomic, "__exit__", exit_and_commit)


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
