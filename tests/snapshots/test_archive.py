"""The safe extractor against hostile archives, and round trips through capture and extract."""

from __future__ import annotations

import io
import os
import socket
import stat
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from snapshots import archive, archive_format, tarfmt, tarstream
from snapshots.errors import ArchiveError, InsufficientSpace
from tests.snapshots import hostile
from tests.snapshots.trees import LIMITS, archive_of, describe, extract_bytes, regular_only

CASE_NAMES = [case.name for case in hostile.corpus("/placeholder/canary")]


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """A tree beside the staging directory that every attack aims at."""
    root = tmp_path / "canary"
    (root / "sub").mkdir(parents=True)
    (root / "keep.txt").write_text("the canary")
    (root / "sub" / "deep.txt").write_text("deeper")
    return root


def test_the_corpus_is_large_and_every_case_is_named_once():
    assert len(CASE_NAMES) >= 40
    assert len(set(CASE_NAMES)) == len(CASE_NAMES)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_it_refuses_a_hostile_archive_and_leaves_nothing(name, tmp_path, canary):
    case = next(c for c in hostile.corpus(str(canary)) if c.name == name)
    before = describe(canary)
    staging = tmp_path / "staging"

    with pytest.raises(ArchiveError, match=case.error) as caught:
        archive.extract_tree(io.BytesIO(case.data), str(staging),
                             volume_count=case.volume_count, limits=case.limits)

    assert str(caught.value)  # a message a person can read
    assert not staging.exists(), "the staging directory was left behind"
    assert sorted(os.listdir(tmp_path)) == ["canary"], "something was written beside staging"
    assert describe(canary) == before, "the canary tree changed"
    assert not os.path.lexists("/pwned") and not os.path.lexists(tmp_path.parent / "pwned")


def test_the_extractor_does_not_use_tarfile():
    for module in (archive, tarfmt, tarstream):
        source = Path(module.__file__).read_text()
        assert "import tarfile" not in source and "tarfile." not in source


def test_free_space_errors_are_their_own_kind(tmp_path):
    case = next(c for c in hostile.corpus(str(tmp_path)) if c.name == "no-free-space")
    with pytest.raises(InsufficientSpace):
        hostile_extract(case, tmp_path / "staging")


def hostile_extract(case: hostile.Case, staging: Path) -> archive.Extracted:
    return archive.extract_tree(io.BytesIO(case.data), str(staging),
                                volume_count=case.volume_count, limits=case.limits)


def test_it_never_touches_a_staging_directory_that_already_exists(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "mine").write_text("not the extractor's")
    with pytest.raises(ArchiveError, match="already exists"):
        extract_bytes(hostile.archive(), staging, 1, hostile.LIMITS)
    assert (staging / "mine").read_text() == "not the extractor's"


