"""file:// repositories cannot reach Berth's own repository caches (or anything else
outside BERTH_GIT_FILE_ROOTS): not through a gitfile, alternates, commondir, a
symbolic link, or another process's root under /proc.

Each test plants a "victim" commit in one workload's cache, then tries to read
it into another workload's cache through a repository the attacker controls.
The checks run when the URL is validated and again right before each fetch,
so a repository changed after it was validated is refused too.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from lib import gitcache, giturls, runtime
from tests.fixtures import images
from tests.fixtures.gitrepo import AUTHOR, GitRepo
from tests.workloads.test_git_deploys import deploy
from workloads.models import DeployRecord, Workload

VICTIM, ATTACKER = 9001, 9002


@pytest.fixture
def victim(tmp_path) -> tuple[Path, str]:
    """A workload's cache holding a private commit; its (cache, commit id)."""
    source = GitRepo(tmp_path / "victim-src")
    sha = source.commit({"secret.txt": "victim private code\n"})
    cache = gitcache.ensure_cache(VICTIM)
    gitcache.fetch(cache, source.url)
    gitcache.pin(cache, sha)
    # Only the cache has it now: the attacker cannot simply read the source.
    subprocess.run(["rm", "-rf", str(source.path)], check=True)
    yield cache, sha
    gitcache.remove_cache(VICTIM)
    gitcache.remove_cache(ATTACKER)


def bare(path: Path) -> Path:
    subprocess.run(["git", "init", "--quiet", "--bare", str(path)], check=True, env=AUTHOR)
    return path


def refused(url: str, sha: str) -> gitcache.FetchFailed:
    """The URL fails validation, and both fetches refuse it without reading the victim."""
    with pytest.raises(ValidationError):
        giturls.validate_url(url)
    attacker = gitcache.ensure_cache(ATTACKER)
    with pytest.raises(gitcache.FetchFailed) as caught:
        gitcache.fetch(attacker, url)
    with pytest.raises(gitcache.FetchFailed):
        gitcache.fetch_commit(attacker, url, sha)
    assert not gitcache.has_commit(attacker, sha)
    return caught.value


def test_a_plain_repository_inside_the_roots_is_fetched(tmp_path):
    repo = GitRepo(tmp_path / "repo")
    sha = repo.commit({"a": "1"})
    giturls.validate_url(repo.url)
    cache = gitcache.ensure_cache(ATTACKER)
    try:
        gitcache.fetch(cache, repo.url)
        assert gitcache.resolve(cache, "main") == sha
    finally:
        gitcache.remove_cache(ATTACKER)


def test_a_gitfile_pointing_at_another_workloads_cache_is_refused(victim, tmp_path):
    cache, sha = victim
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / ".git").write_text(f"gitdir: {cache}\n")

    error = refused(f"file://{evil}", sha)

    assert "file" in error.raw and ".git" in error.raw


def test_a_gitfile_planted_after_validation_is_refused_at_fetch_time(victim, tmp_path):
    cache, sha = victim
    evil = tmp_path / "evil"
    evil.mkdir()
    giturls.validate_url(f"file://{evil}")  # an empty directory, nothing to refuse yet
    (evil / ".git").write_text(f"gitdir: {cache}\n")

    attacker = gitcache.ensure_cache(ATTACKER)
    with pytest.raises(gitcache.FetchFailed):
        gitcache.fetch_commit(attacker, f"file://{evil}", sha)
    assert not gitcache.has_commit(attacker, sha)


@pytest.mark.parametrize("suffix", [".git", ".git/.git"])
def test_a_gitfile_git_would_find_by_suffix_is_refused(victim, tmp_path, suffix):
    """git also tries `<path>.git` and `<path>.git/.git` for a path that is no repository."""
    cache, sha = victim
    target = tmp_path / f"evil{suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(f"gitdir: {cache}\n")

    refused(f"file://{tmp_path / 'evil'}", sha)


@pytest.mark.parametrize(
    "pointer", ["objects/info/alternates", "objects/info/http-alternates", "commondir"],
)
def test_a_repository_borrowing_another_ones_objects_is_refused(victim, tmp_path, pointer):
    cache, sha = victim
    evil = bare(tmp_path / "evil.git")
    target = f"{cache}/objects" if "alternates" in pointer else str(cache)
    (evil / pointer).write_text(target + "\n")
    (evil / "refs/heads/x").write_text(sha + "\n")

    error = refused(f"file://{evil}", sha)

    assert "another repository" in error.raw


