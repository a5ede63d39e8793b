"""Copies of snapshots to backup targets: encrypted on the way, verified by reading back.

Real parts: moto's S3 server over HTTP, real directories (a full one is a
small tmpfs), Debian's age CLI and zstd for what arrived.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

import pytest

from backups.models import BackupTarget, SnapshotCopy
from engine import copies
from lib import offsite
from snapshots import storage
from tests.backups.conftest import (
    S3_SECRET,
    big_snapshot,
    copied,
    kill_mid_upload,
    objects,
    s3_client,
    s3_target,
)
from tests.snapshots.restoring import snapshot_from_bytes
from tests.snapshots.trees import archive_of, describe, extract_bytes

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]


@pytest.fixture
def archive(tmp_path) -> bytes:
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "index.html").write_bytes(b"<h1>kept offsite</h1>")
    (volume / "big.bin").write_bytes(os.urandom(10 << 20))  # incompressible: a multipart upload
    return archive_of([volume])


@pytest.fixture
def snapshot(make_workload, archive):
    volumes = [{"scope": "absolute", "source": "/v", "target": "/v", "bytes": len(archive),
                "files": 2}]
    return snapshot_from_bytes(make_workload(), archive, {"volumes": volumes})


def fetch(bucket: str, key: str) -> bytes:
    return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.mark.skipif(shutil.which("age") is None, reason="SKIPPED FOR LACK OF age")
def test_a_copy_to_s3_is_encrypted_verified_and_opens_with_the_age_cli(
    snapshot, archive, bucket, identity, recipient, tmp_path
):
    row = copied(snapshot, s3_target(bucket, recipient))

    assert row.state == SnapshotCopy.State.VERIFIED, row.failure_code
    workload = snapshot.workload
    assert row.remote_key.startswith(
        f"{workload.stage.project.slug}/{workload.stage.slug}/{workload.slug}/")
    assert row.remote_key.endswith(f"-manual-{snapshot.pk}-c{row.pk}.tar.zst.age")
    side = row.remote_key.removesuffix(".tar.zst.age") + ".json.age"
    assert sorted(objects(bucket)) == sorted([f"berth/{row.remote_key}", f"berth/{side}"])
    sealed = fetch(bucket, f"berth/{row.remote_key}")
    assert (row.size, row.sha256) == (len(sealed), hashlib.sha256(sealed).hexdigest())
    assert archive not in sealed and b"kept offsite" not in sealed

    (tmp_path / "copy.age").write_bytes(sealed)
    (tmp_path / "key.txt").write_text(f"{identity}\n")
    subprocess.run(["age", "-d", "-i", str(tmp_path / "key.txt"), "-o",
                    str(tmp_path / "copy.tar.zst"), str(tmp_path / "copy.age")], check=True)
    assert (tmp_path / "copy.tar.zst").read_bytes() == archive
    subprocess.run(["zstd", "-q", "-t", str(tmp_path / "copy.tar.zst")], check=True)
    extract_bytes(archive, tmp_path / "staging", volume_count=1)
    assert describe(tmp_path / "staging" / "volumes" / "0") == describe(tmp_path / "volume")


def test_a_copy_to_an_unencrypted_target_is_the_archive_itself(snapshot, archive, bucket):
    row = copied(snapshot, s3_target(bucket))
    assert row.state == SnapshotCopy.State.VERIFIED and not row.encrypted
    assert row.remote_key.endswith(".tar.zst")
    assert fetch(bucket, f"berth/{row.remote_key}") == archive


def test_a_copy_to_a_directory_is_verified(snapshot, archive, tmp_path, settings, identity,
                                          recipient):
    share = tmp_path / "nas"
    share.mkdir()
    settings.BERTH_BACKUP_DIRECTORY_ROOTS, settings.BERTH_ABSOLUTE_VOLUME_ROOTS = [str(share)], []
    target = BackupTarget.objects.create(name="nas", kind="directory", directory=str(share),
                                         recipients=recipient)
    row = copied(snapshot, target)
    assert row.state == SnapshotCopy.State.VERIFIED, row.failure_code
    sealed = (share / row.remote_key).read_bytes()
    assert hashlib.sha256(sealed).hexdigest() == row.sha256
    out = offsite.DirectoryStore(share).open(row.remote_key)
    import io

    from lib import agecrypt
    plain = io.BytesIO()
    agecrypt.decrypt_stream(out, plain, [identity])
    assert plain.getvalue() == archive


def test_a_missing_bucket_fails_the_copy_with_its_code_and_a_retry_succeeds(
    snapshot, archive, s3_server, recipient
):
    name = "berth-made-later"
    target = s3_target(name, recipient)
    before = storage.archive_path(snapshot.workload_id, snapshot.archive).read_bytes()

    failed = copied(snapshot, target)

    assert (failed.state, failed.failure_code) == (SnapshotCopy.State.FAILED, "no_bucket")
    assert failed.failure_message == "The bucket does not exist."
    snapshot.refresh_from_db()
    assert snapshot.is_ready
    assert storage.archive_path(snapshot.workload_id, snapshot.archive).read_bytes() == before

    s3_client().create_bucket(Bucket=name)
    try:
        again = copied(snapshot, target)
        assert again.state == SnapshotCopy.State.VERIFIED
    finally:
        for key in objects(name):
            s3_client().delete_object(Bucket=name, Key=key)
        s3_client().delete_bucket(Bucket=name)


def test_a_full_directory_fails_the_copy_and_leaves_nothing(snapshot, small_disk, recipient,
                                                           settings):
    target = BackupTarget.objects.create(name="small", kind="directory",
                                         directory=str(small_disk), recipients=recipient)
    row = copied(snapshot, target)
    assert (row.state, row.failure_code) == (SnapshotCopy.State.FAILED, "full")
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def test_an_object_that_reads_back_wrong_is_not_verified_and_is_removed(
    snapshot, bucket, recipient, monkeypatch
):
    """The target stores something else than was sent: a stand-in for a corrupting
    target (moto stores faithfully) that alters the stream on its way up."""
    real = offsite.S3Store.put

    def corrupting(store, name, source):
        class Flip:
            def read(self, amount=-1):
                chunk = source.read(amount)
                return bytes([chunk[0] ^ 1]) + chunk[1:] if chunk else chunk
        real(store, name, Flip())

    monkeypatch.setattr(offsite.S3Store, "put", corrupting)
    row = copied(snapshot, s3_target(bucket, recipient))
    assert (row.state, row.failure_code) == (SnapshotCopy.State.FAILED, "mismatch")
    assert objects(bucket) == []


def test_only_a_ready_snapshot_is_copied_and_one_copy_at_a_time(snapshot, bucket, recipient):
    from snapshots.models import Snapshot

    target = s3_target(bucket, recipient)
    queued = Snapshot.objects.create(workload=snapshot.workload)
    with pytest.raises(copies.CopyRefused, match="ready"):
        copies.request_copy(snapshot=queued, target=target)
    SnapshotCopy.objects.create(snapshot=snapshot, workload=snapshot.workload, target=target)
    with pytest.raises(copies.CopyRefused, match="under way"):
        copies.request_copy(snapshot=snapshot, target=target)


# --- the API -------------------------------------------------------------------------------

def test_the_api_queues_a_copy_and_lists_it(api_as, operator, snapshot, bucket, recipient):
    from django.contrib.auth.models import Permission

    operator.user_permissions.add(*Permission.objects.filter(
        codename__in=["add_snapshotcopy", "view_snapshotcopy"]))
    target = s3_target(bucket, recipient)
    url = f"/api/workloads/{snapshot.workload_id}/snapshots/{snapshot.pk}/copies"
    api = api_as(operator)

    answer = api.post(url, {"target": target.pk}, format="json")

    assert answer.status_code == 202, answer.content
    listed = api.get(url).json()
    assert [(c["target_name"], c["state"]) for c in listed] == [(target.name, "verified")]
    assert S3_SECRET not in answer.content.decode() + api.get(url).content.decode()


def test_copying_needs_its_own_permission_and_a_known_target(api_as, operator, viewer, snapshot,
                                                            bucket, recipient):
    from django.contrib.auth.models import Permission

    target = s3_target(bucket, recipient)
    url = f"/api/workloads/{snapshot.workload_id}/snapshots/{snapshot.pk}/copies"
    assert api_as(viewer).post(url, {"target": target.pk}, format="json").status_code == 403
    assert api_as(viewer).get(url).status_code == 403  # copies name targets: their own permission
    operator.user_permissions.add(Permission.objects.get(codename="add_snapshotcopy"))
    unknown = api_as(operator).post(url, {"target": 999}, format="json")
    assert unknown.status_code == 400 and "target" in unknown.json()
    assert not SnapshotCopy.objects.exists()


# --- the review of the copies ----------------------------------------------------------------

def test_a_local_archive_that_fails_mid_read_leaves_nothing_on_the_target(
    snapshot, bucket, recipient, monkeypatch
):
    """The disk under the archive fails after 4 MiB: a stand-in for an I/O error (a real
    one cannot be made on purpose here); the upload must be abandoned, not completed."""
    real = storage.open_archive

    class Failing:
        def __init__(self, inner):
            self.inner, self.read_so_far = inner, 0

        def read(self, amount=-1):
            if self.read_so_far > 4 << 20:
                raise OSError(5, "Input/output error")
            chunk = self.inner.read(amount)
            self.read_so_far += len(chunk)
            return chunk

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.inner.close()

    monkeypatch.setattr(storage, "open_archive", lambda *a: Failing(real(*a)))
    row = copied(snapshot, s3_target(bucket, recipient))
    assert (row.state, row.failure_code) == (SnapshotCopy.State.FAILED, "internal")
    assert objects(bucket) == []
    assert s3_client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.mark.parametrize("encrypted", [True, False])
def test_an_archive_that_changed_since_its_snapshot_is_not_copied(snapshot, bucket, recipient,
                                                                 encrypted):
    path = storage.archive_path(snapshot.workload_id, snapshot.archive)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1  # same size, one bit flipped
    path.write_bytes(bytes(data))
    row = copied(snapshot, s3_target(bucket, recipient if encrypted else ""))
    assert (row.state, row.failure_code) == (SnapshotCopy.State.FAILED, "mismatch")
    assert objects(bucket) == []


def test_a_copy_follows_the_target_as_it_is_when_it_runs(snapshot, archive, bucket, recipient,
                                                         monkeypatch):
    target = s3_target(bucket)  # unencrypted when the copy is asked for
    row = SnapshotCopy.objects.create(snapshot=snapshot, workload=snapshot.workload,
                                      target=target, encrypted=False)
    BackupTarget.objects.filter(pk=target.pk).update(recipients=recipient, unencrypted=False)
    row = copies.copy_snapshot(SnapshotCopy.objects.select_related(
        "target", "snapshot__workload__stage__project").get(pk=row.pk))
    row.refresh_from_db()
    assert row.state == SnapshotCopy.State.VERIFIED and row.encrypted
    sealed = fetch(bucket, f"berth/{row.remote_key}")
    assert sealed != archive and row.remote_key.endswith(".age")


def test_copying_again_never_touches_an_earlier_verified_copy(snapshot, bucket, recipient):
    target = s3_target(bucket, recipient)
    first = copied(snapshot, target)
    second = copied(snapshot, target)
    assert first.remote_key != second.remote_key
    assert sorted(k for k in objects(bucket) if k.endswith(".tar.zst.age")) == sorted(
        f"berth/{c.remote_key}" for c in (first, second))
    assert hashlib.sha256(fetch(bucket, f"berth/{first.remote_key}")).hexdigest() == first.sha256


def test_a_copy_whose_worker_died_is_failed_by_the_sweep(snapshot, bucket, recipient):
    from engine import sweep
    from tests.conftest import dead_owner

    target = s3_target(bucket, recipient)
    row = SnapshotCopy.objects.create(snapshot=snapshot, workload=snapshot.workload,
                                      target=target, state="uploading", owner=dead_owner(),
                                      remote_key="p/s/w/dead.tar.zst.age")
    started = s3_client().create_multipart_upload(Bucket=bucket, Key="berth/p/s/w/dead.tar.zst.age")

    sweep.recover_all()

    row.refresh_from_db()
    assert (row.state, row.failure_code) == (SnapshotCopy.State.FAILED, "interrupted")
    assert row.failure_message.startswith("The copy was interrupted")
    uploads = s3_client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert started["UploadId"] not in [u["UploadId"] for u in uploads]
    assert copied(snapshot, target).state == SnapshotCopy.State.VERIFIED  # and a retry works


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # the forked worker reads the rows
def test_a_worker_killed_mid_upload_leaves_no_verified_copy_and_no_multipart_upload(
    make_workload, tmp_path, bucket, recipient
):
    from engine import sweep

    snapshot = big_snapshot(make_workload(), tmp_path)
    target = s3_target(bucket, recipient)
    row = SnapshotCopy.objects.create(snapshot=snapshot, workload=snapshot.workload,
                                      target=target)
    kill_mid_upload(row, bucket)

    row.refresh_from_db()
    assert row.state == SnapshotCopy.State.UPLOADING  # what the killed worker left
    sweep.recover_all()

    row.refresh_from_db()
    assert (row.state, row.failure_code) == (SnapshotCopy.State.FAILED, "interrupted")
    assert s3_client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert objects(bucket) == []
    again = copied(snapshot, target)
    assert again.state == SnapshotCopy.State.VERIFIED


# --- reading a copy back -------------------------------------------------------------------

def test_a_verified_copy_downloads_into_the_archive(snapshot, archive, bucket, identity,
                                                   recipient):
    import io

    row = copied(snapshot, s3_target(bucket, recipient))
    out = io.BytesIO()
    size, digest = copies.download(row, out, identities=[identity])
    assert out.getvalue() == archive
    assert (size, digest) == (snapshot.size, snapshot.sha256)


def test_a_download_with_the_wrong_identity_is_refused(snapshot, bucket, recipient):
    import io

    from pyrage import x25519

    from lib import agecrypt

    row = copied(snapshot, s3_target(bucket, recipient))
    with pytest.raises(agecrypt.AgeError):
        copies.download(row, io.BytesIO(), identities=[x25519.Identity.generate()])


def test_a_download_that_breaks_off_is_a_read_failure_not_a_bad_key(
    snapshot, bucket, identity, recipient, monkeypatch
):
    """The target's stream fails half-way: a stand-in for a connection that drops (moto's
    does not, on purpose)."""
    import io

    row = copied(snapshot, s3_target(bucket, recipient))
    real = offsite.S3Store.open

    def breaking(store, name):
        body = real(store, name)

        class Broken:
            read_so_far = 0

            def read(self, amount=-1):
                if self.read_so_far > 2 << 20:
                    raise ConnectionResetError("connection reset by peer")
                chunk = body.read(amount)
                self.read_so_far += len(chunk)
                return chunk

            def close(self):
                body.close()

        return Broken()

    monkeypatch.setattr(offsite.S3Store, "open", breaking)
    with pytest.raises(offsite.OffsiteError) as failed:
        copies.download(row, io.BytesIO(), identities=[identity])
    assert failed.value.code == "no_read"


def test_a_download_into_a_full_disk_raises_the_disks_error(snapshot, bucket, identity,
                                                           recipient):
    class Full:
        def write(self, data):
            raise OSError(28, "No space left on device")

    row = copied(snapshot, s3_target(bucket, recipient))
    with pytest.raises(OSError, match="No space") as failed:
        copies.download(row, Full(), identities=[identity])
    assert not isinstance(failed.value, offsite.OffsiteError)


def test_an_unencrypted_copy_downloads_as_it_is(snapshot, archive, bucket):
    import io

    row = copied(snapshot, s3_target(bucket))
    out = io.BytesIO()
    assert copies.download(row, out) == (snapshot.size, snapshot.sha256)
    assert out.getvalue() == archive


def test_a_copy_with_a_wrong_key_fails_as_authentication_before_reading(snapshot, s3_auth,
                                                                        recipient):
    target = BackupTarget(name="auth", kind="s3", endpoint_url=s3_auth["endpoint"],
                          region="us-east-1", bucket=s3_auth["bucket"], prefix="copies",
                          access_key_id=s3_auth["berth"]["id"], recipients=recipient)
    target.set_secret_access_key("not-the-secret")
    target.save()
    row = copied(snapshot, target)
    assert (row.state, row.failure_code) == (SnapshotCopy.State.FAILED, "authentication")
    assert row.bytes_done == 0


# --- the sidecar -----------------------------------------------------------------------------

SECRET_VALUE = "sidecar-secret-5e1f"  # noqa: S105 - the value under test


@pytest.fixture
def defined(snapshot):
    """The snapshot's workload with a volume, a port, a plain and a secret env var."""
    from workloads.models import EnvVar, PortMapping, VolumeMount

    workload = snapshot.workload
    VolumeMount.objects.create(workload=workload, scope="stage", source="data", target="/data")
    PortMapping.objects.create(workload=workload, host_port=18555, container_port=80)
    EnvVar.objects.create(workload=workload, name="MODE", value="prod")
    secret = EnvVar(workload=workload, name="TOKEN")
    secret.set_value(SECRET_VALUE, secret=True)
    secret.save()
    return snapshot


