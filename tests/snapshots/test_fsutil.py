"""remove_tree removes what Berth extracted whatever its modes, also when not root;
a sweep goes on past an entry it cannot remove."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time

import pytest

from lib import fsutil
from snapshots import archive, storage
from tests.snapshots import hostile

NOBODY = 65534


def locked_tree_archive() -> bytes:
    return hostile.archive(
        hostile.directory("volumes/0/a", mode=0o000),
        hostile.directory("volumes/0/a/b", mode=0o000),
        hostile.member("volumes/0/a/b/f", b"x", mode=0o000),
        hostile.directory("volumes/0/r", mode=0o500),
        hostile.member("volumes/0/r/g", b"y"),
        volumes=[(2, 4, 2)],
    )


def test_remove_tree_removes_locked_directories(tmp_path):
    staging = tmp_path / "s"
    archive.extract_tree(io.BytesIO(locked_tree_archive()), str(staging), volume_count=1,
                         limits=hostile.LIMITS)
    fsutil.remove_tree(str(staging))
    assert not staging.exists()


def test_remove_tree_never_follows_a_planted_symlink(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_bytes(b"k")
    os.chmod(outside, 0o755)  # noqa: S103
    tree = tmp_path / "tree" / "sub"
    tree.mkdir(parents=True)
    os.symlink(outside, tree / "link")
    fsutil.remove_tree(str(tmp_path / "tree"))
    assert not (tmp_path / "tree").exists()
    assert (outside / "keep").exists() and os.stat(outside).st_mode & 0o777 == 0o755


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_remove_tree_as_an_unprivileged_user(settings):
    base = tempfile.mkdtemp(prefix="berth-nonroot-")
    os.chmod(base, 0o777)  # noqa: S103 - nobody writes here
    # The extraction reserves its space in the data dir, which only Berth's own user may
    # write: here "Berth's data dir" is one nobody can.
    settings.DATA_DIR = base
    data = locked_tree_archive()
    try:
        pid = os.fork()
        if pid == 0:  # the child: extract and remove as nobody
            code = 1
            try:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                staging = os.path.join(base, "s")
                archive.extract_tree(io.BytesIO(data), staging, volume_count=1,
                                     limits=hostile.LIMITS)
                fsutil.remove_tree(staging)
                code = 0 if not os.path.exists(staging) else 2
            finally:
                os._exit(code)
        _pid, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_sweep_goes_on_past_an_entry_it_cannot_remove(settings, tmp_path, monkeypatch, caplog):
    settings.DATA_DIR = str(tmp_path)
    directory = storage.workload_dir(1)
    directory.mkdir(parents=True)
    day_ago = time.time() - storage.LEFTOVER_SECONDS - 60
    paths = [directory / ".tmp-a.tar.zst", directory / ".tmp-b.tar.zst"]
    for path in paths:
        path.write_bytes(b"x")
        os.utime(path, (day_ago, day_ago))
    real = storage.discard

    def flaky(path):
        if str(path).endswith(".tmp-a.tar.zst"):
            raise PermissionError(13, "Permission denied")
        real(path)

    monkeypatch.setattr(storage, "discard", flaky)
    assert storage.sweep(1, set()) == 1
    assert paths[0].exists() and not paths[1].exists()
