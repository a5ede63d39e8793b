"""An import's body is received only for an allowed caller, never outlives the request,
and keeps the free-space reserve while it arrives."""

from __future__ import annotations

import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from snapshots import storage
from snapshots.models import Snapshot
from web.api import uploads

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]

TOKEN = "b" * 32


@pytest.fixture
def opened(monkeypatch):
    paths: list[str] = []
    real = storage.open_temp

    def watch(directory, prefix=".tmp-"):
        fd, path = real(directory, prefix)
        paths.append(str(path))
        return fd, path

    monkeypatch.setattr(storage, "open_temp", watch)
    return paths


def uploads_left() -> list[str]:
    directory = storage.uploads_dir()
    return sorted(os.listdir(directory)) if directory.is_dir() else []


def session(user) -> Client:
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    client.force_login(user)
    client.cookies["csrftoken"] = TOKEN
    return client


def url(workload) -> str:
    return f"/api/workloads/{workload.pk}/snapshots/import"


def test_a_form_field_token_is_not_read_and_nothing_is_received(operator, volume_workload,
                                                                 opened):
    workload, _paths = volume_workload
    response = session(operator).post(url(workload), {
        "csrfmiddlewaretoken": TOKEN, "archive": SimpleUploadedFile("a", os.urandom(1 << 16)),
    })
    assert response.status_code == 403
    assert opened == []


def test_a_wrong_header_token_is_refused_before_the_body(operator, volume_workload, opened):
    workload, _paths = volume_workload
    response = session(operator).post(
        url(workload), {"archive": SimpleUploadedFile("a", b"x" * 1000)},
        headers={"X-CSRFToken": "c" * 32},
    )
    assert response.status_code == 403
    assert opened == []


def test_an_anonymous_upload_is_not_received(volume_workload, opened):
    workload, _paths = volume_workload
    response = Client().post(url(workload), {"archive": SimpleUploadedFile("a", b"x" * 1000)})
    assert response.status_code in (401, 403)
    assert opened == []


@pytest.mark.parametrize("how", ["session", "token"])
def test_a_parse_error_outside_drf_leaves_no_upload(how, operator, volume_workload, settings,
                                                   opened):
    """TooManyFilesSent is raised by Django's parser after the archive has been written."""
    workload, _paths = volume_workload
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 3
    data = {"archive": SimpleUploadedFile("a.tar.zst", os.urandom(1 << 20))} | {
        f"f{i}": SimpleUploadedFile(f"x{i}", b"x") for i in range(10)
    }
    if how == "session":
        response = session(operator).post(url(workload), data, headers={"X-CSRFToken": TOKEN})
        assert response.status_code >= 400
    else:
        client = APIClient(raise_request_exception=False)
        client.force_authenticate(operator)
        response = client.post(url(workload), data, format="multipart")
        assert response.status_code >= 400
    assert any(".upload-" in path for path in opened)
    assert uploads_left() == [] and not Snapshot.objects.exists()


def test_the_reserve_is_kept_while_receiving(operator, volume_workload, settings, opened,
                                             monkeypatch):
    workload, _paths = volume_workload
    stat = os.statvfs(storage.root() if storage.root().exists() else "/")
    free = stat.f_bavail * stat.f_frsize
    settings.BERTH_SNAPSHOT_RESERVE_BYTES = free - (1 << 20)  # 1 MiB of room left
    monkeypatch.setattr(uploads, "SPACE_RECHECK_BYTES", 1 << 16)
    client = APIClient()
    client.force_authenticate(operator)
    response = client.post(url(workload), {"archive": SimpleUploadedFile(
        "a.tar.zst", os.urandom(4 << 20))}, format="multipart")
    assert response.status_code == 507, response.content
    assert uploads_left() == []