def test_per_volume_destinations_must_not_exist_either(tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    with pytest.raises(ArchiveError, match="already exists"):
        archive.extract(io.BytesIO(hostile.archive()), [str(tmp_path / "new"), str(taken)],
                        limits=hostile.LIMITS)
    assert not (tmp_path / "new").exists() and taken.is_dir()


# --- what a well-formed archive gives back ------------------------------------------------

def test_it_strips_setuid_setgid_and_sticky_bits(tmp_path):
    data = hostile.archive(
        hostile.directory("volumes/0/shared", mode=0o1777),
        hostile.member("volumes/0/suid", b"#!/bin/sh\n", mode=0o6755),
        volumes=[(1, 2, 10)],
    )
    extract_bytes(data, tmp_path / "s", 1, hostile.LIMITS)
    root = tmp_path / "s" / "volumes" / "0"
    assert stat.S_IMODE(os.lstat(root / "suid").st_mode) == 0o755
    assert stat.S_IMODE(os.lstat(root / "shared").st_mode) == 0o777


def test_it_ignores_extended_attributes_and_acls(tmp_path):
    data = hostile.archive(
        hostile.pax({"SCHILY.xattr.security.capability": b"\x01\x00\x00\x02",
                     "SCHILY.acl.access": "user::rwx", "LIBARCHIVE.xattr.user.x": "eA=="}),
        hostile.member("volumes/0/f", b"data"),
        volumes=[(1, 1, 4)],
    )
    extract_bytes(data, tmp_path / "s", 1, hostile.LIMITS)
    path = tmp_path / "s" / "volumes" / "0" / "f"
    assert path.read_bytes() == b"data"
    assert os.listxattr(path) == []


def test_it_follows_benign_long_names_prefixes_and_pax_times(tmp_path):
    long_name = "volumes/0/" + "n" * 150
    data = hostile.archive(
        hostile.longname(long_name.encode()), hostile.member("volumes/0/x", b"gnu"),
        hostile.member(b"f", b"prefixed", prefix=b"volumes/0"),
        hostile.pax({"mtime": "1234567890.123456789", "uid": "4000000", "gid": "70000"}),
        hostile.member("volumes/0/p", b"pax"),
        volumes=[(3, 1, 14)],
    )
    result = extract_bytes(data, tmp_path / "s", 1, hostile.LIMITS)
    root = tmp_path / "s" / "volumes" / "0"
    assert (root / ("n" * 150)).read_bytes() == b"gnu"
    assert (root / "f").read_bytes() == b"prefixed"
    info = os.lstat(root / "p")
    assert (info.st_mtime_ns, info.st_uid, info.st_gid) == (1234567890123456789, 4000000, 70000)
    assert result.files == [3] and result.bytes == [14]


def test_it_accepts_gnu_tar_record_padding(tmp_path):
    body = hostile.tar(hostile.manifest_member(), hostile.directory("volumes/0"))
    padded = body + bytes(-len(body) % 10240)
    extract_bytes(hostile.zst(padded), tmp_path / "s", 1, hostile.LIMITS)
    assert (tmp_path / "s" / "volumes" / "0").is_dir()


def test_progress_is_reported_while_writing(tmp_path):
    source = tmp_path / "v"
    source.mkdir()
    (source / "big").write_bytes(os.urandom(20 << 20))
    seen: list[int] = []
    archive.extract_tree(io.BytesIO(archive_of([source])), str(tmp_path / "s"),
                         volume_count=1, limits=LIMITS, progress=seen.append)
    assert seen and seen == sorted(seen) and seen[-1] <= 20 << 20


def test_a_durable_extraction_flushes_and_still_matches(tmp_path):
    source = tmp_path / "v"
    source.mkdir()
    (source / "f").write_text("x")
    archive.extract_tree(io.BytesIO(archive_of([source])), str(tmp_path / "s"),
                         volume_count=1, limits=LIMITS, durable=True)
    assert describe(tmp_path / "s" / "volumes" / "0") == describe(source)


# --- capture side: what is stored, what is skipped ----------------------------------------

def test_special_files_are_skipped_and_listed_and_hard_links_become_files(tmp_path):
    source = tmp_path / "v"
    (source / "d").mkdir(parents=True)
    (source / "d" / "f").write_bytes(b"content")
    os.link(source / "d" / "f", source / "hard")
    os.symlink("/etc/passwd", source / "link")
    os.mkfifo(source / "fifo")
    os.mknod(source / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(source / "sock"))
        data = archive_of([source])

    result = extract_bytes(data, tmp_path / "s", 1)

    skipped = {(e["path"], e["type"]) for e in result.manifest["skipped"]}
    assert skipped == {("link", "symlink"), ("fifo", "fifo"), ("null", "character device"),
                       ("sock", "socket")}
    assert result.manifest["skipped_count"] == 4
    restored = tmp_path / "s" / "volumes" / "0"
    assert (restored / "hard").read_bytes() == b"content"
    assert os.lstat(restored / "hard").st_nlink == 1  # a separate file, not a link
    assert regular_only(describe(restored)) == regular_only(describe(source))


def test_names_the_format_cannot_hold_are_skipped_and_listed(tmp_path):
    source = tmp_path / "v"
    source.mkdir()
    (source / "ok").write_text("fine")
    (source / "back\\slash").write_text("x")
    (source / "new\nline").write_text("x")
    with open(os.path.join(os.fsencode(source), b"\xff\xfe"), "w") as fh:
        fh.write("x")
    deep = source.joinpath(*["d"] * 10)
    deep.mkdir(parents=True)

    result = extract_bytes(archive_of([source], limits=replace(LIMITS, max_depth=5)),
                           tmp_path / "s", 1, replace(LIMITS, max_depth=5))

    reasons = {e["path"]: e["reason"] for e in result.manifest["skipped"]}
    assert set(reasons) == {"back\\slash", "new\nline", "\\xff\\xfe", "d/d/d/d/d/d"}
    assert "nested too deeply" in reasons["d/d/d/d/d/d"]
    assert sorted(os.listdir(tmp_path / "s" / "volumes" / "0")) == ["d", "ok"]


def test_a_capture_over_the_caps_fails_instead_of_writing_what_extract_refuses(tmp_path):
    from snapshots.errors import CaptureError

    source = tmp_path / "v"
    source.mkdir()
    (source / "big").write_bytes(b"x" * 2048)
    with pytest.raises(CaptureError, match="per-file limit"):
        archive_of([source], limits=replace(LIMITS, max_file_bytes=1024))
    with pytest.raises(CaptureError, match="more data"):
        archive_of([source], limits=replace(LIMITS, max_bytes=1024))
    with pytest.raises(CaptureError, match="entries"):
        archive_of([source], limits=replace(LIMITS, max_entries=1))


def test_a_missing_volume_root_is_captured_as_an_empty_directory(tmp_path):
    result = extract_bytes(archive_of([tmp_path / "never-deployed"]), tmp_path / "s", 1)
    assert result.manifest["volumes"][0]["missing"] is True
    assert os.listdir(tmp_path / "s" / "volumes" / "0") == []


def test_gnu_tar_reads_berths_archives(tmp_path):
    import subprocess

    source = tmp_path / "v"
    (source / "dir").mkdir(parents=True)
    (source / "dir" / ("long" * 40)).write_text("x")
    (tmp_path / "a.tar.zst").write_bytes(archive_of([source]))
    subprocess.run(["zstd", "-dq", str(tmp_path / "a.tar.zst")], check=True)
    listing = subprocess.run(
        ["tar", "-tf", str(tmp_path / "a.tar")], check=True, capture_output=True, text=True
    ).stdout.split()
    assert listing == ["manifest.json", "volumes/0/", "volumes/0/dir/",
                       "volumes/0/dir/" + "long" * 40]


# --- the round trip, for random trees ------------------------------------------------------

NAMES = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"),
    min_size=1, max_size=12,
).filter(lambda n: n not in {".", ".."})
CONTENTS = st.one_of(
    st.binary(max_size=2048),
    st.builds(lambda chunk, n: chunk * n, st.binary(min_size=1, max_size=16),
              st.integers(1, 200_000)),
)
ENTRY = st.tuples(
    st.lists(NAMES, min_size=1, max_size=3),  # path below the volume root
    st.booleans(),  # a directory?
    CONTENTS,
    st.integers(0, 0o777),  # mode
    st.integers(0, 2**32 - 2), st.integers(0, 2**32 - 2),  # uid, gid
    st.integers(0, 2**33 * 10**9),  # mtime in nanoseconds
)
VOLUME = st.tuples(st.lists(ENTRY, max_size=12), st.integers(0, 0o777),
                   st.integers(0, 2**33 * 10**9))