def test_alternates_in_a_working_trees_git_directory_are_refused(victim, tmp_path):
    cache, sha = victim
    repo = GitRepo(tmp_path / "evil")
    repo.commit({"a": "1"})
    (repo.path / ".git/objects/info/alternates").write_text(f"{cache}/objects\n")

    refused(repo.url, sha)


def test_a_symlinked_object_store_is_refused(victim, tmp_path):
    cache, sha = victim
    evil = bare(tmp_path / "evil.git")
    subprocess.run(["rm", "-rf", str(evil / "objects")], check=True)
    (evil / "objects").symlink_to(cache / "objects")
    (evil / "refs/heads/x").write_text(sha + "\n")

    error = refused(f"file://{evil}", sha)

    assert "data directory" in error.raw


def test_a_symlinked_pack_inside_the_object_store_is_refused(victim, tmp_path):
    cache, sha = victim
    subprocess.run(["git", f"--git-dir={cache}", "repack", "-a", "-d", "-q"], check=True)
    evil = bare(tmp_path / "evil.git")
    for pack in (cache / "objects/pack").iterdir():
        (evil / "objects/pack" / pack.name).symlink_to(pack)
    (evil / "refs/heads/x").write_text(sha + "\n")

    refused(f"file://{evil}", sha)


def test_another_processs_root_under_proc_is_refused(victim, tmp_path, docker):
    """/proc/<pid>/root is a container's own root: its real path names something else."""
    cache, sha = victim
    container = subprocess.run(
        ["docker", "run", "-d", "--rm", "--label", runtime.instance_label(),
         images.BUSYBOX, "sleep", "120"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    try:
        evil = tmp_path / "evil"
        evil.mkdir()
        (evil / ".git").write_text(f"gitdir: {cache}\n")
        subprocess.run(["docker", "cp", str(evil), f"{container}:/evil"], check=True)
        pid = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Pid}}", container],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        link = tmp_path / "link"
        link.symlink_to(f"/proc/{pid}/root")

        refused(f"file:///proc/{pid}/root/evil", sha)
        refused(f"file://{link}/evil", sha)
        with override_settings(BERTH_GIT_FILE_ROOTS=["/"]):
            refused(f"file://{link}/evil", sha)
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)


@pytest.mark.django_db
@pytest.mark.usefixtures("commits_as_in_production")
@pytest.mark.parametrize("roots", [[], ["/srv/git"]])
def test_a_deploy_of_a_file_repository_outside_the_roots_fails_saying_so(
    make_workload, tmp_path, caplog, roots
):
    repo = GitRepo(tmp_path / "repo")
    repo.serve("never built\n")
    workload = make_workload(
        image="", source_kind=Workload.SourceKind.GIT, git_url=repo.url, git_ref="main"
    )
    try:
        with override_settings(BERTH_GIT_FILE_ROOTS=roots):
            record = deploy(workload)
        assert not (gitcache.cache_path(workload.pk) / "HEAD").exists()
    finally:
        gitcache.remove_cache(workload.pk)

    assert (record.outcome, record.failure_code) == (
        DeployRecord.Outcome.FAILED, DeployRecord.Failure.INVALID_CONFIG,
    )
    assert "BERTH_GIT_FILE_ROOTS" in caplog.text


@pytest.mark.django_db
@pytest.mark.usefixtures("commits_as_in_production")
def test_a_deploy_through_a_gitfile_fails_before_git_runs(victim, make_workload, tmp_path):
    cache, sha = victim
    evil = tmp_path / "evil"
    evil.mkdir()
    workload = make_workload(
        image="", source_kind=Workload.SourceKind.GIT, git_url=f"file://{evil}", git_ref=sha
    )
    (evil / ".git").write_text(f"gitdir: {cache}\n")
    try:
        record = deploy(workload)
        assert not gitcache.has_commit(gitcache.cache_path(workload.pk), sha)
    finally:
        gitcache.remove_cache(workload.pk)

    assert (record.outcome, record.failure_code) == (
        DeployRecord.Outcome.FAILED, DeployRecord.Failure.INVALID_CONFIG,
    )