@pytest.mark.skipif(shutil.which("age") is None, reason="SKIPPED FOR LACK OF age")
def test_an_encrypted_sidecar_holds_the_definition_and_opens_with_the_age_cli(
    defined, bucket, identity, recipient, tmp_path
):
    import json

    row = copied(defined, s3_target(bucket, recipient))
    side = "berth/" + row.remote_key.removesuffix(".tar.zst.age") + ".json.age"
    sealed = fetch(bucket, side)
    assert SECRET_VALUE.encode() not in sealed and b"TOKEN" not in sealed
    (tmp_path / "side.age").write_bytes(sealed)
    (tmp_path / "key.txt").write_text(f"{identity}\n")
    plain = subprocess.run(["age", "-d", "-i", str(tmp_path / "key.txt"),
                            str(tmp_path / "side.age")], capture_output=True, check=True).stdout
    document = json.loads(plain)
    assert document["format"] == "berth-copy-sidecar"
    assert document["snapshot"]["sha256"] == defined.sha256
    definition = document["workload"]
    assert definition["slug"] == defined.workload.slug
    assert definition["volumes"] == [{"scope": "stage", "source": "data", "target": "/data",
                                      "read_only": False}]
    assert definition["ports"][0]["host_port"] == 18555
    assert {"name": "TOKEN", "secret": True, "value": SECRET_VALUE} in definition["env"]


def test_an_unencrypted_sidecar_leaves_secret_values_out(defined, bucket):
    import json

    from workloads.models import Workload

    Workload.objects.filter(pk=defined.workload_id).update(build_args={"NPM_TOKEN": "npm-tok-1"})
    row = copied(defined, s3_target(bucket))
    document = json.loads(fetch(bucket, "berth/" + row.remote_key.removesuffix(".tar.zst")
                                + ".json"))
    assert {"name": "TOKEN", "secret": True, "value": None} in document["workload"]["env"]
    assert {"name": "MODE", "secret": False, "value": "prod"} in document["workload"]["env"]
    assert SECRET_VALUE not in json.dumps(document)
    assert document["workload"]["build_args"] == {"NPM_TOKEN": None}
    assert "npm-tok-1" not in json.dumps(document)
