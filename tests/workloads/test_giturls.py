"""Git source settings: credentials out of URLs, and the allow-lists that keep every
value from becoming an option, another protocol or a path outside the repository."""

from __future__ import annotations

import os

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.test import override_settings

from lib import giturls
from lib.redact import MASK, redact_url_credentials

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("url", "clean", "username", "password"),
    [
        ("https://bot:s3cret@github.com/org/app.git", "https://github.com/org/app.git",
         "bot", "s3cret"),
        ("https://ghp_token@github.com/org/app.git", "https://github.com/org/app.git",
         "ghp_token", ""),
        ("https://bot:p%40ss%3Aword@host:8443/app.git", "https://host:8443/app.git",
         "bot", "p@ss:word"),
        ("  https://a:b@host/x.git  ", "https://host/x.git", "a", "b"),
        ("ssh://git:hunter2@host/org/app.git", "ssh://git@host/org/app.git", "git", "hunter2"),
        ("file://u:p@/srv/repo", "file:///srv/repo", "u", "p"),
        ("https://bot:pw@[::1]:3000/x.git", "https://[::1]:3000/x.git", "bot", "pw"),
    ],
)
def test_it_takes_the_credential_out_of_a_url(url, clean, username, password):
    split = giturls.split_credential(url)
    assert (split.url, split.username, split.password) == (clean, username, password)
    assert split.had_credential


@pytest.mark.parametrize(
    "url", ["https://github.com/org/app.git", "ssh://git@github.com/org/app.git",
            "file:///srv/repo", "https://host/path/with@at.git", "not a url"],
)
def test_it_leaves_a_url_without_credential_alone(url):
    split = giturls.split_credential(url)
    assert (split.url, split.had_credential) == (url.strip(), False)


@pytest.mark.parametrize(
    "url",
    ["https://github.com/org/app.git", "https://git.example.com:8443/team/app",
     "ssh://git@github.com/org/app.git", "ssh://deploy@10.0.0.5:2222/srv/app.git",
     "ssh://host/app.git", "file:///srv/git/app.git", "file://localhost/srv/git/app"],
)
def test_it_accepts_https_ssh_and_file_urls(url):
    with override_settings(BERTH_GIT_FILE_ROOTS=["/srv/git"]):
        giturls.validate_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "", "http://github.com/org/app.git", "git://github.com/org/app.git",
        "ext::sh -c touch% /tmp/pwned", "git@github.com:org/app.git", "/srv/git/app.git",
        "ftp://host/app.git", "fd::17", "https://", "https:///no-host",
        "ssh://-oProxyCommand=touch%20x/app", "ssh://-oProxyCommand=x@host/app",
        "https://host/app.git?private_token=x", "https://host/app.git#frag",
        "https://host/app repo.git", "https://host/app.git\n", "https://host:99999/app",
        "https://host:abc/app", "https://user:pw@host/app.git", "https://host",
        "ssh://host/-upload-pack=x", "file://otherhost/srv/app", "file:///srv/../etc",
        "file:relative/path", "https://ho st/app", "HTTPS://" + "a" * 600,
    ],
)
def test_it_refuses_other_schemes_options_and_malformed_urls(url):
    with pytest.raises(ValidationError):
        giturls.validate_url(url)


def test_it_refuses_a_file_url_into_the_data_dir():
    with pytest.raises(ValidationError, match="data directory"):
        giturls.validate_url(f"file://{settings.DATA_DIR}/git/1")


# --- file:// repositories: BERTH_GIT_FILE_ROOTS ------------------------------

def test_file_urls_are_off_until_an_operator_lists_where_they_may_be(tmp_path):
    with override_settings(BERTH_GIT_FILE_ROOTS=[]), \
            pytest.raises(ValidationError, match="BERTH_GIT_FILE_ROOTS") as caught:
        giturls.validate_url(f"file://{tmp_path}/repo")
    assert "disabled" in caught.value.messages[0]
    # A relative entry names no directory: still off.
    with override_settings(BERTH_GIT_FILE_ROOTS=["srv/git"]), \
            pytest.raises(ValidationError, match="disabled"):
        giturls.validate_url("file:///srv/git/app")


@pytest.mark.parametrize(
    "url", ["file:///srv/other/app", "file:///srv/gitx/app", "file:///srv", "file:///"],
)
def test_a_file_url_must_lie_inside_an_allowed_root(url):
    with override_settings(BERTH_GIT_FILE_ROOTS=["/srv/git", "/opt/repos"]), \
            pytest.raises(ValidationError):
        giturls.validate_url(url)


@pytest.mark.parametrize(
    "path", ["/proc/1/root/srv/app", "/proc/self/root/tmp/app", "/sys/kernel", "/dev/shm/app"],
)
def test_a_file_url_is_never_in_proc_sys_or_dev_whatever_the_roots(path):
    with override_settings(BERTH_GIT_FILE_ROOTS=["/"]), \
            pytest.raises(ValidationError, match="/proc, /sys or /dev"):
        giturls.validate_url(f"file://{path}")


def test_a_file_url_never_overlaps_the_data_dir_even_inside_an_allowed_root():
    data = str(settings.DATA_DIR)
    with override_settings(BERTH_GIT_FILE_ROOTS=["/"]):
        with pytest.raises(ValidationError, match="data directory"):
            giturls.validate_url(f"file://{data}/git/1")
        with pytest.raises(ValidationError, match="data directory"):
            # A repository around the data dir could reach it through a link.
            giturls.validate_url(f"file://{os.path.dirname(data)}")


