"""Building directory trees for tests and describing them for byte-for-byte comparison."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path

from snapshots import archive, archive_format, writer

# Generous caps for trees built in tests.
LIMITS = archive_format.Limits(
    max_bytes=1 << 34, max_file_bytes=1 << 32, max_entries=100_000, reserve_bytes=0,
    reserve_inodes=0,
)


def describe(root: str | Path) -> dict[str, tuple]:
    """Every entry under `root` (the root itself as "."): type, mode, owner, mtime, content.

    Symlinks and special files are described by type only; regular files by
    the SHA-256 of their bytes.
    """
    root = str(root)
    found: dict[str, tuple] = {}

    def entry(path: str, rel: str) -> None:
        info = os.lstat(path)
        kind = stat.S_IFMT(info.st_mode)
        meta = (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, info.st_mtime_ns)
        if kind == stat.S_IFREG:
            with open(path, "rb") as fh:
                found[rel] = ("file", *meta, hashlib.sha256(fh.read()).hexdigest())
        elif kind == stat.S_IFDIR:
            found[rel] = ("dir", *meta)
        else:
            found[rel] = ("other", kind)

    entry(root, ".")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            entry(path, os.path.relpath(path, root))
    return found


def regular_only(tree: dict[str, tuple]) -> dict[str, tuple]:
    return {path: value for path, value in tree.items() if value[0] != "other"}


def archive_of(roots: list[str | Path], *, limits: archive_format.Limits = LIMITS) -> bytes:
    """The archive the capture writes for these volume roots (without a database)."""
    scans = writer.scan_volumes([str(r) for r in roots], limits)
    manifest = writer.build_manifest(
        created="2026-11-26T00:00:00+00:00", workload={"id": 1, "name": "test"},
        consistency="stop",
        volumes=[{"scope": "absolute", "source": str(r), "target": f"/v{i}"}
                 for i, r in enumerate(roots)],
        scans=scans,
    )
    out = io.BytesIO()
    writer.write_archive(out, manifest, scans)
    return out.getvalue()


def extract_bytes(data: bytes, staging: str | Path, volume_count: int,
                  limits: archive_format.Limits = LIMITS) -> archive.Extracted:
    return archive.extract_tree(io.BytesIO(data), str(staging), volume_count=volume_count,
                                limits=limits)
