"""Attacks found in review, each refused: escaping volumes, credential capture,
racing deploys, orphaned containers."""

from __future__ import annotations

import io
import os
import shutil

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client, override_settings

from engine import deploys
from lib import paths, runtime
from tests.fixtures import images
from workloads.models import DeployRecord, RegistryCredential, VolumeMount, Workload

Reason, Outcome, Failure = DeployRecord.Reason, DeployRecord.Outcome, DeployRecord.Failure


# --- absolute volumes --------------------------------------------------------

def test_absolute_volumes_are_off_without_allowed_roots(tmp_path):
    with override_settings(BERTH_ABSOLUTE_VOLUME_ROOTS=[]), \
            pytest.raises(ValidationError, match="disabled"):
        paths.host_path("absolute", "p", "s", str(tmp_path / "data"))


@pytest.mark.parametrize(
    "source",
    ["/proc/self/root", "/proc/1/root", "/sys/fs", "/dev/shm", "/var/run/docker.sock",
     "/run/docker.sock", "/"],
)
def test_host_internals_are_never_volumes(source):
    with override_settings(BERTH_ABSOLUTE_VOLUME_ROOTS=["/"]), pytest.raises(ValidationError):
        paths.host_path("absolute", "p", "s", source)


def test_berths_own_data_is_never_a_volume(tmp_path):
    data = str(settings.DATA_DIR)
    with override_settings(BERTH_ABSOLUTE_VOLUME_ROOTS=["/"]):
        for source in (data, os.path.join(data, "volumes"), os.path.dirname(data)):
            with pytest.raises(ValidationError, match="Berth's own data"):
                paths.host_path("absolute", "p", "s", source)


def test_absolute_volumes_stay_inside_the_allowed_roots(tmp_path):
    allowed = tmp_path / "srv"
    with override_settings(BERTH_ABSOLUTE_VOLUME_ROOTS=[str(allowed)]):
        assert paths.host_path("absolute", "p", "s", str(allowed / "db")) == str(allowed / "db")
        with pytest.raises(ValidationError, match="outside the allowed"):
            paths.host_path("absolute", "p", "s", str(tmp_path / "elsewhere"))
        os.makedirs(allowed)
        os.symlink("/etc", allowed / "etc-link")
        with pytest.raises(ValidationError):
            paths.host_path("absolute", "p", "s", str(allowed / "etc-link"))


@pytest.mark.parametrize("value", ["a:b", "a,b", "db\nx"])
def test_bind_separators_are_refused(value):
    with pytest.raises(ValidationError):
        paths.validate_source("stage", value)
    with pytest.raises(ValidationError):
        paths.validate_target("/" + value)


@pytest.mark.django_db
def test_an_unresolvable_path_is_a_400_and_the_list_still_works(api_as, operator, workload):
    client = api_as(operator)
    with override_settings(BERTH_ABSOLUTE_VOLUME_ROOTS=["/"]):
        response = client.patch(
            f"/api/workloads/{workload.pk}",
            {"volumes": [{"scope": "absolute", "source": "/proc/1/root", "target": "/h"}]},
            format="json",
        )
    assert response.status_code == 400
    assert not workload.volumes.exists()
    assert client.get("/api/workloads").status_code == 200


# --- overlapping volumes -------------------------------------------------------

@pytest.mark.django_db
def test_a_workloads_volumes_cannot_nest(workload):
    volumes = [
        VolumeMount(workload=workload, scope="stage", source="data", target="/data"),
        VolumeMount(workload=workload, scope="stage", source="data/cfg", target="/cfg"),
    ]
    with pytest.raises(ValidationError, match="overlaps"):
        workload.check_volumes(volumes)


@pytest.mark.django_db
def test_a_project_volume_cannot_reach_into_a_stages_volumes(make_workload):
    prod = make_workload()
    VolumeMount.objects.create(workload=prod, scope="stage", source="db", target="/db")
    project = prod.stage.project
    dev_stage = project.stages.create(name="Dev", slug="dev")
    dev = Workload.objects.create(stage=dev_stage, name="Dev", slug="web", image=prod.image)
    sneaky = VolumeMount(workload=dev, scope="project", source="prod/db", target="/db")
    with pytest.raises(ValidationError, match="overlaps"):
        dev.check_volumes([sneaky])


@pytest.mark.django_db
def test_a_project_volume_may_be_shared_within_its_project(make_workload):
    web = make_workload()
    VolumeMount.objects.create(workload=web, scope="project", source="shared", target="/s")
    worker = Workload.objects.create(stage=web.stage, name="W", slug="worker", image=web.image)
    worker.check_volumes(
        [VolumeMount(workload=worker, scope="project", source="shared", target="/s")]
    )


@pytest.mark.django_db
def test_the_api_refuses_overlapping_volumes(api_as, operator, workload):
    response = api_as(operator).patch(
        f"/api/workloads/{workload.pk}",
        {"volumes": [{"scope": "stage", "source": "a", "target": "/a"},
                     {"scope": "stage", "source": "a/b", "target": "/b"}]},
        format="json",
    )
    assert response.status_code == 400
    assert "overlaps" in str(response.json()["volumes"])
    assert not workload.volumes.exists()


