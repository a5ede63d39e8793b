"""Restore drills: a copy read back as a recovery would read it, on the real S3 server.

A passing drill, and the ways one must fail: a byte flipped in the bucket, a
copy the stored identity does not open, a target with no stored identity. A
failed drill reaches a real local webhook (tests/alerts' receiver) once.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from pyrage import x25519

from alerts.models import NotificationChannel
from backups.models import BackupPolicy, BackupTarget, RestoreDrill
from engine import drills
from tests.alerts.conftest import webhook  # noqa: F401 - the receiver fixture
from tests.backups.conftest import s3_client

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]


def store_identity(target: BackupTarget, identity) -> BackupTarget:
    target.set_identity(str(identity))
    target.save(update_fields=["identity_encrypted"])
    return target


def drilled(copy) -> RestoreDrill:
    row = drills.request_drill(copy=copy, queued=False)
    return drills.run_drill(row)


def test_a_drill_of_a_good_copy_passes_and_leaves_nothing(copy_of, identity):
    from tests.snapshots.conftest import leftovers

    row, _volume = copy_of
    store_identity(BackupTarget.objects.get(pk=row.target_id), identity)
    drill = drilled(row)
    assert drill.state == RestoreDrill.State.PASSED, drill.failure_text
    assert drill.files == 2 and drill.bytes_done == drill.bytes_total > 0
    assert drill.duration is not None and leftovers() == []


def test_a_byte_flipped_in_the_bucket_fails_the_drill_and_tells_once(
    copy_of, identity, bucket, request
):
    hook = request.getfixturevalue("webhook")
    channel = NotificationChannel(name="ops", events=["drill_failed"])
    channel.set_apprise_url(hook.url)
    channel.save()
    row, _volume = copy_of
    store_identity(BackupTarget.objects.get(pk=row.target_id), identity)
    key = f"berth/{row.remote_key}"
    data = bytearray(s3_client().get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0x01
    s3_client().put_object(Bucket=bucket, Key=key, Body=bytes(data))

    drill = drilled(row)

    assert (drill.state, drill.failure_code) == (RestoreDrill.State.FAILED, "wrong_identity")
    assert len(hook.received) == 1
    assert "drill" in str(hook.received[0]["body"]).lower()


def test_a_copy_the_stored_identity_does_not_open_fails(copy_of):
    row, _volume = copy_of
    target = BackupTarget.objects.get(pk=row.target_id)
    other = x25519.Identity.generate()
    target.recipients += f"\n{other.to_public()}"
    target.save(update_fields=["recipients"])
    store_identity(target, other)  # belongs to a recipient, but not to this copy's
    drill = drilled(row)
    assert (drill.state, drill.failure_code) == (RestoreDrill.State.FAILED, "wrong_identity")


def test_a_target_without_a_stored_identity_cannot_be_drilled(copy_of):
    row, _volume = copy_of
    drill = drilled(row)
    assert (drill.state, drill.failure_code) == (RestoreDrill.State.FAILED, "no_identity")


def test_the_policy_asks_for_a_drill_every_so_many_days(copy_of, identity):
    row, _volume = copy_of
    store_identity(BackupTarget.objects.get(pk=row.target_id), identity)
    BackupPolicy.objects.create(workload=row.workload, drill_every_days=7)

    [first] = drills.due()  # tasks run at once under the test settings
    first.refresh_from_db()
    assert first.state == RestoreDrill.State.PASSED, first.failure_text
    assert drills.due(now=timezone.now() + timedelta(days=6)) == []
    assert len(drills.due(now=timezone.now() + timedelta(days=8))) == 1


def test_the_api_and_the_command_drill_a_copy(api_as, copy_of, identity, operator):
    import io

    from django.contrib.auth.models import User
    from django.core.management import call_command

    row, _volume = copy_of
    store_identity(BackupTarget.objects.get(pk=row.target_id), identity)
    assert api_as(operator).post("/api/drills", {"copy": row.pk},
                                 format="json").status_code == 403
    admin = api_as(User.objects.create_superuser("ada-admin", password="x"))
    assert admin.post("/api/drills", {"copy": "nope"}, format="json").status_code == 400
    answer = admin.post("/api/drills", {"copy": row.pk}, format="json")
    assert answer.status_code == 202, answer.content
    assert admin.get(answer["Location"]).json()["state"] == "passed"

    out = io.StringIO()
    call_command("drill", str(row.pk), stdout=out)
    assert f"Copy #{row.pk} restores: 2 files" in out.getvalue()


def test_a_refused_archive_is_told_in_fixed_words_never_the_archives(bucket, recipient,
                                                                    identity, make_workload):
    from backups.models import SnapshotCopy
    from tests.backups.conftest import s3_target
    from tests.backups.test_recovery import KEY, document_for, plant
    from tests.snapshots.hostile import archive, member

    lure = "URGENT re-enter your keys at https://evil.example"
    hostile = archive(member(f"volumes/0/{lure}", typeflag=b"3"))
    plant(bucket, KEY, hostile, document_for(hostile), recipient)
    target = store_identity(s3_target(bucket, recipient), identity)
    copy = SnapshotCopy.objects.create(workload=make_workload(), target=target, remote_key=KEY,
                                       state=SnapshotCopy.State.VERIFIED)
    drill = drilled(copy)
    assert (drill.state, drill.failure_code) == (RestoreDrill.State.FAILED, "refused")
    assert "evil.example" not in drill.failure_text and "evil" not in str(drill.failure_params)
