"""Concurrent extractions reserve what they declare, so together they cannot fill the disk;
a dead owner's reservation does not count and is swept; caps come before free space.

The data dir is a 64 MiB tmpfs here, so free space is exact and no other test's
writes move it; BERTH_SNAPSHOT_RESERVE_BYTES keeps 16 MiB of it, leaving 48 MiB:
one import declaring 28 MiB fits, two at once do not.
"""

from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from engine import disaster, imports
from engine.sweep import recover_all
from lib import owners
from snapshots import reservations
from snapshots.errors import ArchiveError
from snapshots.models import Snapshot
from tests.fixtures.forking import fork
from tests.snapshots import hostile
from tests.snapshots.conftest import leftovers
from tests.snapshots.trees import archive_of, extract_bytes

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]

MIB = 1 << 20
DECLARED = 28 * MIB


@pytest.fixture
def small_data_dir(tmp_path, settings):
    mount = tmp_path / "data"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m,nr_inodes=20000", "tmpfs", str(mount)],
        capture_output=True, check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    settings.DATA_DIR = mount
    settings.BERTH_SNAPSHOT_RESERVE_BYTES = 16 * MIB
    settings.BERTH_SNAPSHOT_RESERVE_INODES = 1000
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.fixture
def big_archive(tmp_path) -> bytes:
    """Two volumes, the first holding one 28 MiB file of zeros (a few KiB compressed)."""
    first, second = tmp_path / "v0", tmp_path / "v1"
    first.mkdir()
    second.mkdir()
    with open(first / "big", "wb") as f:
        f.truncate(DECLARED)
    return archive_of([first, second])


@pytest.fixture
def paused(tmp_path, monkeypatch):
    """Extractions in forked children stop right after reserving, until `go` exists."""
    gate = tmp_path / "gate"
    gate.mkdir()
    real, parent = reservations.reserve, os.getpid()

    def reserve_then_wait(*args, **kwargs):
        reservation = real(*args, **kwargs)
        if os.getpid() != parent:
            (gate / "reserved").touch()
            while not (gate / "go").exists():
                time.sleep(0.01)
        return reservation

    monkeypatch.setattr(reservations, "reserve", reserve_then_wait)
    return gate


def wait_for(path: Path, child) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def upload(client, workload, data: bytes):
    return client.post(
        f"/api/workloads/{workload.pk}/snapshots/import",
        {"archive": SimpleUploadedFile("s.tar.zst", data, content_type="application/zstd")},
        format="multipart",
    )


def reservation_files() -> list[str]:
    where = reservations.directory()
    return sorted(p.name for p in where.iterdir() if p.name != reservations.LOCK_NAME) \
        if where.is_dir() else []


def validate_in_child(staged: imports.Staged):
    def validate() -> None:
        imports.validate(staged.path, volume_count=2)

    return fork(validate)


def reserve_here(where: Path, size: int) -> reservations.Reservation:
    """A reservation of this (live) process, as an extraction in a thread would hold."""
    device = os.stat(where).st_dev
    fd = os.open(where, os.O_RDONLY)
    try:
        return reservations.reserve({device: fd}, [reservations.Need(device, size, 1)],
                                    reserve_bytes=0, reserve_inodes=0)
    finally:
        os.close(fd)


def test_two_imports_that_together_exceed_the_free_space_one_is_refused_with_507(
        small_data_dir, big_archive, paused, api_as, operator, volume_workload):
    workload, _paths = volume_workload
    staged = imports.stage(io.BytesIO(big_archive))
    child = validate_in_child(staged)
    wait_for(paused / "reserved", child)
    [held] = reservation_files()
    assert owners.from_token(held) == owners.of(child.pid)
    before = leftovers()

    response = upload(api_as(operator), workload, big_archive)

    assert response.status_code == 507, response.json()
    assert "free space" in response.json()["detail"]
    assert not Snapshot.objects.exists()
    assert leftovers() == before  # only the child's own upload and scratch directory
    assert reservation_files() == [held]

    (paused / "go").touch()
    assert child.wait(60) == 0, child.communicate()
    assert reservation_files() == []
    imports.storage.discard(staged.path)
    # Alone, the same import fits: it was the other one's reservation that refused it.
    response = upload(api_as(operator), workload, big_archive)
    assert response.status_code == 201, response.json()
    assert leftovers() == [] and reservation_files() == []


def test_a_dead_owners_reservation_does_not_count_and_is_swept(
        small_data_dir, big_archive, paused, api_as, operator, volume_workload):
    workload, _paths = volume_workload
    staged = imports.stage(io.BytesIO(big_archive))
    child = validate_in_child(staged)
    wait_for(paused / "reserved", child)
    child.kill()
    child.wait(30)
    [dead] = reservation_files()
    device = os.stat(small_data_dir).st_dev
    assert reservations.held(device) == (0, 0)
    # A live one of this process, which the sweep must leave alone.
    live = reserve_here(small_data_dir, MIB)
    assert reservations.held(device) == (MIB, 1)
    live.release()

    response = upload(api_as(operator), workload, big_archive)

    assert response.status_code == 201, response.json()
    assert reservation_files() == [dead]  # the import released its own
    live = reserve_here(small_data_dir, MIB)
    said: list[str] = []
    recover_all(say=said.append)
    assert reservation_files() == [live.path.name]
    assert any("1 free-space reservation" in line for line in said)
    live.release()
    assert reservation_files() == []


