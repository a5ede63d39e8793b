"""dispatch() against the real Docker engine and the local registry."""

from __future__ import annotations

import os
import urllib.request

import pytest

from engine import deploys
from engine.locked.deploy import dispatch_locked
from lib import runtime
from tests.conftest import container_image_digest, move_current_tag, registry_digest
from tests.fixtures import images
from workloads.models import Container, DeployRecord, EnvVar, PortMapping, VolumeMount, Workload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]


def live_engine_containers(workload: Workload) -> list[runtime.ContainerInfo]:
    return runtime.list_containers(workload.pk)


def test_it_creates_replicas_from_the_digest(docker, current_tag, make_workload):
    workload = make_workload(replicas=2)
    EnvVar.objects.create(workload=workload, name="GREETING", value="hello")

    record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)

    assert record.outcome == DeployRecord.Outcome.SUCCEEDED, record.failure_code
    digest = registry_digest(images.HTTPD_V1)
    assert record.pinned_reference == f"{images.CURRENT_REPOSITORY}@{digest}"
    containers = sorted(live_engine_containers(workload), key=lambda c: c.name)
    assert [c.name for c in containers] == [workload.container_name(1), workload.container_name(2)]
    assert all(c.running for c in containers)
    assert all(container_image_digest(c.id) == record.pinned_reference for c in containers)
    indexed = Container.objects.live().filter(workload=workload)
    assert sorted(indexed.values_list("docker_id", flat=True)) == sorted(c.id for c in containers)
    workload.refresh_from_db()
    assert workload.state == Workload.State.RUNNING
    assert workload.running_reference == record.pinned_reference


def test_it_pins_the_digest_until_the_next_deploy(docker, current_tag, make_workload):
    workload = make_workload()
    first = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    v1 = f"{images.CURRENT_REPOSITORY}@{registry_digest(images.HTTPD_V1)}"
    assert first.pinned_reference == v1

    move_current_tag("v2")
    [running] = live_engine_containers(workload)
    assert container_image_digest(running.id) == v1  # the tag moved; the container did not

    second = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    v2 = f"{images.CURRENT_REPOSITORY}@{registry_digest(images.HTTPD_V2)}"
    assert second.pinned_reference == v2
    [running] = live_engine_containers(workload)
    assert container_image_digest(running.id) == v2
    assert Container.objects.filter(workload=workload, removed__isnull=False).count() == 1


def test_it_binds_volumes_at_their_derived_host_path(docker, current_tag, make_workload):
    workload = make_workload()
    VolumeMount.objects.create(workload=workload, scope="stage", source="site", target="/data")
    PortMapping.objects.create(workload=workload, host_port=18931, container_port=80)

    record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)

    assert record.outcome == DeployRecord.Outcome.SUCCEEDED, record.failure_code
    host = workload.volumes.get().host_path()
    assert os.path.isdir(host)
    with open(os.path.join(host, "hello.txt"), "w") as fh:
        fh.write("served from the volume")
    body = urllib.request.urlopen("http://127.0.0.1:18931/hello.txt", timeout=5).read()  # noqa: S310
    assert body == b"served from the volume"


def test_it_keeps_the_old_containers_when_the_pull_fails(docker, current_tag, make_workload):
    workload = make_workload()
    good = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    [before] = live_engine_containers(workload)

    Workload.objects.filter(pk=workload.pk).update(image=f"{images.HTTPD}:no-such-tag")
    failed = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)

    assert failed.outcome == DeployRecord.Outcome.FAILED
    assert failed.failure_code == DeployRecord.Failure.IMAGE_NOT_FOUND
    [after] = live_engine_containers(workload)
    assert after.id == before.id and after.running
    workload.refresh_from_db()
    assert workload.state == Workload.State.FAILED
    assert workload.running_reference == good.pinned_reference


def test_it_restarts_the_old_containers_when_the_new_ones_cannot_start(
    docker, current_tag, make_workload
):
    workload = make_workload()
    deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    [before] = live_engine_containers(workload)
    # A container path the image cannot mount over makes `start` fail after
    # `create` succeeded: /version is a file in the image, the bind a directory.
    VolumeMount.objects.create(workload=workload, scope="stage", source="v", target="/version")

    failed = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)

    assert failed.outcome == DeployRecord.Outcome.FAILED
    assert failed.failure_code == DeployRecord.Failure.START_FAILED
    containers = live_engine_containers(workload)
    assert [c.id for c in containers] == [before.id]
    assert containers[0].running
    assert Container.objects.live().get(workload=workload).docker_id == before.id


def test_an_interrupted_swap_starts_the_old_containers_again(docker, current_tag, make_workload,
                                                            monkeypatch):
    """Ctrl-C in `manage.py deploy` (or any exception that is not Docker's) between stopping
    the old containers and starting the new ones must not leave the workload stopped."""
    workload = make_workload()
    deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    [before] = live_engine_containers(workload)

    real_start, calls = runtime.start, []

    def interrupted(container_id: str) -> None:
        calls.append(container_id)
        if len(calls) == 1:  # starting the new container; restarting the old one works
            raise KeyboardInterrupt
        real_start(container_id)

    monkeypatch.setattr(runtime, "start", interrupted)
    with pytest.raises(KeyboardInterrupt):
        deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)

    containers = live_engine_containers(workload)
    assert [c.id for c in containers] == [before.id] and containers[0].running
    interrupted_row = workload.deploys.order_by("-id").first()
    assert interrupted_row.outcome == DeployRecord.Outcome.FAILED
    assert interrupted_row.failure_code == DeployRecord.Failure.INTERRUPTED


def test_it_fails_clearly_when_the_engine_is_unreachable(db, make_workload, monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/closed.sock")
    workload = make_workload()

    record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)

    assert record.outcome == DeployRecord.Outcome.FAILED
    assert record.failure_code == DeployRecord.Failure.ENGINE_UNREACHABLE
    assert record.failure_message == "The Docker engine is unreachable."
    assert not Container.objects.filter(workload=workload).exists()
    assert workload.events.get().level == "error"


def test_it_refuses_the_lock_held_variant_without_the_lock(db, workload):
    from lib.locks import LockNotHeld

    with pytest.raises(LockNotHeld):
        dispatch_locked(workload=workload, reason=DeployRecord.Reason.RESTORE)
    assert not workload.deploys.exists()