def build(root: Path, entries, root_mode: int, root_mtime: int) -> None:
    root.mkdir()
    directories = [(root, root_mode, 0, 0, root_mtime)]
    kinds: dict[tuple, bool] = {}
    for parts, is_dir, content, mode, uid, gid, mtime in entries:
        key = tuple(parts)
        parents_ok = all(kinds.get(key[:i]) is True for i in range(1, len(key)))
        if key in kinds or not parents_ok:
            continue
        kinds[key] = is_dir
        path = root.joinpath(*parts)
        if is_dir:
            path.mkdir()
            directories.append((path, mode, uid, gid, mtime))
        else:
            path.write_bytes(content)
            os.chown(path, uid, gid)
            os.chmod(path, mode)
            os.utime(path, ns=(mtime, mtime))
    for path, mode, uid, gid, mtime in reversed(directories):
        os.chown(path, uid, gid)
        os.chmod(path, mode)
        os.utime(path, ns=(mtime, mtime))


@pytest.mark.skipif(os.geteuid() != 0, reason="owners are only restored by root")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(VOLUME, min_size=1, max_size=3))
def test_random_trees_round_trip_byte_for_byte(volumes):
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        roots = []
        for index, (entries, root_mode, root_mtime) in enumerate(volumes):
            build(base / f"v{index}", entries, root_mode, root_mtime)
            roots.append(base / f"v{index}")
        before = [describe(root) for root in roots]

        result = extract_bytes(archive_of(roots), base / "staging", len(roots))

        after = [describe(base / "staging" / "volumes" / str(i)) for i in range(len(roots))]
        assert after == before
        assert result.files == [sum(v[0] == "file" for v in tree.values()) for tree in before]


