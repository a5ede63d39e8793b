"""A repository's credential never follows an HTTP redirect to another server.

git sends the header configured for the URL it started from with every
request of the fetch, wherever a redirect sent it: Berth does not let git
follow redirects at all, and says so when a repository answers with one.
"""

from __future__ import annotations

import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from engine import deploys
from lib import gitcache
from tests.fixtures.gitrepo import GitRepo
from tests.fixtures.gitserver import GitServer, _certificate, https_git_server
from tests.workloads.test_git_deploys import remove_built_images
from workloads.models import DeployLog, DeployRecord, Workload

USERNAME = "deploy-bot-51aa"
PASSWORD = "ghp-redirected-token-0b3e"  # noqa: S105 - the value under test


@contextmanager
def redirecting_server(cert: Path, key: Path, target: str) -> Iterator[list[tuple[str, str]]]:
    """An https server that answers every request with a 302 to `target` + its path."""
    seen: list[tuple[str, str]] = []

    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            seen.append((self.requestline, self.headers.get("Authorization", "")))
            self.send_response(302)
            self.send_header("Location", target.rstrip("/") + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_GET

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    httpd.url = f"https://127.0.0.1:{httpd.server_port}/"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd, seen
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Iterator[tuple[GitServer, str, list]]:
    """Another server holding a repository (it wants the same credential, as an attacker's
    would accept anything), and a server that redirects there: (other, redirecting URL, seen)."""
    work = GitRepo(tmp_path / "work")
    work.serve("redirected\n")
    root = tmp_path / "served"
    root.mkdir()
    subprocess.run(
        ["git", "clone", "--quiet", "--bare", str(work.path), str(root / "app.git")], check=True
    )
    with https_git_server(root, username=USERNAME, password=PASSWORD) as other:
        (tmp_path / "redirect").mkdir()
        cert, key = _certificate(tmp_path / "redirect")
        # One CA file for both servers' certificates.
        bundle = tmp_path / "bundle.pem"
        bundle.write_bytes(other.ca_file.read_bytes() + cert.read_bytes())
        monkeypatch.setenv("GIT_SSL_CAINFO", str(bundle))
        with redirecting_server(cert, key, other.url) as (httpd, seen):
            yield other, httpd.url + "app.git", seen


def test_git_is_told_never_to_follow_a_redirect():
    env = gitcache._environment("https://git.example.com/app.git")
    config = {
        env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"]
        for i in range(int(env["GIT_CONFIG_COUNT"]))
    }
    assert config["http.followRedirects"] == "false"


def test_a_redirect_fails_the_fetch_and_the_credential_stays_home(elsewhere):
    other, url, seen = elsewhere
    cache = gitcache.ensure_cache(9301)
    try:
        with pytest.raises(gitcache.FetchFailed) as caught:
            gitcache.fetch(cache, url, gitcache.Credential(USERNAME, PASSWORD))
        with pytest.raises(gitcache.FetchFailed):
            gitcache.fetch(cache, url)
    finally:
        gitcache.remove_cache(9301)

    assert other.requests == []
    assert seen and seen[0][0].startswith("GET /app.git/info/refs")
    assert caught.value.code == "fetch_failed"
    assert "redirect" in caught.value.raw and "use the URL it redirects to" in caught.value.raw
    assert PASSWORD not in caught.value.raw


@pytest.mark.django_db
@pytest.mark.usefixtures("commits_as_in_production")
def test_a_deploy_from_a_redirecting_repository_fails_the_fetch(
    docker, elsewhere, make_workload
):
    other, url, _seen = elsewhere
    workload = make_workload(
        image="", source_kind=Workload.SourceKind.GIT, git_ref="main",
        git_url=url.replace("https://", f"https://{USERNAME}:{PASSWORD}@"),
    )
    try:
        record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    finally:
        gitcache.remove_cache(workload.pk)
        remove_built_images()
    record.refresh_from_db()

    assert (record.outcome, record.failure_code) == ("failed", "fetch_failed")
    assert other.requests == []
    log = DeployLog.objects.get(deploy=record).text
    assert "Berth does not follow" in log
    assert PASSWORD not in log
