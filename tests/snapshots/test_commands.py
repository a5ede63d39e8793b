"""manage.py snapshot and manage.py import_snapshot; the admin's snapshot list and action."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client

from snapshots import storage
from snapshots.models import Snapshot
from tests.snapshots import hostile
from tests.snapshots.conftest import archive_files, leftovers

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]


def test_the_snapshot_command_captures_and_reports(volume_workload):
    workload, paths = volume_workload
    (paths[0] / "link").symlink_to("/etc")
    out = io.StringIO()
    call_command("snapshot", str(workload), stdout=out)
    snapshot = Snapshot.objects.get()
    text = out.getvalue()
    assert snapshot.is_ready and snapshot.kind == Snapshot.Kind.MANUAL
    assert str(storage.archive_path(workload.pk, snapshot.archive)) in text
    assert snapshot.sha256 in text
    assert "1 entry skipped" in text and "volume 0: link (symlink)" in text


def test_the_snapshot_command_reports_a_failure(volume_workload, settings):
    workload, _paths = volume_workload
    settings.BERTH_SNAPSHOT_MAX_ENTRIES = 2
    with pytest.raises(CommandError, match="most a snapshot may hold"):
        call_command("snapshot", str(workload.pk), stdout=io.StringIO())
    assert archive_files(workload) == []


def test_the_snapshot_command_refuses_unknown_workloads(db):
    with pytest.raises(CommandError, match="No workload"):
        call_command("snapshot", "no/such/workload", stdout=io.StringIO())


def test_import_snapshot_keeps_a_good_archive(volume_workload, tmp_path):
    workload, _paths = volume_workload
    call_command("snapshot", str(workload.pk), stdout=io.StringIO())
    original = Snapshot.objects.get()
    file = tmp_path / "moved.tar.zst"
    file.write_bytes(storage.archive_path(workload.pk, original.archive).read_bytes())

    out = io.StringIO()
    call_command("import_snapshot", str(workload), str(file), stdout=out)

    imported = Snapshot.objects.get(imported=True)
    assert imported.sha256 == original.sha256 and imported.manifest == original.manifest
    assert f"snapshot #{imported.pk}" in out.getvalue()
    assert file.exists()  # the operator's own file is left alone
    assert leftovers() == []


def test_import_snapshot_refuses_a_hostile_archive(volume_workload, tmp_path):
    workload, _paths = volume_workload
    case = next(c for c in hostile.corpus(str(tmp_path)) if c.name == "pax-path-override-escapes")
    file = tmp_path / "evil.tar.zst"
    file.write_bytes(case.data)
    with pytest.raises(CommandError, match=r"Refused .*'\.\.'"):
        call_command("import_snapshot", str(workload.pk), str(file), stdout=io.StringIO())
    assert not Snapshot.objects.exists() and leftovers() == []
    assert archive_files(workload) == []


def test_import_snapshot_reports_an_unreadable_file(volume_workload, tmp_path):
    workload, _paths = volume_workload
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_snapshot", str(workload.pk), str(tmp_path / "nope"),
                     stdout=io.StringIO())


def test_the_admin_lists_snapshots_with_skipped_entries(admin_user, volume_workload):
    workload, paths = volume_workload
    (paths[0] / "link").symlink_to("/etc")
    call_command("snapshot", str(workload.pk), stdout=io.StringIO())
    client = Client()
    client.force_login(admin_user)
    html = client.get("/admin/snapshots/snapshot/").content.decode()
    assert "1 entry skipped" in html
    snapshot = Snapshot.objects.get()
    detail = client.get(f"/admin/snapshots/snapshot/{snapshot.pk}/change/")
    assert detail.status_code == 200 and snapshot.sha256 in detail.content.decode()


def test_the_admin_action_queues_snapshots_for_operators_only(volume_workload, operator):
    workload, _paths = volume_workload
    staff_operator = operator
    staff_operator.is_staff = True
    staff_operator.save()
    client = Client()
    client.force_login(staff_operator)
    response = client.post("/admin/workloads/workload/",
                           {"action": "snapshot", "_selected_action": [workload.pk]})
    assert response.status_code == 302
    assert Snapshot.objects.get().is_ready

    clerk = User.objects.create_user("clerk", password="x", is_staff=True)
    clerk.user_permissions.add(*staff_operator.groups.get().permissions.exclude(
        codename="snapshot_workload"))
    client.force_login(clerk)
    page = client.get("/admin/workloads/workload/").content.decode()
    assert 'value="snapshot"' not in page
