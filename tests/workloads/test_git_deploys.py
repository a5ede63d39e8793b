"""Git-built workloads against the real engine: local file:// repositories, real builds.

Every repository is made by the test in tmp_path and builds FROM the local
registry's busybox image; what a container serves on / tells which commit
its image was built from.
"""

from __future__ import annotations

import re
import subprocess

import pytest
from django.conf import settings
from django.test import override_settings

from engine import deploys
from engine.locked import sources
from engine.locked.deploy import dispatch_locked
from lib import gitcache, locks, runtime
from tests.conftest import remove_test_containers
from tests.fixtures.gitrepo import GitRepo, dockerfile
from workloads.models import DeployLog, DeployRecord, Workload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]
Reason, Outcome, Failure = DeployRecord.Reason, DeployRecord.Outcome, DeployRecord.Failure


@pytest.fixture
def built_images(docker):
    """Remove the images this test built (found by this run's instance label) afterwards."""
    yield
    remove_built_images()


def remove_built_images() -> None:
    """Remove this run's containers, then the images it built (a running one pins its image)."""
    remove_test_containers()
    ids = subprocess.run(
        ["docker", "images", "-q", "--filter",
         f"label={runtime.IMAGE_LABEL_PREFIX}instance={settings.BERTH_INSTANCE_ID}"],
        capture_output=True, text=True, check=False,
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rmi", "-f", *set(ids)], capture_output=True, check=False)


@pytest.fixture
def repo(tmp_path) -> GitRepo:
    return GitRepo(tmp_path / "repo")


@pytest.fixture
def make_git_workload(make_workload):
    def make(repo: GitRepo, **fields) -> Workload:
        fields.setdefault("git_url", repo.url)
        fields.setdefault("git_ref", "main")
        return make_workload(image="", source_kind=Workload.SourceKind.GIT, **fields)

    return make


def serving(workload: Workload) -> str:
    """What the workload's one running container serves on /."""
    [container] = runtime.list_containers(workload.pk)
    assert container.running
    return subprocess.run(
        ["docker", "exec", container.id, "wget", "-qO-", "http://127.0.0.1:80/"],
        capture_output=True, text=True, check=True,
    ).stdout


def running_container_ids(workload: Workload) -> list[str]:
    return sorted(c.id for c in runtime.list_containers(workload.pk) if c.running)


def image_of(container_id: str) -> str:
    return subprocess.run(
        ["docker", "inspect", "--format", "{{.Image}}", container_id],
        capture_output=True, text=True, check=True,
    ).stdout.strip()


def deploy(workload: Workload, reason=Reason.MANUAL) -> DeployRecord:
    record = deploys.dispatch(workload=workload, reason=reason)
    record.refresh_from_db()
    return record


# --- deploy, commit again, roll back ---------------------------------------

def test_it_deploys_a_branch_then_rolls_back_by_commit_even_after_the_image_is_gone(
    built_images, repo, make_git_workload
):
    first_sha = repo.serve("first commit\n")
    workload = make_git_workload(repo)

    first = deploy(workload)

    assert (first.outcome, first.failure_code) == (Outcome.SUCCEEDED, ""), first.failure_code
    assert (first.source_kind, first.requested_reference) == ("git", "main")
    assert first.pinned_reference == first_sha
    assert first.image_id.startswith("sha256:")
    assert first.repository == repo.url
    assert serving(workload) == "first commit\n"
    [container] = runtime.list_containers(workload.pk)
    assert image_of(container.id) == first.image_id
    tag = sources.image_tag(workload, first_sha)
    assert tag == f"berth/{workload.stage.project.slug}-prod-web:{first_sha}"
    assert runtime.image_exists(tag)
    workload.refresh_from_db()
    assert workload.running_reference == f"main@{first_sha}"
    assert (workload.running_commit, workload.running_git_ref) == (first_sha, "main")

    second_sha = repo.serve("second commit\n")
    second = deploy(workload)
    assert second.outcome == Outcome.SUCCEEDED, second.failure_code
    assert second.pinned_reference == second_sha != first_sha
    assert serving(workload) == "second commit\n"

    # The branch moves on again, and the first commit's image leaves the engine.
    repo.serve("third commit, never deployed\n")
    subprocess.run(["docker", "rmi", "-f", first.image_id], capture_output=True, check=True)
    assert not runtime.image_exists(first.image_id)

    rolled = deploys.rollback(workload=workload, deploy_id=first.pk)

    rolled.refresh_from_db()
    assert (rolled.reason, rolled.outcome) == (Reason.ROLLBACK, Outcome.SUCCEEDED), (
        rolled.failure_code
    )
    assert rolled.rolled_back_from_id == first.pk
    assert rolled.requested_reference == f"main@{first_sha}"
    assert rolled.pinned_reference == first_sha
    assert serving(workload) == "first commit\n"
    assert "rebuilding it" in rolled.build_log.text
    assert rolled.image_id != first.image_id  # rebuilt: a new image of the same commit
    workload.refresh_from_db()
    assert workload.running_reference == f"main@{first_sha}"


def test_a_rollback_reuses_the_commits_image_without_touching_the_repository(
    built_images, repo, make_git_workload
):
    repo.serve("first\n")
    workload = make_git_workload(repo)
    first = deploy(workload)
    repo.serve("second\n")
    assert deploy(workload).outcome == Outcome.SUCCEEDED
    # The repository goes away entirely: the engine still has the first image.
    Workload.objects.filter(pk=workload.pk).update(git_url=f"{repo.url}-gone")

    # The code only: a rollback with configuration would set the old URL back.
    rolled = deploys.rollback(workload=workload, deploy_id=first.pk, configuration=False)

    rolled.refresh_from_db()
    assert rolled.outcome == Outcome.SUCCEEDED, rolled.failure_code
    assert rolled.image_id == first.image_id
    assert "reusing its image" in rolled.build_log.text
    assert serving(workload) == "first\n"
    assert image_of(runtime.list_containers(workload.pk)[0].id) == first.image_id


def test_a_rollback_with_configuration_configures_the_commit_and_its_settings(
    built_images, repo, make_git_workload
):
    repo.serve("first\n")
    workload = make_git_workload(repo, build_args={"VERSION": "1"})
    first = deploy(workload)
    repo.serve("second\n")
    Workload.objects.filter(pk=workload.pk).update(build_args={"VERSION": "2"})
    assert deploy(workload).outcome == Outcome.SUCCEEDED

    rolled = deploys.rollback(workload=workload, deploy_id=first.pk)

    assert rolled.outcome == Outcome.SUCCEEDED, rolled.failure_code
    workload.refresh_from_db()
    assert (workload.git_ref, workload.build_args) == (first.commit, {"VERSION": "1"})
    # The next plain deploy asks for the commit itself: it does not go forward.
    after = deploy(workload)
    assert after.outcome == Outcome.SUCCEEDED, after.failure_code
    assert after.pinned_reference == first.pinned_reference
    assert serving(workload) == "first\n"


def test_a_restore_style_replay_of_the_running_reference_reuses_the_running_image(
    built_images, repo, make_git_workload
):
    repo.serve("only\n")
    workload = make_git_workload(repo)
    first = deploy(workload)
    workload.refresh_from_db()

    # What restore will do: redeploy exactly what runs, under the lock.
    with locks.workload_lock(workload.pk):
        again = dispatch_locked(
            workload=workload, reason=Reason.RESTORE, reference=workload.running_reference
        )

    assert again.outcome == Outcome.SUCCEEDED, again.failure_code
    assert (again.pinned_reference, again.image_id) == (first.pinned_reference, first.image_id)
    assert serving(workload) == "only\n"


def test_a_rollback_survives_a_force_push_because_the_cache_keeps_built_commits(
    built_images, repo, make_git_workload
):
    base = repo.commit({"README": "base\n"}, "base")
    repo.serve("kept\n")
    workload = make_git_workload(repo)
    first = deploy(workload)
    repo.serve("next\n")
    assert deploy(workload).outcome == Outcome.SUCCEEDED
    repo.rewind_to(base)  # both deployed commits are gone upstream
    subprocess.run(["docker", "rmi", "-f", first.image_id], capture_output=True, check=True)

    rolled = deploys.rollback(workload=workload, deploy_id=first.pk)

    rolled.refresh_from_db()
    assert rolled.outcome == Outcome.SUCCEEDED, rolled.failure_code
    assert serving(workload) == "kept\n"


def test_a_rollback_to_a_commit_gone_everywhere_says_so_and_keeps_the_containers(
    built_images, repo, make_git_workload
):
    repo.serve("gone soon\n")
    workload = make_git_workload(repo)
    first = deploy(workload)
    repo.serve("survivor\n")
    second = deploy(workload)
    before = running_container_ids(workload)
    # Force-pushed away and garbage-collected upstream; Berth's cache and the
    # first image are lost too (a new data dir, an image prune).
    repo.git("checkout", "--quiet", "--orphan", "rewritten")
    repo.serve("rewritten history\n")
    repo.git("branch", "--quiet", "-D", "main")
    repo.git("branch", "--quiet", "-m", "main")
    repo.rewind_to("main")
    gitcache.remove_cache(workload.pk)
    subprocess.run(["docker", "rmi", "-f", first.image_id], capture_output=True, check=True)

    rolled = deploys.rollback(workload=workload, deploy_id=first.pk)

    rolled.refresh_from_db()
    assert (rolled.outcome, rolled.failure_code) == (Outcome.FAILED, Failure.COMMIT_MISSING)
    assert "no longer exists" in rolled.failure_message
    assert running_container_ids(workload) == before
    assert serving(workload) == "survivor\n"
    workload.refresh_from_db()
    assert workload.state == Workload.State.FAILED
    assert workload.running_reference == f"main@{second.pinned_reference}"


# --- failures: clear codes, previous containers still running ---------------

def broken_dockerfile(repo: GitRepo) -> None:
    repo.commit(
        {"Dockerfile": dockerfile(extra="RUN echo building-step-output && exit 3\n")},
        "breaks the build",
    )


FAILURES = {
    "unknown-ref": (lambda repo, w: setattr(w, "git_ref", "no-such-branch"), Failure.UNKNOWN_REF),
    "unknown-commit": (lambda repo, w: setattr(w, "git_ref", "f" * 40), Failure.UNKNOWN_REF),
    "broken-dockerfile": (lambda repo, w: broken_dockerfile(repo), Failure.BUILD_FAILED),
    "missing-dockerfile": (
        lambda repo, w: setattr(w, "git_dockerfile", "docker/Dockerfile.prod"), Failure.BUILD_FAILED
    ),
    "missing-context": (lambda repo, w: setattr(w, "git_context", "no/such/dir"),
                        Failure.BUILD_FAILED),
    "unreachable-repository": (
        lambda repo, w: setattr(w, "git_url", repo.url + "-moved"), Failure.FETCH_FAILED
    ),
    "unreachable-https": (
        lambda repo, w: setattr(w, "git_url", "https://127.0.0.1:9/nobody/repo.git"),
        Failure.FETCH_FAILED,
    ),
}


@pytest.mark.parametrize("case", FAILURES.values(), ids=FAILURES.keys())
def test_a_failed_git_deploy_is_recorded_and_keeps_the_previous_containers(
    built_images, repo, make_git_workload, case
):
    break_it, code = case
    repo.serve("good\n")
    workload = make_git_workload(repo)
    good = deploy(workload)
    assert good.outcome == Outcome.SUCCEEDED, good.failure_code
    before = running_container_ids(workload)

    break_it(repo, workload)
    workload.save()
    failed = deploy(workload)

    assert (failed.outcome, failed.failure_code) == (Outcome.FAILED, code)
    assert failed.failure_message == Failure(code).label
    assert failed.finished is not None
    assert running_container_ids(workload) == before
    assert serving(workload) == "good\n"
    workload.refresh_from_db()
    assert workload.state == Workload.State.FAILED
    assert workload.running_reference == f"main@{good.pinned_reference}"
    assert list(workload.deploys.values_list("outcome", flat=True)) == ["failed", "succeeded"]


def test_a_build_failure_keeps_the_log_with_the_failing_step(
    built_images, repo, make_git_workload
):
    broken_dockerfile(repo)
    repo.commit({"index.html": "x\n"})
    workload = make_git_workload(repo)

    failed = deploy(workload)

    assert failed.failure_code == Failure.BUILD_FAILED
    assert failed.pinned_reference == repo.head()  # the commit that failed to build
    assert not failed.can_be_rolled_back_to
    log = DeployLog.objects.get(deploy=failed)
    assert re.fullmatch(r"Step 3/\d+ : RUN echo building-step-output && exit 3", log.failed_step)
    assert "building-step-output" in log.text
    assert "returned a non-zero code: 3" in log.text
    assert log.text.startswith(f"berth: fetching {repo.url}\n")
    assert not log.truncated


def test_a_missing_build_context_is_the_failed_step(built_images, repo, make_git_workload):
    repo.serve("x\n")
    workload = make_git_workload(repo, git_context="no/such/dir")

    failed = deploy(workload)

    assert failed.failure_code == Failure.BUILD_FAILED
    assert failed.build_log.failed_step.startswith(
        "the build context no/such/dir is not a directory of commit"
    )


def test_a_dockerfile_parse_error_is_the_failed_step(built_images, repo, make_git_workload):
    repo.commit({"Dockerfile": f"FROM {dockerfile().splitlines()[0][5:]}\nNOPE x\n"})
    workload = make_git_workload(repo)

    failed = deploy(workload)

    assert failed.failure_code == Failure.BUILD_FAILED
    assert "unknown instruction: NOPE" in failed.build_log.failed_step


def test_it_builds_from_a_context_directory_with_build_args(
    built_images, repo, make_git_workload
):
    sha = repo.commit({
        "site/Dockerfile": (
            f"FROM {dockerfile().splitlines()[0][5:]}\n"
            "ARG GREETING\n"
            'RUN mkdir -p /www && echo "$GREETING from the context" > /www/index.html\n'
            "STOPSIGNAL SIGKILL\n"
            'CMD ["httpd", "-f", "-p", "80", "-h", "/www"]\n'
        ),
        "outside.txt": "not in the context\n",
    })
    workload = make_git_workload(
        repo, git_context="site", git_dockerfile="Dockerfile", build_args={"GREETING": "hello"}
    )

    record = deploy(workload)

    assert record.outcome == Outcome.SUCCEEDED, record.failure_code
    assert record.pinned_reference == sha
    assert serving(workload) == "hello from the context\n"


@pytest.mark.parametrize("ref", ["v1.0", "refs/tags/v1.0", "SHORT", "FULL"])
def test_it_resolves_tags_and_commit_ids(built_images, repo, make_git_workload, ref):
    tagged = repo.serve("tagged\n")
    repo.git("tag", "v1.0")
    repo.serve("later\n")
    ref = {"SHORT": tagged[:10], "FULL": tagged}.get(ref, ref)
    workload = make_git_workload(repo, git_ref=ref)

    record = deploy(workload)

    assert record.outcome == Outcome.SUCCEEDED, record.failure_code
    assert record.pinned_reference == tagged
    assert serving(workload) == "tagged\n"


def test_the_cache_is_fetched_incrementally_and_holds_no_url_or_credential(
    built_images, repo, make_git_workload
):
    repo.serve("one\n")
    workload = make_git_workload(repo)
    deploy(workload)
    cache = gitcache.cache_path(workload.pk)
    marker = cache / "berth-was-here"
    marker.write_text("the same cache, not a fresh clone")
    repo.serve("two\n")

    second = deploy(workload)

    assert second.outcome == Outcome.SUCCEEDED
    assert marker.exists()
    config = (cache / "config").read_text()
    assert repo.url not in config and "remote" not in config
    pins = subprocess.run(
        ["git", f"--git-dir={cache}", "for-each-ref", "--format=%(refname)", "refs/berth/"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert f"refs/berth/built/{second.pinned_reference}" in pins
    workload.delete()
    assert not cache.exists()  # removed with its workload, after the commit


def test_a_restore_after_the_ledger_was_pruned_reuses_the_running_image(
    built_images, repo, make_git_workload
):
    repo.serve("running\n")
    workload = make_git_workload(repo)
    with override_settings(BERTH_DEPLOY_HISTORY_KEEP=1):
        first = deploy(workload)
        workload.git_ref = "no-such-branch"
        workload.save()
        assert deploy(workload).failure_code == Failure.UNKNOWN_REF
        # Pruning keeps the newest finished row when a deploy is opened: the
        # second failure pushes the first deploy out.
        assert deploy(workload).failure_code == Failure.UNKNOWN_REF
        assert not DeployRecord.objects.filter(pk=first.pk).exists()  # pruned
        workload.refresh_from_db()

        with locks.workload_lock(workload.pk):
            again = dispatch_locked(
                workload=workload, reason=Reason.RESTORE, reference=workload.running_reference
            )

    again.refresh_from_db()
    assert again.outcome == Outcome.SUCCEEDED, again.failure_code
    assert again.image_id == first.image_id
    assert "reusing its image" in again.build_log.text
    assert serving(workload) == "running\n"


def test_a_commit_no_branch_reaches_is_fetched_by_id_where_the_server_allows(
    built_images, repo, make_git_workload
):
    repo.serve("on main\n")
    repo.git("checkout", "--quiet", "-b", "short-lived")
    loose = repo.serve("only on a deleted branch\n")
    repo.git("checkout", "--quiet", "main")
    repo.git("branch", "--quiet", "-D", "short-lived")
    repo.git("config", "uploadpack.allowAnySHA1InWant", "true")
    workload = make_git_workload(repo, git_ref=loose)

    record = deploy(workload)

    assert record.outcome == Outcome.SUCCEEDED, record.failure_code
    assert serving(workload) == "only on a deleted branch\n"