def three_hundred_gib(files: int) -> bytes:
    size = 300 << 30
    manifest = hostile.manifest([(files, 1, size), (0, 1, 0)])
    return hostile.zst(hostile.tar(
        hostile.manifest_member(manifest), hostile.directory("volumes/0"),
        # A pax size: 300 GiB does not fit the header's eleven octal digits.
        hostile.pax({"size": str(size)}), hostile.header(b"volumes/0/big"), end=b"",
    ))


@pytest.mark.parametrize(("files", "message"), [
    (1, "more data in volume 0 than its files may hold under the per-file limit"),
    (2, "volumes/0/big is larger than the per-file limit"),
])
def test_a_declared_300_gib_file_is_an_invalid_archive_not_a_full_disk(
        files, message, small_data_dir, api_as, operator, volume_workload):
    workload, _paths = volume_workload

    response = upload(api_as(operator), workload, three_hundred_gib(files))

    assert response.status_code == 400, response.json()
    assert message in response.json()["archive"][0]
    assert not Snapshot.objects.exists()
    assert leftovers() == [] and reservation_files() == []


def test_others_subtract_only_what_an_extraction_has_still_to_write(tmp_path, monkeypatch):
    monkeypatch.setattr(reservations, "UPDATE_BYTES", 1)
    device = os.stat(tmp_path).st_dev
    reservation = reserve_here(tmp_path, 10 * MIB)
    assert reservations.held(device) == (10 * MIB, 1)

    reservation.wrote(device, 4 * MIB)

    assert reservations.held(device) == (6 * MIB, 0)
    assert reservations.held(device + 1) == (0, 0)  # another filesystem's space is its own
    reservation.release()
    assert reservations.held(device) == (0, 0) and reservation_files() == []


def test_an_extraction_that_fails_after_reserving_releases_its_reservation(tmp_path,
                                                                           monkeypatch):
    source = tmp_path / "v"
    source.mkdir()
    (source / "a").write_bytes(os.urandom(3 * MIB))
    data = archive_of([source])
    seen: list[list[str]] = []
    real = reservations.reserve

    def watch(*args, **kwargs):
        reservation = real(*args, **kwargs)
        seen.append(reservation_files())
        return reservation

    monkeypatch.setattr(reservations, "reserve", watch)
    with pytest.raises(ArchiveError):
        extract_bytes(data[:len(data) // 2], tmp_path / "staging", 1)
    assert len(seen) == 1 and len(seen[0]) == 1  # it had reserved, then failed
    assert reservation_files() == []
    assert not (tmp_path / "staging").exists()


def test_an_upload_does_not_eat_into_what_an_extraction_has_reserved(
        small_data_dir, api_as, operator, volume_workload):
    workload, _paths = volume_workload
    body = os.urandom(12 * MIB)  # of the 48 MiB above the reserve, 40 are promised below
    other = reserve_here(small_data_dir, 40 * MIB)

    response = upload(api_as(operator), workload, body)

    assert response.status_code == 507, response.json()
    assert "receive the upload" in response.json()["detail"]
    assert leftovers() == [] and not Snapshot.objects.exists()
    other.release()
    response = upload(api_as(operator), workload, body)
    assert response.status_code == 400  # received in full, then refused as no archive
    assert leftovers() == []


def test_a_recovery_checks_its_room_beside_what_extractions_have_reserved(small_data_dir):
    disaster.check_room(20 * MIB)
    other = reserve_here(small_data_dir, 40 * MIB)

    with pytest.raises(disaster.RecoveryError) as caught:
        disaster.check_room(20 * MIB)

    assert caught.value.code == "no_space"
    other.release()
    disaster.check_room(20 * MIB)


def test_a_reservation_counts_the_blocks_tiny_entries_take(tmp_path, db):
    # 150,000 entries of 100 kB in all take at least a block each on disk (review finding).
    import json

    from snapshots import archive
    from snapshots.archive_format import Limits

    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    extractor = archive._Extractor([fd], Limits.from_settings(), None)
    try:
        extractor.declared = [{"index": 0, "bytes": 100_000, "files": 100_000,
                               "directories": 50_000}]
        extractor._reserve()
        [need] = json.loads(extractor.reservation.path.read_text())["needs"]
        assert need["bytes"] >= 100_000 + 150_000 * os.fstatvfs(fd).f_frsize
    finally:
        extractor.close()
        os.close(fd)