# --- a real small filesystem -----------------------------------------------------------------

@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs with 200 inodes, or a skip where mounting is not allowed."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,nr_inodes=200", "tmpfs", str(mount)],
        capture_output=True, check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_filesystem_stops_the_extraction_and_it_cleans_up(small_fs, tmp_path):
    source = tmp_path / "v"
    source.mkdir()
    for i in range(3):
        (source / f"f{i}").write_bytes(os.urandom(1 << 20))
    with pytest.raises(InsufficientSpace, match="free space"):
        extract_bytes(archive_of([source]), small_fs / "staging", 1)
    assert os.listdir(small_fs) == []


def test_running_out_of_inodes_stops_the_extraction(small_fs, tmp_path):
    source = tmp_path / "v"
    source.mkdir()
    for i in range(300):
        (source / f"f{i}").write_bytes(b"x")
    with pytest.raises(InsufficientSpace, match="free inodes"):
        extract_bytes(archive_of([source]), small_fs / "staging", 1)
    assert os.listdir(small_fs) == []


def test_a_write_that_meets_a_full_disk_is_reported_as_such(small_fs, tmp_path, monkeypatch):
    monkeypatch.setattr(archive._Space, "claim", lambda self, size: None)
    source = tmp_path / "v"
    source.mkdir()
    (source / "big").write_bytes(os.urandom(3 << 20))
    with pytest.raises(InsufficientSpace, match="free space"):
        extract_bytes(archive_of([source]), small_fs / "staging", 1)
    assert os.listdir(small_fs) == []


# --- the manifest's counts are upper bounds, checked while writing ------------------------

@pytest.mark.parametrize(("volumes", "members"), [
    ([(1, 1, 10)], [hostile.member("volumes/0/a", b"x" * 10),
                    hostile.member("volumes/0/b", b"y")]),          # one file too many
    ([(1, 1, 10)], [hostile.member("volumes/0/a", b"x" * 11)]),     # bytes over
    ([(0, 1, 0)], [hostile.directory("volumes/0/d")]),              # a directory too many
])
def test_an_archive_holding_more_than_its_manifest_is_refused_at_once(volumes, members,
                                                                       tmp_path, monkeypatch):
    written: list[int] = []
    real = archive._Extractor._write_file

    def spy(self, stream, index, parts, member):
        written.append(member.size)
        return real(self, stream, index, parts, member)

    monkeypatch.setattr(archive._Extractor, "_write_file", spy)
    data = hostile.zst(hostile.tar(hostile.manifest_member(hostile.manifest(volumes)),
                                   hostile.directory("volumes/0"), *members))
    with pytest.raises(ArchiveError, match="more than its manifest declares"):
        archive.extract_tree(io.BytesIO(data), str(tmp_path / "s"), volume_count=1,
                     limits=hostile.LIMITS)
    assert sum(written) <= volumes[0][2]  # nothing beyond the declared bytes was written
    assert not (tmp_path / "s").exists()


