"""Secrets (registry passwords, secret env values) never reach the database, the API,
a page or a log line — not even when a deploy fails."""

from __future__ import annotations

import logging

import pytest
from django.db import connection
from django.test import Client

from engine import deploys
from lib import references
from lib.redact import MASK, redact
from tests.fixtures import images
from workloads.models import DeployRecord, EnvVar, RegistryCredential, Workload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]

ENV_SECRET = "env-secret-7f3a9c"  # noqa: S105 - the value under test


def tables_containing(needle: str) -> list[str]:
    """Every table with a cell that contains `needle` (text or bytes)."""
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            for row in cursor.fetchall():
                cells = (
                    bytes(c).decode("latin-1") if isinstance(c, bytes | memoryview) else str(c)
                    for c in row
                    if c is not None
                )
                if any(needle in cell for cell in cells):
                    found.append(table)
                    break
    return found


def credential(password: str, registry: str) -> RegistryCredential:
    cred = RegistryCredential(
        name=f"auth-{password[-4:]}", registry=registry, username=images.AUTH_USERNAME
    )
    cred.set_password(password)
    cred.save()
    return cred


def with_secrets(workload: Workload, password: str) -> Workload:
    workload.registry_credential = credential(password, references.registry_host(workload.image))
    workload.save()
    env = EnvVar(workload=workload, name="API_TOKEN")
    env.set_value(ENV_SECRET, secret=True)
    env.save()
    return workload


def test_the_right_credential_pulls_from_the_auth_registry(docker, make_workload):
    workload = with_secrets(make_workload(image=images.AUTH_HTTPD_V1), images.AUTH_PASSWORD)
    record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    assert record.outcome == DeployRecord.Outcome.SUCCEEDED, record.failure_code
    assert record.pinned_reference.startswith(f"{images.AUTH_REGISTRY}/berth-test/httpd@sha256:")
    assert tables_containing(images.AUTH_PASSWORD) == []


@pytest.mark.parametrize(
    ("image", "password", "code"),
    [
        (images.AUTH_HTTPD_V1, "wrong-password-5b1e", "registry_auth_failed"),
        (f"{images.AUTH_REGISTRY}/berth-test/httpd:no-such-tag", images.AUTH_PASSWORD,
         "image_not_found"),
        ("127.0.0.1:5999/berth-test/httpd:v1", "unreachable-pass-91c2", "registry_unreachable"),
    ],
    ids=["wrong-password", "unknown-tag", "unreachable-registry"],
)
def test_a_failed_deploy_leaks_no_secret_anywhere(
    docker, make_workload, django_user_model, caplog, image, password, code
):
    workload = with_secrets(make_workload(image=image), password)
    admin = django_user_model.objects.create_superuser("root", password="correct horse battery")
    client = Client()
    client.force_login(admin)

    with caplog.at_level(logging.INFO):
        record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
        client.post(f"/api/workloads/{workload.pk}/deploy")

    assert record.outcome == DeployRecord.Outcome.FAILED
    assert record.failure_code == code
    pages = [
        "/", f"/workloads/{workload.pk}/", f"/workloads/{workload.pk}/state",
        "/api/workloads", f"/api/workloads/{workload.pk}",
        f"/api/workloads/{workload.pk}/containers", f"/api/deploys/{record.pk}",
        f"/admin/workloads/workload/{workload.pk}/change/",
        f"/admin/workloads/registrycredential/{workload.registry_credential_id}/change/",
    ]
    for secret in (password, ENV_SECRET):
        assert tables_containing(secret) == [], secret
        for url in pages:
            response = client.get(url)
            assert response.status_code == 200, url
            assert secret.encode() not in response.content, url
        assert secret not in caplog.text
    # The raw error did reach the server log, for the operator to read.
    assert f"deploy {record.pk} of workload {workload.pk} failed ({code})" in caplog.text


def test_redact_masks_every_known_secret_longest_first():
    text = "auth failed for berth:hunter2 (token hunter2-long) at registry"
    assert redact(text, ["hunter2", "hunter2-long", ""]) == (
        f"auth failed for berth:{MASK} (token {MASK}) at registry"
    )
