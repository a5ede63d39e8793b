"""The deploy ledger: a row for every dispatch, pruned, cascaded, and rollback by digest."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from engine import deploys
from engine.locked.deploy import dispatch_locked
from lib import locks, owners, runtime
from tests.conftest import container_image_digest, dead_owner, move_current_tag, registry_digest
from tests.fixtures import images
from workloads.models import DeployInProgress, DeployRecord, Workload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]
Reason, Outcome, Failure = DeployRecord.Reason, DeployRecord.Outcome, DeployRecord.Failure


def running_digest(workload: Workload) -> str:
    [container] = runtime.list_containers(workload.pk)
    assert container.running
    return container_image_digest(container.id)


@pytest.mark.parametrize("reason", [Reason.MANUAL, Reason.API, Reason.AUTO])
def test_it_records_success_with_times_and_the_pinned_reference(
    docker, current_tag, workload, reason
):
    record = deploys.dispatch(workload=workload, reason=reason)

    record.refresh_from_db()
    assert (record.reason, record.outcome, record.failure_code) == (reason, Outcome.SUCCEEDED, "")
    assert record.source_kind == Workload.SourceKind.IMAGE
    assert record.requested_reference == images.HTTPD_CURRENT
    v1 = registry_digest(images.HTTPD_V1)
    assert record.pinned_reference == f"{images.CURRENT_REPOSITORY}@{v1}"
    assert record.created <= record.started <= record.finished
    assert record.duration.total_seconds() >= 0


def test_it_records_a_restore_redeploy_from_the_lock_held_variant(docker, current_tag, workload):
    with locks.workload_lock(workload.pk):
        record = dispatch_locked(workload=workload, reason=Reason.RESTORE)
    assert (record.reason, record.outcome) == (Reason.RESTORE, Outcome.SUCCEEDED)


@pytest.mark.parametrize(
    ("image", "code"),
    [
        (f"{images.HTTPD}:no-such-tag", Failure.IMAGE_NOT_FOUND),
        ("127.0.0.1:5999/nobody/home:v1", Failure.REGISTRY_UNREACHABLE),
    ],
)
def test_it_records_failures_as_a_code_and_a_fixed_message(docker, make_workload, image, code):
    workload = make_workload(image=image)

    record = deploys.dispatch(workload=workload, reason=Reason.MANUAL)

    record.refresh_from_db()
    assert (record.outcome, record.failure_code) == (Outcome.FAILED, code)
    assert record.failure_message == Failure(code).label
    assert record.finished is not None
    assert record.pinned_reference == ""


def test_the_command_records_its_deploys_and_rollbacks(docker, current_tag, workload):
    call_command("deploy", str(workload.pk), stdout=io.StringIO())
    first = workload.deploys.get()
    call_command("rollback", str(workload.pk), str(first.pk), stdout=io.StringIO())

    rows = list(workload.deploys.order_by("id").values_list("reason", "outcome"))
    assert rows == [(Reason.MANUAL, Outcome.SUCCEEDED), (Reason.ROLLBACK, Outcome.SUCCEEDED)]


def finished(workload: Workload, **fields) -> DeployRecord:
    record = DeployRecord.open(workload=workload, reason=fields.pop("reason", Reason.MANUAL),
                               rolled_back_from=fields.pop("rolled_back_from", None))
    fields.setdefault("outcome", Outcome.SUCCEEDED)
    DeployRecord.objects.filter(pk=record.pk).update(**fields)
    record.refresh_from_db()
    return record


def test_it_keeps_exactly_the_newest_n_finished(workload, make_workload):
    other = make_workload()
    finished(other)
    with override_settings(BERTH_DEPLOY_HISTORY_KEEP=3):
        opened = [finished(workload) for _ in range(5)]
        active = DeployRecord.open(workload=workload, reason=Reason.MANUAL)

    kept = list(workload.deploys.order_by("id").values_list("pk", flat=True))
    # The three newest finished rows, and the unfinished one, which is never pruned.
    assert kept == [r.pk for r in opened[-3:]] + [active.pk]
    assert other.deploys.count() == 1  # another workload's history is not touched


def test_a_second_deploy_while_one_is_active_is_refused(workload):
    active = DeployRecord.open(workload=workload, reason=Reason.API)
    with pytest.raises(DeployInProgress) as refused:
        DeployRecord.open(workload=workload, reason=Reason.MANUAL)
    assert refused.value.active == active
    assert workload.deploys.count() == 1
    # A restore's redeploy runs under the lock the restore holds: not refused.
    DeployRecord.open(workload=workload, reason=Reason.RESTORE)
    assert workload.deploys.count() == 2


def test_a_deploy_left_behind_by_a_dead_worker_expires(workload):
    """Its process is gone and the workload's lock is free: it is failed at once, whatever
    its age."""
    stuck = DeployRecord.open(workload=workload, reason=Reason.API)
    stuck.claim()
    DeployRecord.objects.filter(pk=stuck.pk).update(owner=dead_owner())

    fresh = deploys.request_deploy(workload=workload, reason=Reason.MANUAL)

    stuck.refresh_from_db()
    assert (stuck.outcome, stuck.failure_code) == (Outcome.FAILED, Failure.INTERRUPTED)
    assert fresh.outcome == Outcome.QUEUED


def test_a_queued_deploy_a_dead_worker_had_taken_expires_at_once(workload):
    taken = DeployRecord.open(workload=workload, reason=Reason.API)
    DeployRecord.objects.filter(pk=taken.pk).update(owner=dead_owner())

    deploys.request_deploy(workload=workload, reason=Reason.MANUAL)

    taken.refresh_from_db()
    assert (taken.outcome, taken.failure_code) == (Outcome.FAILED, Failure.INTERRUPTED)


def test_a_queued_deploy_no_worker_took_expires_only_when_its_task_counts_as_lost(
        workload, settings):
    waiting = DeployRecord.open(workload=workload, reason=Reason.API)
    with pytest.raises(DeployInProgress):
        deploys.request_deploy(workload=workload, reason=Reason.MANUAL)
    long_ago = timezone.now() - timedelta(seconds=settings.BERTH_TASK_LOST_AFTER + 1)
    DeployRecord.objects.filter(pk=waiting.pk).update(created=long_ago)

    deploys.request_deploy(workload=workload, reason=Reason.MANUAL)

    waiting.refresh_from_db()
    assert (waiting.outcome, waiting.failure_code) == (Outcome.FAILED, Failure.INTERRUPTED)


def test_a_deploy_whose_workload_is_locked_is_alive_however_old(workload, settings):
    """A running deploy holds its workload's lock: while the lock is held it is not failed,
    even when its recorded process looks dead (the lock's holder recovers it first)."""
    import threading

    from django.db import connection

    running = DeployRecord.open(workload=workload, reason=Reason.API)
    running.claim()
    long_ago = timezone.now() - timedelta(seconds=settings.BERTH_TASK_LOST_AFTER + 1)
    DeployRecord.objects.filter(pk=running.pk).update(created=long_ago, owner=dead_owner())
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with locks.workload_lock(workload.pk):
            held.set()
            release.wait(10)
        connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(10)
    try:
        with pytest.raises(DeployInProgress):
            deploys.request_deploy(workload=workload, reason=Reason.MANUAL)
        # A queued deploy a live worker took waits for whoever holds the lock: not lost,
        # however old.
        DeployRecord.objects.filter(pk=running.pk).update(outcome=Outcome.QUEUED,
                                                          owner=owners.current())
        with pytest.raises(DeployInProgress):
            deploys.request_deploy(workload=workload, reason=Reason.MANUAL)
    finally:
        release.set()
        thread.join()
    running.refresh_from_db()
    assert running.outcome == Outcome.QUEUED


def test_a_deploy_waiting_for_a_restore_never_expires(workload, settings):
    """A deploy waits for a restore as long as the restore takes: its worker took it and
    waits for the lock (the row stays queued until the claim), however long ago it was
    asked for."""
    from snapshots.models import RestoreJob

    waiting = DeployRecord.open(workload=workload, reason=Reason.API)
    long_ago = timezone.now() - timedelta(seconds=settings.BERTH_TASK_LOST_AFTER + 1)
    DeployRecord.objects.filter(pk=waiting.pk).update(created=long_ago, owner=owners.current())
    RestoreJob.objects.create(workload=workload, state=RestoreJob.State.RUNNING)

    with pytest.raises(DeployInProgress):
        deploys.request_deploy(workload=workload, reason=Reason.MANUAL)

    waiting.refresh_from_db()
    assert waiting.outcome == Outcome.QUEUED


def test_the_history_is_deleted_with_the_workload(workload):
    first = finished(workload)
    finished(workload, reason=Reason.ROLLBACK, rolled_back_from=first)
    workload.delete()
    assert not DeployRecord.objects.exists()


def test_a_real_rollback_runs_the_first_digest_after_the_tag_moved(docker, current_tag, workload):
    first = deploys.dispatch(workload=workload, reason=Reason.MANUAL)
    v1 = f"{images.CURRENT_REPOSITORY}@{registry_digest(images.HTTPD_V1)}"
    assert first.pinned_reference == v1
    move_current_tag("v2")
    second = deploys.dispatch(workload=workload, reason=Reason.MANUAL)
    assert running_digest(workload) == second.pinned_reference != v1

    rolled = deploys.rollback(workload=workload, deploy_id=first.pk)

    assert (rolled.reason, rolled.outcome) == (Reason.ROLLBACK, Outcome.SUCCEEDED)
    assert rolled.rolled_back_from_id == first.pk
    assert rolled.requested_reference == rolled.pinned_reference == v1
    assert running_digest(workload) == v1
    workload.refresh_from_db()
    assert workload.running_reference == v1


def test_rollback_guards(workload, make_workload):
    other = make_workload()
    foreign = finished(other, pinned_reference=f"{images.HTTPD}@sha256:{'a' * 64}")
    failed = finished(workload, outcome=Outcome.FAILED, failure_code=Failure.PULL_FAILED)
    unpinned = finished(workload)
    # A git deploy of a workload that deploys an image now: another source kind.
    git = finished(workload, source_kind="git", pinned_reference="0" * 40)
    before = DeployRecord.objects.count()

    with pytest.raises(DeployRecord.DoesNotExist):
        deploys.rollback_target(workload=workload, deploy_id=foreign.pk)
    with pytest.raises(deploys.RollbackRefused, match="did not succeed"):
        deploys.rollback_target(workload=workload, deploy_id=failed.pk)
    with pytest.raises(deploys.RollbackRefused, match="no pinned reference"):
        deploys.rollback_target(workload=workload, deploy_id=unpinned.pk)
    with pytest.raises(deploys.RollbackRefused, match="another source kind"):
        deploys.rollback_target(workload=workload, deploy_id=git.pk)
    with pytest.raises(CommandError, match="has no deploy"):
        call_command("rollback", str(workload.pk), str(foreign.pk), stdout=io.StringIO())
    assert DeployRecord.objects.count() == before
