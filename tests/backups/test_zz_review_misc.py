"""Review: plaintext copies on an encrypted target; the upload cap; running_reference."""
from __future__ import annotations

import hashlib
import io
import json

import pytest

from backups import sidecar
from backups.models import BackupTarget
from engine import disaster
from lib import agecrypt
from snapshots.models import Snapshot
from tests.backups.conftest import s3_client
from tests.backups.test_recovery import document_for, plant
from tests.fixtures import images
from workloads.models import DeployRecord, Workload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]


def real_archive(row, bucket, identity) -> bytes:
    real = s3_client().get_object(Bucket=bucket, Key=f"berth/{row.remote_key}")["Body"].read()
    plain = io.BytesIO()
    agecrypt.decrypt_stream(io.BytesIO(real), plain, [identity])
    return plain.getvalue()


def test_a_plaintext_copy_is_recovered_from_an_encrypted_target_without_any_identity(
    copy_of, bucket, identity
):
    row, _volume = copy_of
    target = BackupTarget.objects.get(pk=row.target_id)
    assert target.recipients and not target.unencrypted
    archive = real_archive(row, bucket, identity)
    key = "evil/prod/planted/20261201T100000Z-manual-7-c7.tar.zst"  # no .age
    client = s3_client()  # planted in clear: no recipient needed at all
    client.put_object(Bucket=bucket, Key=f"berth/{key}", Body=archive)
    client.put_object(Bucket=bucket, Key=f"berth/{sidecar.sidecar_name(key, encrypted=False)}",
                      Body=json.dumps(document_for(archive)).encode())
    listed = {e.key for e in disaster.catalogue(target, [identity])}
    assert key in listed  # listed beside Berth's own encrypted copies
    result = disaster.recover(target=target, key=key, identities=[])
    assert result.created and result.restore.outcome == "succeeded"


def test_the_upload_cap_does_not_apply_to_a_recovery(copy_of, bucket, recipient, identity,
                                                      settings):
    row, _volume = copy_of
    archive = real_archive(row, bucket, identity)
    settings.BERTH_SNAPSHOT_MAX_UPLOAD_BYTES = len(archive) // 2
    key = "evil/prod/planted/20261201T100000Z-manual-7-c7.tar.zst.age"
    plant(bucket, key, archive, document_for(archive), recipient)
    result = disaster.recover(target=BackupTarget.objects.get(pk=row.target_id), key=key,
                              identities=[identity])
    assert result.snapshot.size > settings.BERTH_SNAPSHOT_MAX_UPLOAD_BYTES


def test_the_deploy_runs_the_sidecars_running_reference_whatever_its_image(
    docker, copy_of, bucket, recipient, identity
):
    row, _volume = copy_of
    archive = real_archive(row, bucket, identity)
    key = "evil/prod/planted/20261201T100000Z-manual-7-c7.tar.zst.age"
    document = document_for(archive)
    document["workload"]["image"] = images.HTTPD_V1          # what the catalogue shows
    from lib import runtime
    other = runtime.pull(images.SLOWSTOP_V1)  # another repository, pinned: repo@sha256:...
    assert "@sha256:" in other and "slowstop" in other
    document["workload"]["running_reference"] = other
    plant(bucket, key, archive, document, recipient)
    result = disaster.recover(target=BackupTarget.objects.get(pk=row.target_id), key=key,
                              identities=[identity])
    print("image:", result.workload.image, "| deploy:", result.deploy and
          (result.deploy.outcome, result.deploy.requested_reference,
           result.deploy.pinned_reference))
    for d in DeployRecord.objects.filter(workload=result.workload).order_by("id"):
        print("record", d.pk, d.reason, d.outcome, d.requested_reference, d.pinned_reference)
    print("restore", result.restore.outcome, result.restore.reason)
    assert result.deploy is not None
    assert result.deploy.requested_reference == other
    assert "slowstop" in result.deploy.pinned_reference
    assert Workload.objects.get(pk=result.workload.pk).image == images.HTTPD_V1
