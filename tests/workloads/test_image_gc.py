"""Image garbage collection (engine/images.py, manage.py prune_images) and .dockerignore in
git builds, against the real engine and registry.

Every image here is made by the test itself (built from a commit, or built and pushed to this
worker's own repository), so a collection never reaches an image another test or worker uses.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import uuid
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone
from django_q.models import Schedule

from engine import deploys, images, tasks
from engine.locked import sources
from lib import locks, runtime
from tests.fixtures import images as test_images
from tests.fixtures.gitrepo import GitRepo, dockerfile
from tests.workloads.test_git_deploys import remove_built_images
from workloads.models import DeployRecord, PulledImage, Workload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]
Outcome = DeployRecord.Outcome


@pytest.fixture
def built_images(docker):
    yield
    remove_built_images()


@pytest.fixture
def repo(tmp_path) -> GitRepo:
    return GitRepo(tmp_path / "repo")


def docker_build(text: str, tag: str) -> str:
    with tempfile.TemporaryDirectory() as context:
        (Path(context) / "Dockerfile").write_text(text)
        env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        subprocess.run(["docker", "build", "-q", "-t", tag, context], check=True,
                       capture_output=True, env=env)
    return runtime.image_id(tag)


def rmi(*references: str) -> None:
    subprocess.run(["docker", "rmi", "-f", *references], capture_output=True, check=False)


def git_workload(make_workload, repo: GitRepo) -> Workload:
    return make_workload(image="", source_kind=Workload.SourceKind.GIT, git_url=repo.url,
                         git_ref="main")


def deploy(workload: Workload, **kwargs) -> DeployRecord:
    record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL, **kwargs)
    record.refresh_from_db()
    assert record.outcome == Outcome.SUCCEEDED, record.failure_code
    return record


@override_settings(BERTH_IMAGE_KEEP=1, BERTH_DEPLOY_HISTORY_KEEP=2)
def test_it_keeps_what_a_rollback_needs_and_removes_the_rest(built_images, repo,
                                                             make_workload):
    workload = git_workload(make_workload, repo)
    built = []
    for n in range(5):
        repo.serve(f"commit {n}\n")
        built.append(deploy(workload))
    # The ledger prunes when a deploy opens: two finished rows, and the last one.
    kept_rows = list(workload.deploys.order_by("created", "id"))
    assert [r.pk for r in kept_rows] == [r.pk for r in built[2:]]

    report = images.prune()

    removed = {v.image.id for v in report.removed}
    assert removed == {r.image_id for r in built[:2]}
    assert report.bytes_freed == sum(v.image.size for v in report.removed) > 0
    assert not any(runtime.image_exists(r.image_id) for r in built[:2])
    assert all(runtime.image_exists(r.image_id) for r in built[2:])
    whys = {v.image.id: v.why for v in report.kept}
    assert whys[built[4].image_id] == "a container uses it"
    assert whys[built[2].image_id] == "a deploy in the history can roll back to it"

    rolled = deploys.rollback(workload=workload, deploy_id=built[2].pk)  # the oldest kept

    rolled.refresh_from_db()
    assert rolled.outcome == Outcome.SUCCEEDED, rolled.failure_code
    assert rolled.image_id == built[2].image_id  # its image was still there: reused
    assert "reusing its image" in rolled.build_log.text
    assert images.prune().removed == []  # nothing more to remove, and no error


def test_it_never_touches_an_image_berth_did_not_build_or_pull(built_images, repo,
                                                                make_workload):
    workload = git_workload(make_workload, repo)
    repo.serve("one\n")
    first = deploy(workload)
    repo.serve("two\n")
    deploy(workload)
    ours = first.image_id
    suffix = uuid.uuid4().hex[:10]
    by_hand = f"berth-gc-test-{suffix}:by-hand"
    # A tag of its own on one of Berth's images: the engine will not remove an image tagged
    # in two repositories without force, and force is never used.
    shared = f"berth-gc-test-{suffix}:shared"
    # Looks like a container of the workload committed to an image (a replica label), and
    # one of another instance's builds: neither is a build of this instance.
    committed = f"berth-gc-test-{suffix}:committed"
    foreign = f"berth-gc-test-{suffix}:foreign"
    try:
        hand_id = docker_build(f"FROM {test_images.BUSYBOX}\nLABEL gc.test={suffix}\n", by_hand)
        subprocess.run(["docker", "tag", ours, shared], check=True, capture_output=True)
        committed_id = docker_build(
            f"FROM {test_images.BUSYBOX}\nLABEL berth.instance={settings.BERTH_INSTANCE_ID}"
            f" berth.workload={workload.pk} berth.replica=1 berth.commit=x\n", committed)
        foreign_id = docker_build(
            f"FROM {test_images.BUSYBOX}\nLABEL berth.image.instance=someone-else-{suffix} "
            f"berth.image.workload={workload.pk}\n", foreign)

        with override_settings(BERTH_IMAGE_KEEP=1, BERTH_DEPLOY_HISTORY_KEEP=1):
            deploy(workload)  # the ledger now keeps one row: the first image is removable
            report = images.prune()

        assert {hand_id, committed_id, foreign_id}.isdisjoint(
            {v.image.id for v in report.removed + report.kept + report.skipped})
        assert all(runtime.image_exists(i) for i in (hand_id, committed_id, foreign_id))
        assert [v.image.id for v in report.skipped] == [ours]  # tagged twice: left as it is
        assert runtime.image_exists(ours)
    finally:
        rmi(by_hand, shared, committed, foreign)


@override_settings(BERTH_IMAGE_KEEP=1, BERTH_DEPLOY_HISTORY_KEEP=1)
def test_a_dry_run_removes_nothing(built_images, repo, make_workload):
    workload = git_workload(make_workload, repo)
    repo.serve("one\n")
    first = deploy(workload)
    repo.serve("two\n")
    second = deploy(workload)
    repo.serve("three\n")
    deploy(workload)  # the ledger keeps one finished row (the second) and this one
    out = StringIO()

    call_command("prune_images", "--dry-run", stdout=out)

    assert runtime.image_exists(first.image_id)
    text = out.getvalue()
    short = first.image_id.removeprefix("sha256:")[:12]
    assert f"Would remove {short}" in text
    assert f"Kept {second.image_id.removeprefix('sha256:')[:12]}" in text
    assert "Dry run: 1 image(s) would be removed" in text and "nothing was removed" in text

    out = StringIO()
    call_command("prune_images", stdout=out)
    assert not runtime.image_exists(first.image_id)
    assert f"Removed {short}" in out.getvalue()
    assert "1 image(s) removed" in out.getvalue()


def push_unique(repository: str, tag: str, suffix: str) -> str:
    """Build a small serving image of its own, push it, and drop the local copy."""
    reference = f"{repository}:{tag}"
    docker_build(f"FROM {test_images.BUSYBOX}\nLABEL gc.test={suffix}-{tag}\n"
                 "STOPSIGNAL SIGKILL\nCMD [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/\"]\n",
                 reference)
    subprocess.run(["docker", "push", reference], check=True, capture_output=True)
    rmi(reference)
    return reference


def test_pulled_images_are_removed_after_their_workload_is_gone(docker, make_workload):
    suffix = uuid.uuid4().hex[:10]
    repository = f"{test_images.CURRENT_REPOSITORY.rsplit('/', 1)[0]}/gc-{suffix}"
    references = [push_unique(repository, f"v{n}", suffix) for n in (1, 2, 3)]
    workload = make_workload(image=references[0])
    try:
        pulled_ids = []
        for reference in references:
            Workload.objects.filter(pk=workload.pk).update(image=reference)
            workload.refresh_from_db()
            record = deploy(workload)
            pulled_ids.append(runtime.image_id(record.pinned_reference))
        rows = PulledImage.objects.filter(workload_number=workload.pk)
        assert sorted(rows.values_list("image_id", flat=True)) == sorted(pulled_ids)
        assert images.workload_image_bytes(workload=workload) == sum(
            i.size for i in runtime.list_images() if i.id in pulled_ids)

        assert images.prune().removed == []  # all three in the ledger, one running

        deploys.remove_workload(workload=workload)
        report = images.prune()

        assert {v.image.id for v in report.removed} == set(pulled_ids)
        assert not any(runtime.image_exists(i) for i in pulled_ids)
        assert not PulledImage.objects.filter(workload_number=workload.pk).exists()
    finally:
        rmi(*references)


def test_the_api_and_the_page_show_the_disk_its_images_take(built_images, repo,
                                                            make_workload, api_as, client,
                                                            operator):
    workload = git_workload(make_workload, repo)
    repo.serve("one\n")
    record = deploy(workload)
    [size] = [i.size for i in runtime.list_images() if i.id == record.image_id]

    detail = api_as(operator).get(f"/api/workloads/{workload.pk}")
    listed = api_as(operator).get("/api/workloads")

    assert detail.status_code == 200 and detail.json()["image_bytes"] == size > 0
    rows = listed.json()
    rows = rows["results"] if isinstance(rows, dict) else rows
    assert all("image_bytes" not in row for row in rows)
    client.force_login(operator)
    page = client.get(f"/workloads/{workload.pk}/")
    assert f'data-image-bytes="{size}"' in page.content.decode()


def test_a_dockerignored_file_is_not_in_the_built_image(built_images, repo, make_workload):
    repo.commit({
        "Dockerfile": dockerfile(extra="COPY . /ctx/\n"),
        "index.html": "page\n", "secret.env": "TOKEN=1\n", "logs/a.log": "x\n",
        "logs/keep.log": "kept\n",
        ".dockerignore": "# not for the image\nsecret.env\nlogs\n!logs/keep.log\n",
    })
    workload = git_workload(make_workload, repo)

    record = deploy(workload)

    listing = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "find", record.image_id, "/ctx"],
        capture_output=True, text=True, check=True).stdout.split()
    assert "/ctx/index.html" in listing and "/ctx/logs/keep.log" in listing
    assert "/ctx/secret.env" not in listing and "/ctx/logs/a.log" not in listing
    assert ".dockerignore: 2 path(s) left out of the build context" in record.build_log.text
    assert sources.image_tag(workload, record.pinned_reference)


def test_a_broken_dockerignore_fails_the_build_and_keeps_the_containers(
        built_images, repo, make_workload):
    repo.serve("one\n")
    workload = git_workload(make_workload, repo)
    deploy(workload)
    before = sorted(c.id for c in runtime.list_containers(workload.pk))
    repo.commit({".dockerignore": "[broken\n"})

    record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)

    record.refresh_from_db()
    assert (record.outcome, record.failure_code) == (Outcome.FAILED, "build_failed")
    assert "bad pattern" in record.build_log.text
    assert sorted(c.id for c in runtime.list_containers(workload.pk)) == before


def test_the_daily_schedule_runs_the_collection(docker, workload):
    schedule = Schedule.objects.get(name="berth-image-gc")
    assert (schedule.func, schedule.schedule_type, schedule.cron, schedule.repeats) == (
        "engine.tasks.run_image_gc", Schedule.CRON, "17 3 * * *", -1)
    gone = PulledImage.objects.create(workload_number=workload.pk, image_id="sha256:" + "c" * 64,
                                      reference="r@sha256:" + "c" * 64)

    tasks.run_image_gc()

    assert not PulledImage.objects.filter(pk=gone.pk).exists()  # the collection ran


def test_rows_of_images_the_engine_no_longer_holds_are_forgotten(docker, workload):
    gone = PulledImage.objects.create(workload_number=workload.pk, image_id="sha256:" + "0" * 64,
                                      reference=f"{test_images.HTTPD}@sha256:{'0' * 64}")

    assert images.prune(dry_run=True).removed == []
    assert PulledImage.objects.filter(pk=gone.pk).exists()  # a dry run changes nothing

    images.prune()
    assert not PulledImage.objects.filter(pk=gone.pk).exists()


def test_the_admin_shows_pulled_images_read_only(admin_client, workload):
    row = PulledImage.objects.create(workload_number=workload.pk, image_id="sha256:" + "a" * 64,
                                     reference="r@sha256:" + "a" * 64)
    listing = admin_client.get("/admin/workloads/pulledimage/")
    assert listing.status_code == 200 and row.image_id in listing.content.decode()
    assert admin_client.get("/admin/workloads/pulledimage/add/").status_code == 403
    assert admin_client.post(f"/admin/workloads/pulledimage/{row.pk}/delete/",
                             {"post": "yes"}).status_code == 403
    assert PulledImage.objects.filter(pk=row.pk).exists()


@override_settings(BERTH_IMAGE_KEEP=3, BERTH_DEPLOY_HISTORY_KEEP=1)
def test_it_keeps_each_workloads_most_recent_images(built_images, repo, make_workload):
    workload = git_workload(make_workload, repo)
    built = []
    for n in range(4):
        repo.serve(f"commit {n}\n")
        built.append(deploy(workload))

    report = images.prune()

    assert [v.image.id for v in report.removed] == [built[0].image_id]
    whys = {v.image.id: v.why for v in report.kept}
    assert whys[built[1].image_id] == "one of its workload's 3 most recent images"
    assert runtime.image_exists(built[1].image_id)


def test_an_image_pulled_again_while_the_collection_runs_is_skipped(workload, monkeypatch):
    """A deploy of any workload that pulled the image after the plan was made is about to
    run it: the image stays, and the collection says it skipped it."""
    image = runtime.ImageInfo(id="sha256:" + "b" * 64, repo_tags=(), repo_digests=(),
                              labels={}, size=1, created=0)
    verdict = images.Verdict(image, {workload.pk})
    removed = []
    monkeypatch.setattr(runtime, "remove_image", lambda image_id: removed.append(image_id))
    started = timezone.now()
    PulledImage.note(workload_id=workload.pk + 1, image_id=image.id, reference="r@sha256:b")

    assert images._remove(verdict, {workload.pk}, started) is False
    assert removed == []


@override_settings(BERTH_IMAGE_KEEP=1, BERTH_DEPLOY_HISTORY_KEEP=1)
def test_a_busy_workload_keeps_its_images_this_time(built_images, repo, make_workload):
    workload = git_workload(make_workload, repo)
    built = []
    for n in range(3):
        repo.serve(f"commit {n}\n")
        built.append(deploy(workload))

    taken, done = threading.Event(), threading.Event()

    def hold() -> None:  # a deploy, capture or restore runs in another thread
        with locks.workload_lock(workload.pk):
            taken.set()
            done.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert taken.wait(30)
        report = images.prune()
    finally:
        done.set()
        holder.join()

    assert [v.image.id for v in report.skipped] == [built[0].image_id]
    assert report.removed == [] and runtime.image_exists(built[0].image_id)
    assert [v.image.id for v in images.prune().removed] == [built[0].image_id]


# Labels are inherited: images made by hand from Berth's carry them (review finding).

@override_settings(BERTH_IMAGE_KEEP=1, BERTH_DEPLOY_HISTORY_KEEP=1)
def test_an_image_built_by_hand_from_a_berth_build_is_not_removed(built_images, repo,
                                                                   make_workload):
    """A child image inherits its base image's labels: `docker build` of `FROM <Berth's
    build>` by an operator (a debug image, a CI step) carries berth.image.instance = this
    instance and berth.image.workload = N, so _label_workload() says Berth built it."""
    workload = git_workload(make_workload, repo)
    repo.serve("one\n")
    first = deploy(workload)
    by_hand = f"berth-gc-test-{uuid.uuid4().hex[:10]}:debug"
    try:
        base = sources.image_tag(workload, first.pinned_reference)
        hand_id = docker_build(f"FROM {base}\nLABEL debug=1\n", by_hand)
        labels = {i.id: i.labels for i in runtime.list_images()}[hand_id]
        assert labels.get(runtime.IMAGE_LABEL_PREFIX + "workload") == str(workload.pk)
        repo.serve("two\n")
        deploy(workload)  # newer than the hand-built image: it leaves the keep-1 window

        report = images.prune()

        assert hand_id not in {v.image.id for v in report.removed}, (
            "the collection removed an image built by hand")
        assert runtime.image_exists(hand_id)
    finally:
        rmi(by_hand)


@override_settings(BERTH_IMAGE_KEEP=1, BERTH_DEPLOY_HISTORY_KEEP=1)
def test_a_container_committed_by_hand_is_not_removed(built_images, repo, make_workload):
    """`docker commit` of one of the workload's containers (a debugging copy) keeps the
    image's berth.image.* labels (and adds the container's berth.replica): the new-style
    branch of _label_workload() does not look at berth.replica, so it is "a build"."""
    workload = git_workload(make_workload, repo)
    repo.serve("one\n")
    deploy(workload)
    [container] = runtime.list_containers(workload.pk)
    by_hand = f"berth-gc-test-{uuid.uuid4().hex[:10]}:committed"
    try:
        subprocess.run(["docker", "commit", container.id, by_hand], check=True,
                       capture_output=True)
        committed_id = runtime.image_id(by_hand)
        repo.serve("two\n")
        deploy(workload)

        report = images.prune()

        assert committed_id not in {v.image.id for v in report.removed}, (
            "the collection removed a container committed by hand")
        assert runtime.image_exists(committed_id)
    finally:
        rmi(by_hand)



def test_a_pull_during_the_collection_is_not_forgotten(workload, monkeypatch):
    # Mocked engine (an empty image list): the deploy's pull lands between the collection's
    # listing and its bookkeeping, which real timing would make rare (review finding).
    fresh = "sha256:" + "e" * 64

    def in_use() -> set[str]:
        PulledImage.note(workload_id=workload.pk, image_id=fresh, reference="r@sha256:" + "e" * 64)
        return set()

    monkeypatch.setattr(runtime, "list_images", lambda: [])
    monkeypatch.setattr(runtime, "images_in_use", in_use)

    images.prune()

    assert PulledImage.objects.filter(workload_number=workload.pk, image_id=fresh).exists()


def test_an_image_removed_between_the_pull_and_the_create_is_pulled_again(
    docker, make_workload, monkeypatch
):
    # The race with another workload's collection is made certain by removing the
    # image right after the real pull (a wrapper around the real resolve: the
    # timing is what cannot be arranged otherwise), once.
    suffix = uuid.uuid4().hex[:10]
    repository = f"{test_images.CURRENT_REPOSITORY.rsplit('/', 1)[0]}/gc-{suffix}"
    reference = push_unique(repository, "v1", suffix)
    workload = make_workload(image=reference)
    real_resolve, pulls = sources.resolve, []

    def resolve_then_lose_it(*args, **kwargs):
        resolved = real_resolve(*args, **kwargs)
        pulls.append(resolved.pinned)
        if len(pulls) == 1:
            assert runtime.remove_image(runtime.image_id(resolved.pinned))
        return resolved

    monkeypatch.setattr(sources, "resolve", resolve_then_lose_it)
    try:
        record = deploy(workload)

        assert len(pulls) == 2 and pulls[0] == pulls[1] == record.pinned_reference
        [container] = runtime.list_containers(workload.pk)
        assert container.running
    finally:
        deploys.remove_workload(workload=workload)
        rmi(reference)
