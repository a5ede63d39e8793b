"""The sweep aborts unfinished uploads no copy owns, on S3 and in a directory.

Real parts: moto's S3 server over HTTP (its multipart uploads), a real
directory. The sweep's clock is moved forward rather than waiting.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from backups.models import BackupTarget, SnapshotCopy
from engine import copy_upkeep, sweep
from lib import offsite
from tests.backups.conftest import s3_client, s3_target

pytestmark = pytest.mark.django_db

OWNED = "p/s/w/20261206T100000Z-manual-1-c1.tar.zst.age"
STRAY = "p/s/w/20261206T090000Z-manual-2-c2.tar.zst.age"


@pytest.fixture(autouse=True)
def _throttle_reset(monkeypatch):
    monkeypatch.setattr(copy_upkeep, "_last_strays", None)


def begin_upload(bucket: str, key: str) -> str:
    client = s3_client()
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"x" * 1024)
    return upload


def uploads(bucket: str) -> list[str]:
    return sorted(u["Key"] for u in
                  s3_client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def test_the_sweep_aborts_an_old_s3_upload_no_copy_owns(bucket, recipient, make_workload):
    target = s3_target(bucket, recipient)
    SnapshotCopy.objects.create(workload=make_workload(), target=target, remote_key=OWNED,
                                state=SnapshotCopy.State.UPLOADING)
    begin_upload(bucket, f"berth/{OWNED}")
    begin_upload(bucket, f"berth/{STRAY}")
    begin_upload(bucket, "elsewhere/not-under-the-prefix")

    # moto answers every upload's Initiated with a fixed date in 2010, so on this server
    # each one is old: the age rule is tested on the directory target below.
    sweep.recover_all(now=timezone.now() + timedelta(hours=7))

    assert uploads(bucket) == ["berth/" + OWNED, "elsewhere/not-under-the-prefix"]


def test_the_sweep_removes_an_old_temporary_file_in_a_directory(tmp_path, settings, recipient):
    share = tmp_path / "nas"
    (share / "p/s/w").mkdir(parents=True)
    settings.BERTH_BACKUP_DIRECTORY_ROOTS, settings.BERTH_ABSOLUTE_VOLUME_ROOTS = [str(share)], []
    BackupTarget.objects.create(name="nas", kind="directory", directory=str(share),
                                recipients=recipient)
    left = share / "p/s/w" / f"{offsite.UPLOAD_PREFIX}20261206T090000Z-manual-2-c2.tar.zst.age-ab12"
    left.write_bytes(b"half")
    kept = share / "p/s/w" / "20261206T080000Z-manual-3-c3.tar.zst.age"
    kept.write_bytes(b"a verified copy")

    assert copy_upkeep.abort_strays() == 0  # young: perhaps a write under way
    assert left.exists()

    copy_upkeep._last_strays = None
    assert copy_upkeep.abort_strays(now=timezone.now() + timedelta(hours=7)) == 1

    assert not left.exists() and kept.read_bytes() == b"a verified copy"


def test_a_target_that_cannot_be_listed_is_skipped(bucket, recipient, caplog):
    down = s3_target(bucket, recipient, name="down")
    BackupTarget.objects.filter(pk=down.pk).update(endpoint_url="http://127.0.0.1:9")
    good = s3_target(bucket, recipient, name="good", prefix="other")
    begin_upload(bucket, f"other/{STRAY}")
    assert copy_upkeep.abort_strays(now=timezone.now() + timedelta(hours=7)) == 1
    assert good.pk and "unreachable" in caplog.text
    assert uploads(bucket) == []