def test_a_manifest_declaring_more_than_the_free_space_is_refused_before_writing(tmp_path):
    stat = os.statvfs(tmp_path)
    free = stat.f_bavail * stat.f_frsize
    limits = replace(hostile.LIMITS, max_bytes=1 << 62, max_file_bytes=1 << 62,
                     reserve_bytes=free - (1 << 20))
    data = hostile.zst(hostile.tar(hostile.manifest_member(hostile.manifest([(1, 1, 2 << 20)])),
                                   hostile.directory("volumes/0"),
                                   hostile.member("volumes/0/f", b"x" * (2 << 20))))
    with pytest.raises(InsufficientSpace):
        archive.extract_tree(io.BytesIO(data), str(tmp_path / "s"), volume_count=1, limits=limits)
    assert not (tmp_path / "s").exists()


# --- extended headers have a budget ----------------------------------------------------------

def _ignored_records(count: int, value: str = "") -> dict[str, str]:
    return {f"SCHILY.xattr.{i:x}": value for i in range(count)}


def test_a_pax_header_with_too_many_records_is_refused(tmp_path):
    data = hostile.archive(hostile.pax(_ignored_records(tarstream.MAX_PAX_RECORDS + 1)),
                           hostile.member("volumes/0/f", b"x"))
    with pytest.raises(ArchiveError, match="too many records"):
        archive.extract_tree(io.BytesIO(data), str(tmp_path / "s"), volume_count=1,
                             limits=hostile.LIMITS)


def test_the_extended_headers_of_an_archive_have_a_total_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(tarstream, "MAX_META_EXCESS_BYTES", 20_000)
    big = hostile.pax(_ignored_records(10, "v" * 1000))  # ~10 KiB: ~6 KiB over the allowance
    members = [big + hostile.member(f"volumes/0/f{i}", b"") for i in range(5)]
    data = hostile.archive(*members, volumes=[(5, 1, 0)])
    with pytest.raises(ArchiveError, match="extended headers are too large"):
        archive.extract_tree(io.BytesIO(data), str(tmp_path / "s"), volume_count=1,
                             limits=hostile.LIMITS)
    # a few of them are within it
    data = hostile.archive(*members[:3], volumes=[(3, 1, 0)])
    archive.extract_tree(io.BytesIO(data), str(tmp_path / "t"), volume_count=1,
                         limits=hostile.LIMITS)


def test_bookkeeping_per_entry_is_small_even_with_long_paths(tmp_path, monkeypatch):
    """No full path is kept per entry: 5000 files 2 KB deep take well under 10 MB."""
    import tracemalloc

    deep = "/".join(["d" * 200] * 10)  # ~2 KB of directories
    dirs = [hostile.pax({"path": "volumes/0/" + "/".join(["d" * 200] * (i + 1))})
            + hostile.directory("x") for i in range(10)]
    files = [hostile.pax({"path": f"volumes/0/{deep}/f{i}"}) + hostile.member("x", b"")
             for i in range(5000)]
    data = hostile.archive(*dirs, *files, volumes=[(5000, 11, 0)])
    limits = archive_format.Limits(max_bytes=1 << 20, max_file_bytes=1 << 20, max_entries=10_000,
                            reserve_bytes=0, reserve_inodes=0)
    kept: list[int] = []
    real = archive._Extractor._check_counts

    def measure(self, manifest, result):
        # What the extractor holds once every member is in: allocated in archive.py.
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, archive.__file__)])
        kept.append(sum(stat.size for stat in snapshot.statistics("filename")))
        return real(self, manifest, result)

    monkeypatch.setattr(archive._Extractor, "_check_counts", measure)
    tracemalloc.start()
    try:
        archive.extract_tree(io.BytesIO(data), str(tmp_path / "s"), volume_count=1,
                             limits=limits)
    finally:
        tracemalloc.stop()
    assert kept and kept[0] < 2 << 20, kept  # a full path per entry would be over 10 MB
