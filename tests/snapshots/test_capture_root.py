"""The capture never follows a volume root that is a symlink, nor writes a root swapped
after the scan."""

from __future__ import annotations

import io
import os

import pytest

from snapshots import writer
from snapshots.errors import CaptureError
from tests.snapshots import hostile


def test_a_volume_root_that_is_a_symlink_is_refused(tmp_path):
    elsewhere = tmp_path / "secret"
    elsewhere.mkdir()
    (elsewhere / "key").write_bytes(b"secret")
    os.symlink(elsewhere, tmp_path / "volume")
    with pytest.raises(CaptureError, match="cannot be read"):
        writer.scan_volumes([str(tmp_path / "volume")], hostile.LIMITS)


def test_a_root_swapped_after_the_scan_is_refused(tmp_path):
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "f").write_bytes(b"data")
    scans = writer.scan_volumes([str(volume)], hostile.LIMITS)
    elsewhere = tmp_path / "secret"
    elsewhere.mkdir()
    (elsewhere / "f").write_bytes(b"secret")
    os.rename(volume, tmp_path / "old")
    os.symlink(elsewhere, volume)  # as a symlink
    with pytest.raises(CaptureError, match="cannot be read"):
        writer.write_archive(io.BytesIO(), {"volumes": []}, scans)
    os.unlink(volume)
    os.rename(elsewhere, volume)  # as another directory in its place
    with pytest.raises(CaptureError, match="replaced"):
        writer.write_archive(io.BytesIO(), {"volumes": []}, scans)
