"""How git is run: a scrubbed environment, the credential as a scoped header, a timeout."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import override_settings

from lib import gitcache
from tests.fixtures.gitserver import _certificate

CREDENTIAL = gitcache.Credential("bot", "pa55-0c4f")


def test_git_sees_none_of_berths_git_variables_but_its_own(monkeypatch):
    monkeypatch.setenv("GIT_TRACE_CURL", "1")
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'credential.helper'='store'")
    monkeypatch.setenv("GIT_DIR", "/elsewhere")
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "tests.settings")
    monkeypatch.setenv("GIT_SSL_CAINFO", "/etc/berth/forge-ca.pem")

    env = gitcache._environment()

    assert not {"GIT_TRACE_CURL", "GIT_CONFIG_PARAMETERS", "GIT_DIR"} & env.keys()
    assert "DJANGO_SETTINGS_MODULE" not in env
    assert env["GIT_SSL_CAINFO"] == "/etc/berth/forge-ca.pem"
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert env["GIT_CONFIG_GLOBAL"] == "/dev/null"
    assert env["GIT_ALLOW_PROTOCOL"] == "https:ssh:file"
    assert "BatchMode=yes" in env["GIT_SSH_COMMAND"]


def test_the_credential_is_a_header_scoped_to_the_repositorys_origin():
    env = gitcache._environment("https://git.example.com:8443/team/app.git", CREDENTIAL)

    config = {
        env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"]
        for i in range(int(env["GIT_CONFIG_COUNT"]))
    }
    assert config["http.https://git.example.com:8443/.extraHeader"] == CREDENTIAL.header()
    assert not any("extraHeader" in key and "8443" not in key for key in config)


@pytest.mark.parametrize("url", ["ssh://git@host/app.git", "file:///srv/app.git"])
def test_no_header_goes_to_ssh_or_file_repositories(url):
    env = gitcache._environment(url, CREDENTIAL)
    assert CREDENTIAL.header() not in env.values()


def test_the_credentials_secrets_cover_its_header_but_not_a_short_username():
    assert set(gitcache.Credential("git", "tok").secrets()) == {
        "tok", gitcache.Credential("git", "tok").header().removeprefix("Authorization: Basic ")
    }
    assert "deploy-bot" in gitcache.Credential("deploy-bot", "").secrets()


def test_a_fetch_that_hangs_is_killed_after_the_timeout(tmp_path):
    # A server that accepts connections and never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"https://127.0.0.1:{silent.getsockname()[1]}/app.git"
        with override_settings(DATA_DIR=tmp_path, BERTH_GIT_TIMEOUT=2):
            cache = gitcache.ensure_cache(1)
            started = time.monotonic()
            with pytest.raises(gitcache.FetchFailed) as caught:
                gitcache.fetch(cache, url, CREDENTIAL)
    assert caught.value.raw == "git fetch took longer than 2 s"
    assert time.monotonic() - started < 10


def test_a_missing_commit_is_not_in_the_cache(tmp_path):
    with override_settings(DATA_DIR=tmp_path):
        cache = gitcache.ensure_cache(7)
        assert cache == tmp_path / "git" / "7"
        assert oct(cache.stat().st_mode & 0o777) == "0o700"
        assert not gitcache.has_commit(cache, "a" * 40)
        assert not gitcache.has_commit(cache, "--not-a-sha")
        with pytest.raises(gitcache.UnknownRef):
            gitcache.resolve(cache, "main")


def test_every_git_command_is_told_not_to_follow_redirects():
    env = gitcache._environment()
    config = {
        env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"]
        for i in range(int(env["GIT_CONFIG_COUNT"]))
    }
    assert config["http.followRedirects"] == "false"


# --- a server that makes git print without end -------------------------------

def _pkt(data: bytes) -> bytes:
    return b"%04x" % (len(data) + 4) + data


MESSAGE = _pkt(b"\x02" + b"A" * 60000 + b"\n")  # one progress line ("remote: AAA…")


@contextmanager
def chatty_server(tmp_path, messages: int | None) -> Iterator[str]:
    """An https "git server" whose answer to a fetch is nothing but progress messages:
    `messages` of them, or (None) without end. Yields the repository URL."""

    class Chatty(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            body = (
                _pkt(b"# service=git-upload-pack\n") + b"0000"
                + _pkt(b"1" * 40 + b" refs/heads/main\0side-band-64k\n") + b"0000"
            )
            self.send_response(200)
            self.send_header("Content-Type", "application/x-git-upload-pack-advertisement")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-git-upload-pack-result")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                self._chunk(_pkt(b"NAK\n"))
                sent = 0
                while messages is None or sent < messages:
                    self._chunk(MESSAGE * 4)
                    sent += 4
                self._chunk(b"0000")
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass  # git is gone

        def _chunk(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")

    cert, key = _certificate(tmp_path)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Chatty)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("GIT_SSL_CAINFO", str(cert))
            yield f"https://127.0.0.1:{httpd.server_port}/app.git"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_only_the_tail_of_a_flood_of_git_messages_is_kept(tmp_path):
    with chatty_server(tmp_path, messages=160) as url, override_settings(DATA_DIR=tmp_path):
        cache = gitcache.ensure_cache(1)
        with pytest.raises(gitcache.FetchFailed) as caught:
            gitcache.fetch(cache, url)

    raw = caught.value.raw
    # About 9.6 MB were printed; 64 KiB and a note of what was dropped are kept.
    assert len(raw) <= gitcache.STDERR_TAIL + 100
    assert raw.startswith("[") and "earlier bytes of git's messages dropped]" in raw
    # The tail is where git says why it failed.
    assert "fatal:" in raw[-200:]


def test_a_flood_that_never_ends_is_killed_after_the_timeout(tmp_path):
    with chatty_server(tmp_path, messages=None) as url, \
            override_settings(DATA_DIR=tmp_path, BERTH_GIT_TIMEOUT=2):
        cache = gitcache.ensure_cache(1)
        started = time.monotonic()
        with pytest.raises(gitcache.FetchFailed) as caught:
            gitcache.fetch(cache, url)
    assert caught.value.raw == "git fetch took longer than 2 s"
    assert time.monotonic() - started < 10


def test_short_outputs_are_read_whole(tmp_path):
    with override_settings(DATA_DIR=tmp_path):
        cache = gitcache.ensure_cache(1)
        result = gitcache._git(cache, "rev-parse", "--git-dir")
    assert result.stdout.decode().strip() == str(cache)
    assert result.stderr == b""
