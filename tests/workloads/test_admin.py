"""The admin: secrets are write-only, the deploy action goes through dispatch()."""

from __future__ import annotations

import os

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from engine import deploys
from workloads.models import (
    Container,
    DeployRecord,
    EnvVar,
    RegistryCredential,
    VolumeMount,
    Workload,
)

SECRET_ENV = "env-s3cret-93d1c7"
NEW_SECRET_ENV = "env-rotated-5e0a24"
REGISTRY_PASSWORD = "registry-pa55-61b8f2"


@pytest.fixture
def secret_env(workload) -> EnvVar:
    env = EnvVar(workload=workload, name="API_TOKEN")
    env.set_value(SECRET_ENV, secret=True)
    env.save()
    return env


@pytest.fixture
def credential(db) -> RegistryCredential:
    credential = RegistryCredential(name="private", registry="127.0.0.1:5000", username="ci")
    credential.set_password(REGISTRY_PASSWORD)
    credential.save()
    return credential


@pytest.fixture
def clerk(db) -> User:
    """Staff who may change every workload record but not deploy."""
    user = User.objects.create_user("carl-clerk", password="correct horse battery", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="workloads").exclude(
            codename="deploy_workload"
        )
    )
    return user


def change_form(workload: Workload, env: EnvVar, *, value: str) -> dict[str, str]:
    """The workload change form as a browser submits it, the secret's field set to `value`."""
    created = workload.created
    data = {
        "stage": str(workload.stage_id),
        "name": workload.name,
        "slug": workload.slug,
        "source_kind": workload.source_kind,
        "image": workload.image,
        "registry_credential": "",
        "replicas": str(workload.replicas),
        "snapshot_consistency": workload.snapshot_consistency,
        "auto_backup_before_deploy": "",
        "pre_backup_hook": workload.pre_backup_hook,
        "post_backup_hook": workload.post_backup_hook,
        "backup_hook_timeout": str(workload.backup_hook_timeout),
        "pre_hook_failure": workload.pre_hook_failure,
        "created_0": created.strftime("%Y-%m-%d"),
        "created_1": created.strftime("%H:%M:%S"),
        "env_vars-TOTAL_FORMS": "1",
        "env_vars-INITIAL_FORMS": "1",
        "env_vars-0-id": str(env.pk),
        "env_vars-0-workload": str(workload.pk),
        "env_vars-0-name": env.name,
        "env_vars-0-value": value,
        "env_vars-0-is_secret": "on",
    }
    for prefix in ("volumes", "ports", "containers"):
        data |= {f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0"}
    return data


# --- secrets are write-only ----------------------------------------------------

def test_it_never_renders_a_secret_env_value_on_the_change_page(
    admin_client, workload, secret_env, credential
):
    Workload.objects.filter(pk=workload.pk).update(registry_credential=credential)

    r = admin_client.get(f"/admin/workloads/workload/{workload.pk}/change/")

    assert r.status_code == 200
    html = r.content.decode()
    assert 'name="env_vars-0-value"' in html
    assert SECRET_ENV not in html
    assert secret_env.secret_encrypted not in html
    assert REGISTRY_PASSWORD not in html


def test_it_never_renders_a_registry_password(admin_client, credential):
    for url in (
        f"/admin/workloads/registrycredential/{credential.pk}/change/",
        "/admin/workloads/registrycredential/",
    ):
        r = admin_client.get(url)
        assert r.status_code == 200, url
        html = r.content.decode()
        assert REGISTRY_PASSWORD not in html, url
        assert credential.password_encrypted not in html, url


@pytest.mark.parametrize("name", ["API_TOKEN", "RENAMED_TOKEN"])
def test_it_keeps_the_stored_secret_when_its_field_is_left_empty(
    admin_client, workload, secret_env, name
):
    # Renaming the variable makes its inline form save; the secret must survive that too.
    data = change_form(workload, secret_env, value="") | {"env_vars-0-name": name}

    r = admin_client.post(f"/admin/workloads/workload/{workload.pk}/change/", data)

    assert r.status_code == 302, r.context and r.context["errors"]
    secret_env.refresh_from_db()
    assert secret_env.name == name
    assert secret_env.is_secret
    assert secret_env.get_value() == SECRET_ENV
    assert secret_env.value == ""


def test_it_replaces_the_stored_secret_with_a_new_value(admin_client, workload, secret_env):
    r = admin_client.post(
        f"/admin/workloads/workload/{workload.pk}/change/",
        change_form(workload, secret_env, value=NEW_SECRET_ENV),
    )

    assert r.status_code == 302, r.context and r.context["errors"]
    secret_env.refresh_from_db()
    assert secret_env.get_value() == NEW_SECRET_ENV
    assert secret_env.value == ""  # encrypted, never in the plain column
    assert NEW_SECRET_ENV not in secret_env.secret_encrypted


def test_it_does_not_echo_a_typed_secret_when_the_form_comes_back_with_errors(
    admin_client, workload, secret_env
):
    data = change_form(workload, secret_env, value=NEW_SECRET_ENV) | {"slug": "Not A Slug"}

    r = admin_client.post(f"/admin/workloads/workload/{workload.pk}/change/", data)

    assert r.status_code == 200  # the form came back with an error on the slug
    assert "slug" in r.context["adminform"].form.errors
    assert NEW_SECRET_ENV not in r.content.decode()
    secret_env.refresh_from_db()
    assert secret_env.get_value() == SECRET_ENV


def test_it_refuses_a_registry_credential_without_a_password(admin_client):
    r = admin_client.post(
        "/admin/workloads/registrycredential/add/",
        {"name": "private", "registry": "127.0.0.1:5000", "username": "ci", "password": ""},
    )

    assert r.status_code == 200
    assert "A new credential needs a password." in r.content.decode()
    assert not RegistryCredential.objects.exists()


def test_it_stores_a_new_registry_password_encrypted(admin_client):
    r = admin_client.post(
        "/admin/workloads/registrycredential/add/",
        {"name": "private", "registry": "127.0.0.1:5000", "username": "ci",
         "password": REGISTRY_PASSWORD},
    )

    assert r.status_code == 302
    credential = RegistryCredential.objects.get()
    assert credential.get_password() == REGISTRY_PASSWORD
    assert REGISTRY_PASSWORD not in credential.password_encrypted


def test_it_keeps_a_registry_password_when_its_field_is_left_empty(admin_client, credential):
    r = admin_client.post(
        f"/admin/workloads/registrycredential/{credential.pk}/change/",
        {"name": "private", "registry": "registry.example.com:5000", "username": "ci",
         "password": ""},
    )

    assert r.status_code == 302
    credential.refresh_from_db()
    assert credential.registry == "registry.example.com:5000"
    assert credential.get_password() == REGISTRY_PASSWORD


# --- the container index -------------------------------------------------------

def test_it_shows_the_container_index_read_only(admin_client, workload):
    Container.objects.create(
        workload=workload, docker_id="c" * 64, name="berth-indexed-1", replica=1,
        image_reference="127.0.0.1:5000/berth-test/httpd@sha256:" + "ab" * 32,
    )

    r = admin_client.get(f"/admin/workloads/workload/{workload.pk}/change/")

    assert r.status_code == 200
    html = r.content.decode()
    assert "berth-indexed-1" in html
    assert 'name="containers-0-name"' not in html
    assert 'name="containers-0-docker_id"' not in html
    assert 'name="containers-0-DELETE"' not in html
    assert 'name="containers-__prefix__-name"' not in html  # no "add another" row


# --- volumes -----------------------------------------------------------------

def test_it_shows_each_volumes_derived_host_path(admin_client, workload, tmp_path):
    good = VolumeMount.objects.create(workload=workload, scope="stage", source="site", target="/a")
    bad = VolumeMount.objects.create(workload=workload, scope="stage", source="bad", target="/b")
    # A symlink planted where the volume's directory goes points it outside its base.
    os.makedirs(os.path.dirname(bad.host_path()), exist_ok=True)
    os.symlink(tmp_path, bad.host_path())

    r = admin_client.get(f"/admin/workloads/workload/{workload.pk}/change/")

    assert r.status_code == 200
    html = r.content.decode()
    assert good.host_path() in html
    assert "(invalid)" in html
    assert str(tmp_path) not in html


# --- the deploy action ---------------------------------------------------------

@pytest.fixture
def dispatched(monkeypatch) -> list[dict]:
    """Record every call of deploys.dispatch(), which still runs for real."""
    calls: list[dict] = []
    real = deploys.dispatch

    def recording(**kwargs) -> DeployRecord:
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(deploys, "dispatch", recording)
    return calls


@pytest.mark.django_db
@pytest.mark.usefixtures("commits_as_in_production")
def test_it_deploys_through_dispatch_from_the_admin_action(
    admin_client, admin_user, docker, current_tag, workload, dispatched
):
    r = admin_client.post(
        "/admin/workloads/workload/",
        {"action": "deploy", "_selected_action": [str(workload.pk)]},
        follow=True,
    )

    assert r.status_code == 200
    assert "Queued a deploy of 1 workload." in r.content.decode()
    [call] = dispatched
    assert call["workload"].pk == workload.pk
    assert call["reason"] == DeployRecord.Reason.MANUAL
    assert call["user"] == admin_user
    record = workload.deploys.get()
    assert record.outcome == DeployRecord.Outcome.SUCCEEDED, record.failure_code
    workload.refresh_from_db()
    assert workload.state == Workload.State.RUNNING
    assert workload.containers.live().count() == 1


def test_it_hides_the_deploy_action_from_staff_who_may_not_deploy(clerk, workload):
    client = Client()
    client.force_login(clerk)

    r = client.get("/admin/workloads/workload/")

    assert r.status_code == 200
    assert 'value="deploy"' not in r.content.decode()


def test_it_refuses_the_deploy_action_to_staff_who_may_not_deploy(
    clerk, workload, dispatched, django_capture_on_commit_callbacks
):
    client = Client()
    client.force_login(clerk)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        r = client.post(
            "/admin/workloads/workload/",
            {"action": "deploy", "_selected_action": [str(workload.pk)]},
            follow=True,
        )

    assert r.status_code == 200
    assert "No action selected." in r.content.decode()
    assert callbacks == []
    assert dispatched == []
    assert not workload.deploys.exists()


def test_it_offers_the_deploy_action_to_a_superuser(admin_client, workload):
    r = admin_client.get("/admin/workloads/workload/")
    assert 'value="deploy"' in r.content.decode()