def test_a_symlink_inside_a_root_cannot_lead_out_of_it(tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "to-data").symlink_to(settings.DATA_DIR)
    (allowed / "to-etc").symlink_to("/etc")
    (allowed / "inside").symlink_to(allowed)
    with override_settings(BERTH_GIT_FILE_ROOTS=[str(allowed)]):
        with pytest.raises(ValidationError, match="data directory"):
            giturls.validate_url(f"file://{allowed}/to-data/git/1")
        with pytest.raises(ValidationError, match="outside"):
            giturls.validate_url(f"file://{allowed}/to-etc")
        giturls.validate_url(f"file://{allowed}/inside/app")


@pytest.mark.parametrize("path", ["/srv/git/%ff%fe", "/srv/git/a/%2e%2e/%2e%2e/etc"])
def test_a_file_url_is_decoded_as_git_decodes_it_or_refused(path):
    with override_settings(BERTH_GIT_FILE_ROOTS=["/srv/git"]), pytest.raises(ValidationError):
        giturls.validate_url(f"file://{path}")


def test_its_messages_never_repeat_the_url():
    with pytest.raises(ValidationError) as caught:
        giturls.validate_url("ftp://user:topsecret@host/app.git")
    assert "topsecret" not in str(caught.value)


@pytest.mark.parametrize(
    "ref", ["main", "feature/login-v2", "v1.0.3", "release_2024", "refs/tags/v1", SHA, "abc1234"],
)
def test_it_accepts_branches_tags_and_commits(ref):
    giturls.validate_ref(ref)


@pytest.mark.parametrize(
    "ref",
    ["", "-x", "--upload-pack=touch /tmp/x", "main..evil", "main@{1}", "a b", "feat/",
     "x.lock", "/main", ".hidden", "a/.b", "a//b", "x:y", "x~1", "x^", "*", "a?", "[a]",
     "a\\b", "main\n", "trailing.", "x" * 256],
)
def test_it_refuses_refs_git_could_misread(ref):
    with pytest.raises(ValidationError):
        giturls.validate_ref(ref)


@pytest.mark.parametrize("path", ["Dockerfile", "docker/Dockerfile.prod", "a-b/c_d/e.f"])
def test_it_accepts_relative_paths_inside_the_repository(path):
    giturls.validate_repo_path(path, allow_root=False)


@pytest.mark.parametrize("path", [".", ""])
def test_the_build_context_may_be_the_root(path):
    giturls.validate_repo_path(path, allow_root=True)
    with pytest.raises(ValidationError):
        giturls.validate_repo_path(path, allow_root=False)


@pytest.mark.parametrize(
    "path",
    ["../Dockerfile", "/etc/passwd", "a/../../b", "-f", "--file=x", "a//b", "./x", "a/./b",
     "a\\b", "a b", "x\x00", "a/"],
)
def test_it_refuses_paths_that_leave_the_repository_or_look_like_options(path):
    with pytest.raises(ValidationError):
        giturls.validate_repo_path(path, allow_root=True)


@pytest.mark.parametrize(
    "args",
    [[], {"1X": "a"}, {"A-B": "a"}, {"A": 1}, {"A": None}, {"A": "x" * 5000},
     {f"A{i}": "" for i in range(65)}, {"A": "a\x00"}],
)
def test_it_refuses_bad_build_args(args):
    with pytest.raises(ValidationError):
        giturls.validate_build_args(args)


def test_it_accepts_build_args():
    giturls.validate_build_args({"VERSION": "1.4", "_X": "", "HTTP_PROXY": "http://proxy:3128"})


@pytest.mark.parametrize(
    ("url", "page"),
    [
        ("https://github.com/org/app.git", f"https://github.com/org/app/commit/{SHA}"),
        ("ssh://git@github.com/org/app.git", f"https://github.com/org/app/commit/{SHA}"),
        ("https://gitlab.com/group/sub/app", f"https://gitlab.com/group/sub/app/-/commit/{SHA}"),
        ("https://codeberg.org/org/app.git", f"https://codeberg.org/org/app/commit/{SHA}"),
        ("https://bitbucket.org/team/app.git", f"https://bitbucket.org/team/app/commits/{SHA}"),
        ("https://GitHub.com/org/app.git", f"https://github.com/org/app/commit/{SHA}"),
        ("https://github.com.evil.example/org/app", None),
        ("https://github.com:8443/org/app", None),
        ("https://github.com/org", None),
        ("https://github.com/org/app%22onclick.git", None),
        ("https://git.example.com/org/app.git", None),
        ("file:///srv/github.com/org/app", None),
    ],
)
def test_it_links_commits_on_known_forges_only(url, page):
    assert giturls.commit_url(url, SHA) == page


def test_it_masks_url_credentials_it_does_not_know():
    text = (
        "clone https://someone:hunter2@example.com/x and https://tok3n@host/y, "
        "ssh://git:pw@host/z, ssh://git@host/keep"
    )
    assert redact_url_credentials(text) == (
        f"clone https://{MASK}@example.com/x and https://{MASK}@host/y, "
        f"ssh://git:{MASK}@host/z, ssh://git@host/keep"
    )