@pytest.mark.django_db
@pytest.mark.usefixtures("commits_as_in_production")
def test_a_symlink_swapped_in_while_the_old_containers_stop_is_caught(
    docker, current_tag, workload, monkeypatch
):
    VolumeMount.objects.create(workload=workload, scope="stage", source="site", target="/data")
    deploys.dispatch(workload=workload, reason=Reason.MANUAL)
    [old] = runtime.list_containers(workload.pk)
    host = workload.volumes.get().host_path()
    real_stop = runtime.stop

    def stop_and_swap(container_id, **kwargs):
        # What a hostile app could do to a directory it can write while it is
        # told to stop: replace a volume's directory with a symlink to "/".
        real_stop(container_id, **kwargs)
        shutil.rmtree(host)
        os.symlink("/", host)

    monkeypatch.setattr(runtime, "stop", stop_and_swap)
    record = deploys.dispatch(workload=workload, reason=Reason.MANUAL)

    assert (record.outcome, record.failure_code) == (Outcome.FAILED, Failure.INVALID_CONFIG)
    containers = runtime.list_containers(workload.pk)
    assert [c.id for c in containers] == [old.id] and containers[0].running
    os.unlink(host)


# --- registry credentials ------------------------------------------------------

@pytest.fixture
def credential(db) -> RegistryCredential:
    cred = RegistryCredential(name="prod", registry=images.AUTH_REGISTRY, username="berth")
    cred.set_password("prod-registry-password")
    cred.save()
    return cred


@pytest.mark.django_db
def test_a_credential_is_refused_for_another_registrys_image(api_as, operator, workload,
                                                            credential):
    response = api_as(operator).patch(
        f"/api/workloads/{workload.pk}",
        {"image": "127.0.0.1:5077/evil/app:1", "registry_credential": credential.pk},
        format="json",
    )
    assert response.status_code == 400
    assert "registry_credential" in response.json()
    workload.refresh_from_db()
    assert workload.registry_credential is None


@pytest.mark.django_db
def test_attaching_a_credential_needs_its_own_permission(api_as, workload, credential):
    clerk = User.objects.create_user("clerk")
    clerk.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_workload", "change_workload"]
    ))
    response = api_as(clerk).patch(
        f"/api/workloads/{workload.pk}",
        {"image": images.AUTH_HTTPD_V1, "registry_credential": credential.pk}, format="json",
    )
    assert response.status_code == 400
    assert "may not attach" in str(response.json()["registry_credential"])


@pytest.mark.django_db
def test_a_replayed_digest_from_another_registry_is_pulled_without_the_credential(
    make_workload, credential, monkeypatch
):
    workload = make_workload(image=images.AUTH_HTTPD_V1, registry_credential=credential)
    pulls = []

    def fake_pull(reference, *, username="", password=""):
        # Stands in for the engine: only the arguments Berth passes matter here.
        pulls.append((reference, username, password))
        raise runtime.PullFailed("recorded")

    monkeypatch.setattr(runtime, "pull", fake_pull)
    elsewhere = f"127.0.0.1:5077/evil/app@sha256:{'e' * 64}"
    deploys.dispatch(workload=workload, reason=Reason.ROLLBACK, reference=elsewhere)
    deploys.dispatch(workload=workload, reason=Reason.MANUAL)

    assert pulls == [
        (elsewhere, "", ""),
        (images.AUTH_HTTPD_V1, "berth", "prod-registry-password"),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("image", ["127.0.0.1:5000/../../x?y#z", "UPPER/case", "a//b", "x:-y"])
def test_malformed_image_references_are_refused(api_as, operator, workload, image):
    response = api_as(operator).patch(f"/api/workloads/{workload.pk}", {"image": image},
                                      format="json")
    assert response.status_code == 400
    assert "image" in response.json()


# --- single flight -------------------------------------------------------------

@pytest.mark.django_db
def test_a_second_deploy_request_gets_409_with_the_active_one(api_as, operator, workload):
    active = DeployRecord.open(workload=workload, reason=Reason.API)
    client = api_as(operator)

    deploy = client.post(f"/api/workloads/{workload.pk}/deploy")

    assert deploy.status_code == 409
    assert deploy.json()["active_deploy"] == f"/api/deploys/{active.pk}"
    assert workload.deploys.count() == 1


@pytest.mark.django_db
def test_a_second_deploy_from_the_page_or_the_shell_is_refused(operator, workload):
    DeployRecord.open(workload=workload, reason=Reason.API)
    client = Client()
    client.force_login(operator)

    page = client.post(f"/workloads/{workload.pk}/deploy", headers={"HX-Request": "true"})

    assert "already queued or running" in page.content.decode()
    with pytest.raises(CommandError, match="already queued or running"):
        call_command("deploy", str(workload.pk), stdout=io.StringIO())
    assert workload.deploys.count() == 1


# --- deleting a workload removes its containers --------------------------------

@pytest.mark.django_db
@pytest.mark.usefixtures("commits_as_in_production")
def test_deleting_a_workload_removes_its_containers(docker, current_tag, api_as, operator,
                                                   workload):
    deploys.dispatch(workload=workload, reason=Reason.MANUAL)
    assert runtime.list_containers(workload.pk)

    response = api_as(operator).delete(f"/api/workloads/{workload.pk}",
                                       HTTP_X_CONFIRM_DELETE=workload.path)

    assert response.status_code == 204
    assert runtime.list_containers(workload.pk) == []
    assert not Workload.objects.filter(pk=workload.pk).exists()


@pytest.mark.django_db
def test_a_workload_is_kept_when_its_containers_cannot_be_removed(api_as, operator, workload,
                                                                 monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/closed.sock")
    response = api_as(operator).delete(f"/api/workloads/{workload.pk}",
                                       HTTP_X_CONFIRM_DELETE=workload.path)
    assert response.status_code == 503
    assert Workload.objects.filter(pk=workload.pk).exists()


@pytest.mark.django_db
def test_the_ledger_and_events_cannot_be_deleted_in_the_admin(admin_client, workload):
    record = DeployRecord.open(workload=workload, reason=Reason.MANUAL)
    page = admin_client.post(f"/admin/workloads/deployrecord/{record.pk}/delete/", {"post": "yes"})
    assert page.status_code == 403
    assert DeployRecord.objects.filter(pk=record.pk).exists()
