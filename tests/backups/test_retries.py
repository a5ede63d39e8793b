"""Failed copies tried again by the sweep, with an exponential backoff, on the real S3 server.

The sweep is given its clock (`now`): no test sleeps through a backoff.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from backups.models import SnapshotCopy
from engine import copies, copy_upkeep, sweep
from tests.backups.conftest import big_snapshot, kill_mid_upload, objects, s3_client, s3_target
from tests.snapshots.restoring import snapshot_from_bytes
from tests.snapshots.trees import archive_of

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]


@pytest.fixture
def snapshot(make_workload, tmp_path):
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "index.html").write_bytes(b"<h1>tried again</h1>")
    data = archive_of([volume])
    volumes = [{"scope": "absolute", "source": "/v", "target": "/v", "bytes": len(data),
                "files": 1}]
    return snapshot_from_bytes(make_workload(), data, {"volumes": volumes})


def failed_copy(snapshot, target, code: str, *, attempts: int = 1, ago: timedelta = timedelta(),
                **fields) -> SnapshotCopy:
    row = SnapshotCopy.of(snapshot, target)
    row.state, row.failure_code, row.attempts = SnapshotCopy.State.FAILED, code, attempts
    row.finished = timezone.now() - ago
    for name, value in fields.items():
        setattr(row, name, value)
    row.save()
    return row


def test_the_backoff_doubles_up_to_its_cap(settings):
    settings.BERTH_COPY_RETRY_DELAY, settings.BERTH_COPY_RETRY_MAX_DELAY = 60, 300
    assert [copy_upkeep.retry_delay(n).total_seconds() for n in range(7)] == [
        60, 60, 120, 240, 300, 300, 300]


def test_an_unreachable_target_is_tried_again_once_the_backoff_is_over(snapshot, bucket,
                                                                       recipient, settings):
    settings.BERTH_COPY_RETRY_DELAY = 60
    target = s3_target(bucket, recipient)
    row = failed_copy(snapshot, target, "unreachable", attempts=2)  # waits 2 minutes
    now = timezone.now()

    sweep.recover_all(now=now + timedelta(seconds=110))
    row.refresh_from_db()
    assert (row.state, row.attempts) == ("failed", 2)

    sweep.recover_all(now=now + timedelta(seconds=130))
    row.refresh_from_db()
    assert (row.state, row.attempts, row.failure_code) == ("verified", 3, "")
    assert f"berth/{row.remote_key}" in objects(bucket)
    assert SnapshotCopy.objects.count() == 1  # the same row, tried again


@pytest.mark.parametrize("code", ["authentication", "no_bucket", "no_write", "not_allowed",
                                  "mismatch", "not_found", "full", "internal",
                                  "unreadable_secret"])
def test_a_failure_that_needs_a_person_is_never_tried_again(snapshot, bucket, recipient, code):
    row = failed_copy(snapshot, s3_target(bucket, recipient), code, ago=timedelta(days=2))
    assert copy_upkeep.retry_due() == 0
    row.refresh_from_db()
    assert (row.state, row.failure_code) == ("failed", code)


def test_it_gives_up_after_the_last_attempt(snapshot, bucket, recipient, settings):
    settings.BERTH_COPY_RETRY_ATTEMPTS = 3
    target = s3_target(bucket, recipient)
    spent = failed_copy(snapshot, target, "unavailable", attempts=3, ago=timedelta(days=1))
    assert copy_upkeep.retry_due() == 0
    spent.refresh_from_db()
    assert spent.state == "failed"


def test_a_copy_superseded_or_without_its_snapshot_is_not_tried_again(snapshot, bucket,
                                                                      recipient):
    target = s3_target(bucket, recipient)
    old = failed_copy(snapshot, target, "unreachable", ago=timedelta(hours=1))
    newer = copies.request_copy(snapshot=snapshot, target=target)
    newer.refresh_from_db()
    assert newer.state == "verified"
    assert copy_upkeep.retry_due() == 0

    orphan = failed_copy(snapshot, target, "interrupted", ago=timedelta(hours=1))
    SnapshotCopy.objects.filter(pk=orphan.pk).update(snapshot=None)  # its snapshot was deleted
    assert copy_upkeep.retry_due() == 0
    old.refresh_from_db(), orphan.refresh_from_db()
    assert old.state == orphan.state == "failed"


def test_a_copy_queued_again_is_not_lost_for_its_old_age(snapshot, bucket, recipient,
                                                         monkeypatch):
    from engine import queue

    monkeypatch.setattr(queue, "enqueue", lambda *args, **kwargs: None)  # the broker holds it
    row = failed_copy(snapshot, s3_target(bucket, recipient), "unreachable",
                      ago=timedelta(hours=1), created=timezone.now() - timedelta(days=3))
    assert copy_upkeep.retry_due() == 1
    assert copies.fail_lost() == 0
    row.refresh_from_db()
    assert (row.state, row.owner) == ("queued", "")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # the forked worker reads the rows
def test_a_worker_killed_mid_upload_is_retried_by_a_later_sweep(make_workload, tmp_path, bucket,
                                                                recipient, settings):
    settings.BERTH_COPY_RETRY_DELAY = 60
    snapshot = big_snapshot(make_workload(), tmp_path)
    target = s3_target(bucket, recipient)
    row = SnapshotCopy.of(snapshot, target)
    row.save()
    kill_mid_upload(row, bucket)

    sweep.recover_all()  # the first sweep: interrupted, and its upload aborted

    row.refresh_from_db()
    assert (row.state, row.failure_code, row.attempts) == ("failed", "interrupted", 1)
    assert s3_client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert objects(bucket) == []

    sweep.recover_all(now=row.finished + timedelta(seconds=61))  # past the backoff

    row.refresh_from_db()
    assert (row.state, row.attempts) == ("verified", 2)
    assert sorted(objects(bucket)) == sorted([
        f"berth/{row.remote_key}",
        f"berth/{row.remote_key.removesuffix('.tar.zst.age')}.json.age"])
