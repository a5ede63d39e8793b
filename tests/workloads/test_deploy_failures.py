"""Each deploy failure code from a real cause, against the real engine and registries.

Every failed deploy leaves the previous containers running, and stores a fixed
code (and, for a container that exited at start, its exit code): never the
engine's text.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.test import Client

from engine import deploys
from lib import runtime
from tests.fixtures import chatty, images
from tests.workloads.test_secrets import credential, tables_containing
from workloads.models import Container, DeployRecord, EnvVar, PortMapping, Workload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]

Failure = DeployRecord.Failure
chatty_image = chatty.chatty_image  # busybox running the script in BERTH_TEST_SCRIPT
SECRET = "printed-secret-4e1d"  # noqa: S105 - the value under test


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something other than the engine listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def deploy(workload: Workload) -> DeployRecord:
    record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    record.refresh_from_db()
    return record


def running_first(make_workload, image: str = images.HTTPD_V1, **fields
                  ) -> tuple[Workload, str]:
    """A workload deployed once, and the id of its running container."""
    workload = make_workload(image=image, **fields)
    if image == chatty.CHATTY:
        set_script(workload, "sleep 600")
    first = deploy(workload)
    assert first.outcome == DeployRecord.Outcome.SUCCEEDED, first.failure_code
    [container] = runtime.list_containers(workload.pk)
    return workload, container.id


def assert_still_runs(workload: Workload, container_id: str) -> None:
    [container] = runtime.list_containers(workload.pk)
    assert container.id == container_id
    assert container.running
    assert Container.objects.live().get(workload=workload).docker_id == container_id


def set_script(workload: Workload, script: str) -> None:
    EnvVar.objects.update_or_create(workload=workload, name="BERTH_TEST_SCRIPT",
                                    defaults={"value": script})


def test_a_missing_tag_is_image_not_found(docker, make_workload):
    workload, before = running_first(make_workload)
    Workload.objects.filter(pk=workload.pk).update(image=f"{images.HTTPD}:no-such-tag-3c")

    record = deploy(workload)

    assert (record.outcome, record.failure_code) == (DeployRecord.Outcome.FAILED,
                                                     Failure.IMAGE_NOT_FOUND)
    assert record.failure_message == Failure.IMAGE_NOT_FOUND.label
    assert record.exit_code is None
    assert_still_runs(workload, before)


def test_a_wrong_password_is_registry_auth_failed(docker, make_workload):
    workload = make_workload(image=images.AUTH_HTTPD_V1)
    workload.registry_credential = credential("wrong-password-77ab", images.AUTH_REGISTRY)
    workload.save()

    record = deploy(workload)

    assert record.failure_code == Failure.REGISTRY_AUTH_FAILED
    assert tables_containing("wrong-password-77ab") == []


def test_no_credential_for_the_authenticated_registry_is_registry_auth_failed(
    docker, make_workload
):
    record = deploy(make_workload(image=images.AUTH_HTTPD_V1))

    assert record.failure_code == Failure.REGISTRY_AUTH_FAILED


def test_a_registry_nobody_answers_is_registry_unreachable(docker, make_workload, taken_port):
    # Nothing listens on a port just closed: the engine's connection is refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    record = deploy(make_workload(image=f"127.0.0.1:{closed}/berth-test/httpd:v1"))

    assert record.failure_code == Failure.REGISTRY_UNREACHABLE
    assert "dial tcp" not in str(record.failure_message)


def test_a_taken_host_port_is_port_in_use(docker, make_workload, taken_port):
    workload, before = running_first(make_workload)
    PortMapping.objects.create(workload=workload, host_port=taken_port, container_port=80)

    record = deploy(workload)

    assert record.failure_code == Failure.PORT_IN_USE
    assert_still_runs(workload, before)
    # Nothing of the failed deploy is left on the engine.
    assert runtime.list_containers(workload.pk, kept_failed=True) == []


def test_a_container_that_exits_3_at_start_is_exited_at_start(
    docker, make_workload, chatty_image, settings, django_user_model
):
    settings.BERTH_DEPLOY_SETTLE_SECONDS = 5
    workload, running = running_first(make_workload, image=chatty_image)
    secret = EnvVar(workload=workload, name="TOKEN")
    secret.set_value(SECRET, secret=True)
    secret.save()
    set_script(workload,
               'echo "starting with $TOKEN"; echo "no config at line $((40 + 2))" >&2; exit 3')

    record = deploy(workload)

    assert (record.failure_code, record.exit_code) == (Failure.EXITED_AT_START, 3)
    assert "3" in record.failure_message
    assert_still_runs(workload, running)
    [kept] = runtime.list_containers(workload.pk, kept_failed=True)
    assert kept.name == f"{workload.container_name(1)}{runtime.FAILED_MARK}{record.pk}"
    assert not kept.running
    # The page reads the kept container's last lines from the engine, masked.
    operator = django_user_model.objects.create_superuser("op", password="x")
    client = Client()
    client.force_login(operator)
    page = client.get(f"/deploys/{record.pk}/").content.decode()
    assert "no config at line 42" in page and "starting with" in page
    assert SECRET not in page
    assert tables_containing("line 42") == []

    # Without view_logs a viewer is told the log is there, not shown it; with it, shown.
    viewer = django_user_model.objects.create_user("viewer", password="x")
    viewer.user_permissions.add(*_permissions("view_workload"))
    client.force_login(viewer)
    page = client.get(f"/deploys/{record.pk}/").content.decode()
    assert "line 42" not in page and "only those who may read logs" in page
    reader = django_user_model.objects.create_user("reader", password="x")
    reader.user_permissions.add(*_permissions("view_workload", "view_logs"))
    client.force_login(reader)
    assert "no config at line 42" in client.get(f"/deploys/{record.pk}/").content.decode()

    # The next deploy removes the kept container.
    set_script(workload, "sleep 600")
    assert deploy(workload).outcome == DeployRecord.Outcome.SUCCEEDED
    assert runtime.list_containers(workload.pk, kept_failed=True) == []
    page = Client()
    page.force_login(operator)
    assert "line 42" not in page.get(f"/deploys/{record.pk}/").content.decode()


def test_a_container_over_its_memory_limit_at_start_is_out_of_memory(
    docker, make_workload, chatty_image, settings
):
    settings.BERTH_DEPLOY_SETTLE_SECONDS = 5
    workload, running = running_first(make_workload, image=chatty_image, memory_limit_mib=16)
    # 100 MB in a shell variable, under a 16 MiB limit without swap.
    set_script(workload, "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo done")

    record = deploy(workload)

    assert record.failure_code == Failure.OUT_OF_MEMORY
    assert record.exit_code == 137
    assert_still_runs(workload, running)


def test_the_deploy_command_says_which_failure(docker, make_workload):
    workload = make_workload(image=f"{images.HTTPD}:no-such-tag-9f")
    with pytest.raises(CommandError) as raised:
        call_command("deploy", str(workload.pk), stdout=io.StringIO())
    assert str(Failure.IMAGE_NOT_FOUND.label) in str(raised.value)


def _permissions(*codenames: str):
    return Permission.objects.filter(codename__in=codenames, content_type__app_label="workloads")


def test_the_api_sets_a_memory_limit_and_refuses_a_bad_one(api_as, operator, workload):
    client = api_as(operator)
    url = f"/api/workloads/{workload.pk}"

    refused = client.patch(url, {"memory_limit_mib": 2}, format="json")
    workload.refresh_from_db()
    assert refused.status_code == 400 and "memory_limit_mib" in refused.json()
    assert workload.memory_limit_mib is None

    accepted = client.patch(url, {"memory_limit_mib": 64}, format="json")
    workload.refresh_from_db()
    assert accepted.status_code == 200, accepted.content
    assert (accepted.json()["memory_limit_mib"], workload.memory_limit_mib) == (64, 64)


def test_a_port_on_an_address_the_site_does_not_list_is_refused_at_deploy(docker, make_workload):
    workload = make_workload()
    # Written around the API's check (by hand, or before the site narrowed its list).
    PortMapping.objects.create(workload=workload, host_ip="0.0.0.0", host_port=18994,  # noqa: S104
                               container_port=80)

    record = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)

    assert record.outcome == DeployRecord.Outcome.FAILED
    assert record.failure_code == "invalid_config"
    assert runtime.list_containers(workload.pk) == []
