"""The real S3 server (moto's, started by scripts/start-s3.sh), buckets and age keys."""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
from pyrage import x25519

from backups.models import BackupTarget, SnapshotCopy
from engine import captures, copies
from snapshots.models import Snapshot
from tests.snapshots.conftest import add_volume, fill

S3_ENDPOINT = f"http://127.0.0.1:{os.environ.get('BERTH_TEST_S3_PORT', '5002')}"
# moto's server takes any key pair unless told to check them.
S3_KEY_ID, S3_SECRET = "berth-test-key-id", "berth-test-secret-9b1e"


@pytest.fixture(scope="session")
def s3_server():
    """The S3 server answering over HTTP, or a loud skip (a failure under CI)."""
    try:
        urllib.request.urlopen(S3_ENDPOINT + "/", timeout=3)  # noqa: S310 - the test server
    except urllib.error.HTTPError:
        pass  # it answers
    except OSError:
        reason = f"no S3 server on {S3_ENDPOINT} (run `make services`)"
        if os.environ.get("BERTH_REQUIRE_DOCKER") == "1":
            pytest.fail(f"BERTH_REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(f"SKIPPED FOR LACK OF S3: {reason}")
    return S3_ENDPOINT


def s3_client():
    return boto3.client("s3", endpoint_url=S3_ENDPOINT, region_name="us-east-1",
                        aws_access_key_id=S3_KEY_ID, aws_secret_access_key=S3_SECRET)


@pytest.fixture
def bucket(s3_server) -> str:
    """A fresh bucket of this test's own; emptied and removed afterwards."""
    name = f"berth-{uuid.uuid4().hex[:12]}"
    client = s3_client()
    client.create_bucket(Bucket=name)
    yield name
    for item in client.list_objects_v2(Bucket=name).get("Contents", []):
        client.delete_object(Bucket=name, Key=item["Key"])
    client.delete_bucket(Bucket=name)


def s3_target(bucket: str, recipient: str = "", **fields) -> BackupTarget:
    """A saved target on the test S3 server (unencrypted without a recipient)."""
    target = BackupTarget(name=fields.pop("name", f"s3-{bucket}"), kind="s3",
                          endpoint_url=S3_ENDPOINT, region="us-east-1", bucket=bucket,
                          prefix=fields.pop("prefix", "berth"), access_key_id=S3_KEY_ID,
                          recipients=recipient,
                          unencrypted=not recipient, **fields)
    target.set_secret_access_key(S3_SECRET)
    target.full_clean()
    target.save()
    return target


def objects(bucket: str) -> list[str]:
    return [item["Key"] for item in s3_client().list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.fixture
def identity() -> x25519.Identity:
    return x25519.Identity.generate()


@pytest.fixture
def recipient(identity) -> str:
    return str(identity.to_public())


@pytest.fixture
def roots(tmp_path, settings) -> Path:
    root = tmp_path / "nas"
    root.mkdir()
    settings.BERTH_BACKUP_DIRECTORY_ROOTS = [str(root)]
    settings.BERTH_ABSOLUTE_VOLUME_ROOTS = []  # the tests' own default is all of /tmp
    return root


@pytest.fixture
def small_disk(roots):
    """A 64 KiB tmpfs under the roots, filled up (tmpfs needs root, as Berth's tests run)."""
    mount = roots / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass  # full
        finally:
            os.close(fd)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.fixture(scope="session")
def s3_auth() -> dict:
    """The S3 server that checks keys (127.0.0.1:5003) with its users' keys and bucket,
    as scripts/start-s3.sh set them up; a loud skip (a failure under CI) without it."""
    import json

    path = Path(os.environ.get("BERTH_SERVICES_DIR", "/tmp/berth-services")) / "s3-auth.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        reason = f"no key-checking S3 server ({path} is missing; run `make services`)"
        if os.environ.get("BERTH_REQUIRE_DOCKER") == "1":
            pytest.fail(f"BERTH_REQUIRE_DOCKER=1 but {reason}")
        pytest.skip(f"SKIPPED FOR LACK OF S3: {reason}")


# --- targets and copies ----------------------------------------------------------------------

def copied(snapshot, target) -> SnapshotCopy:
    row = copies.request_copy(snapshot=snapshot, target=target)  # runs at once (tasks in sync)
    row.refresh_from_db()
    return row


FILES = {"index.html": b"<h1>recovered</h1>", "notes/a.txt": b"a" * 5000}


@pytest.fixture
def copy_of(make_workload, bucket, recipient):
    """A workload with one volume of data, snapshotted and copied to an encrypted target."""
    workload = make_workload()
    volume = add_volume(workload, "data", "/data")
    fill(volume, FILES)
    snapshot = captures.capture_snapshot(workload=workload)
    assert snapshot.state == Snapshot.State.READY, snapshot.reason
    row = copied(snapshot, s3_target(bucket, recipient))
    assert row.state == row.State.VERIFIED, row.failure_code
    return row, volume


# --- a worker killed mid-upload ------------------------------------------------------------

def big_snapshot(workload, tmp_path: Path) -> Snapshot:
    """A ready snapshot whose archive (24 MiB, incompressible) is a multipart upload."""
    from tests.snapshots.restoring import snapshot_from_bytes
    from tests.snapshots.trees import archive_of

    volume = tmp_path / "big"
    volume.mkdir()
    (volume / "data.bin").write_bytes(os.urandom(24 << 20))
    data = archive_of([volume])
    volumes = [{"scope": "absolute", "source": "/v", "target": "/v", "bytes": len(data),
                "files": 1}]
    return snapshot_from_bytes(workload, data, {"volumes": volumes})


def kill_mid_upload(row: SnapshotCopy, bucket: str) -> None:
    """Run the copy's task in a forked worker and SIGKILL it once its multipart upload began.

    Each read of the upload waits a little past the first part: a network slower than
    this loopback, so that the kill lands mid-upload. The test must run with
    transaction=True (the forked worker reads the rows).
    """
    import signal
    import time

    from tests.fixtures import forking

    def worker() -> None:
        from engine import tasks

        counted = copies._Counted.read

        def slow(self, amount=-1):
            if self.size > 9 << 20:  # once the first part is on its way
                time.sleep(0.2)
            return counted(self, amount)

        copies._Counted.read = slow
        tasks.run_copy(row.pk)

    child = forking.fork(worker)
    try:
        deadline = time.monotonic() + 60
        while not s3_client().list_multipart_uploads(Bucket=bucket).get("Uploads"):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "no multipart upload began"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
