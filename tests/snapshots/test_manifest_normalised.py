"""An imported manifest is stored normalised: known keys, bounded strings and list."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from snapshots import archive_format
from snapshots.models import Snapshot
from tests.snapshots import hostile
from tests.snapshots.conftest import add_volume

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]

BIG = archive_format.Limits(max_bytes=1 << 20, max_file_bytes=1 << 20, max_entries=50,
                     reserve_bytes=0, reserve_inodes=0)


def parse(manifest: dict) -> dict:
    return archive_format.parse_manifest(json.dumps(manifest).encode(), 1, BIG)


def test_unknown_keys_are_dropped_and_strings_bounded():
    manifest = hostile.manifest([(0, 1, 0)], extra={"x": "y" * 10_000},
                                workload={"id": 1, "name": "n" * 5000, "evil": [1] * 100},
                                created=["not", "a", "string"])
    manifest["volumes"][0]["junk"] = "z" * 10_000
    parsed = parse(manifest)
    assert set(parsed) == {"format", "version", "created", "workload", "consistency",
                           "volumes", "skipped", "skipped_count"}
    assert set(parsed["workload"]) == {"id", "name", "path"}
    assert len(parsed["workload"]["name"]) <= 200 and parsed["created"] == ""
    assert "junk" not in parsed["volumes"][0]


def test_the_skipped_list_is_bounded_and_its_count_consistent():
    item = {"volume": 0, "path": "p" * 5000, "type": "t" * 500, "reason": "r", "more": "x"}
    parsed = parse(hostile.manifest([(0, 1, 0)], skipped=[item] * 1500 + ["junk"],
                                    skipped_count=3))
    assert len(parsed["skipped"]) == 1000
    assert parsed["skipped_count"] >= 1500
    first = parsed["skipped"][0]
    assert set(first) == {"volume", "path", "type", "reason"}
    assert len(first["path"]) <= 1024 and len(first["type"]) <= 32


def test_an_import_stores_the_normalised_manifest_and_the_list_leaves_skipped_out(
        api_as, operator, make_workload):
    workload = make_workload()
    add_volume(workload, "data", "/data")
    skipped = [{"volume": 0, "path": "<img src=x>" + "A" * 2000, "type": "socket",
                "reason": "r"}] * 1200
    manifest = hostile.manifest([(0, 1, 0)], skipped=skipped, skipped_count=1200,
                                workload={"id": 1, "name": "x" * 1000}, bonus={"a": 1})
    data = hostile.zst(hostile.tar(hostile.member("manifest.json", json.dumps(manifest).encode()),
                                   hostile.directory("volumes/0")))
    api = api_as(operator)
    response = api.post(f"/api/workloads/{workload.pk}/snapshots/import",
                        {"archive": SimpleUploadedFile("a.tar.zst", data)}, format="multipart")
    assert response.status_code == 201, response.content
    stored = Snapshot.objects.get().manifest
    assert "bonus" not in stored and len(stored["skipped"]) == 1000
    assert len(stored["workload"]["name"]) <= 200
    assert len(response.json()["skipped"]) == 1000  # the detail has them
    listed = api.get(f"/api/workloads/{workload.pk}/snapshots").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert "skipped" not in rows[0] and rows[0]["skipped_count"] == 1200
