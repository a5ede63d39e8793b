"""How git is run: a scrubbed environment, the credential as a scoped header, a timeout."""

from __future__ import annotations

import socket
import time

import pytest
from django.test import override_settings

from workloads import gitcache

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
