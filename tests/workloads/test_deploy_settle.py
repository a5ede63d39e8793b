"""A deploy succeeds only when its new containers stay up: the settle window and health checks.

Against the real engine: containers that crash-loop, health checks that fail,
pass late or never finish starting, the workload's own check and the image's.
Every failure leaves the previous containers running.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import warnings
from pathlib import Path

import docker as docker_sdk
import pytest
from django.core.exceptions import ImproperlyConfigured

from berth.env import BerthDeprecationWarning, deploy_settle_seconds
from lib import runtime
from tests.fixtures import chatty, images
from tests.workloads.test_deploy_failures import (
    assert_still_runs,
    deploy,
    running_first,
    set_script,
)
from workloads.models import DeployRecord, EnvVar

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]

Failure = DeployRecord.Failure
chatty_image = chatty.chatty_image
HEALTHY_IMAGE = f"{images.CURRENT_REPOSITORY.rsplit('/', 1)[0]}/chatty-health:v1"


@pytest.fixture(scope="session")
def image_with_health_check(chatty_image) -> str:
    """The chatty image with a HEALTHCHECK of its own, running $BERTH_TEST_HEALTH (empty passes)."""
    dockerfile = (
        f"FROM {chatty_image}\n"
        "HEALTHCHECK --interval=1s --timeout=2s --retries=2 "
        'CMD ["sh", "-c", "eval \\"$BERTH_TEST_HEALTH\\""]\n'
    )
    with tempfile.TemporaryDirectory() as context:
        (Path(context) / "Dockerfile").write_text(dockerfile)
        subprocess.run(["docker", "build", "-q", "-t", HEALTHY_IMAGE, context], check=True,
                       capture_output=True, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    subprocess.run(["docker", "push", HEALTHY_IMAGE], check=True, capture_output=True)
    return HEALTHY_IMAGE


def health_of(container_id: str) -> str:
    state = docker_sdk.from_env().api.inspect_container(container_id)["State"]
    return (state.get("Health") or {}).get("Status", "")


def use_health_command(workload, command: str, **timing) -> None:
    workload.health_command = command
    for name, value in {"health_interval_seconds": 1, "health_retries": 1, **timing}.items():
        setattr(workload, name, value)
    workload.full_clean()
    workload.save()


def test_a_first_deploy_that_crash_loops_after_a_second_fails(
    docker, make_workload, chatty_image, settings
):
    # It runs for a second, then exits: its restart policy would loop it for ever.
    settings.BERTH_DEPLOY_SETTLE_SECONDS = 4
    workload = make_workload(image=chatty_image)
    set_script(workload, "sleep 1; exit 1")

    record = deploy(workload)

    assert record.outcome == DeployRecord.Outcome.FAILED
    assert (record.failure_code, record.exit_code) == (Failure.EXITED_AT_START, 1)
    assert runtime.list_containers(workload.pk) == []
    [kept] = runtime.list_containers(workload.pk, kept_failed=True)
    assert not kept.running
    workload.refresh_from_db()
    assert workload.running_reference == ""


def test_the_same_crash_loop_outside_a_short_window_is_not_seen(
    docker, make_workload, chatty_image, settings
):
    # The counterpart of the test above: what the window is for. A window
    # shorter than the crash lets the deploy succeed, so the window matters.
    settings.BERTH_DEPLOY_SETTLE_SECONDS = 0
    workload = make_workload(image=chatty_image)
    set_script(workload, "sleep 3; exit 1")

    assert deploy(workload).outcome == DeployRecord.Outcome.SUCCEEDED


def test_a_failing_health_command_fails_the_deploy_as_unhealthy(
    docker, make_workload, chatty_image
):
    workload, running = running_first(make_workload, image=chatty_image)
    use_health_command(workload, "exit 1")

    record = deploy(workload)

    assert (record.outcome, record.failure_code) == (DeployRecord.Outcome.FAILED,
                                                     Failure.UNHEALTHY)
    assert record.exit_code is None
    assert "health check" in record.failure_message
    assert_still_runs(workload, running)
    # Kept, stopped, for its log, like a container that exited at start.
    [kept] = runtime.list_containers(workload.pk, kept_failed=True)
    assert not kept.running


def test_a_health_check_that_passes_late_is_waited_for(docker, make_workload, chatty_image):
    workload = make_workload(image=chatty_image)
    set_script(workload, "sleep 2; touch /ready; sleep 600")
    use_health_command(workload, "test -f /ready", health_retries=10)

    record = deploy(workload)

    assert record.outcome == DeployRecord.Outcome.SUCCEEDED, record.failure_code
    [container] = runtime.list_containers(workload.pk)
    assert health_of(container.id) == "healthy"


def test_a_health_check_still_starting_at_the_deadline_is_unhealthy(
    docker, make_workload, chatty_image, settings
):
    settings.BERTH_DEPLOY_HEALTH_TIMEOUT = 2
    workload, running = running_first(make_workload, image=chatty_image)
    # In its start period failures do not count: it stays "starting".
    use_health_command(workload, "exit 1", health_start_period_seconds=600)

    record = deploy(workload)

    assert record.failure_code == Failure.UNHEALTHY
    assert_still_runs(workload, running)


def test_the_images_own_health_check_decides_too(
    docker, make_workload, image_with_health_check
):
    workload = make_workload(image=image_with_health_check)
    set_script(workload, "sleep 600")
    first = deploy(workload)
    assert first.outcome == DeployRecord.Outcome.SUCCEEDED, first.failure_code
    [running] = runtime.list_containers(workload.pk)
    assert health_of(running.id) == "healthy"

    EnvVar.objects.create(workload=workload, name="BERTH_TEST_HEALTH", value="exit 1")
    record = deploy(workload)

    assert record.failure_code == Failure.UNHEALTHY
    assert_still_runs(workload, running.id)


def test_the_workloads_health_command_replaces_the_images(
    docker, make_workload, image_with_health_check
):
    workload = make_workload(image=image_with_health_check)
    set_script(workload, "sleep 600")
    EnvVar.objects.create(workload=workload, name="BERTH_TEST_HEALTH", value="exit 1")
    use_health_command(workload, "true")

    record = deploy(workload)

    assert record.outcome == DeployRecord.Outcome.SUCCEEDED, record.failure_code
    [container] = runtime.list_containers(workload.pk)
    assert health_of(container.id) == "healthy"


def test_the_api_sets_a_health_check_and_refuses_a_bad_one(api_as, operator, workload):
    client = api_as(operator)
    url = f"/api/workloads/{workload.pk}"

    refused = client.patch(url, {"health_command": "true\x00", "health_retries": 0},
                           format="json")
    workload.refresh_from_db()
    assert refused.status_code == 400
    assert {"health_command", "health_retries"} <= set(refused.json())
    assert workload.health_command == ""

    accepted = client.patch(url, {"health_command": "wget -q -O- http://127.0.0.1/",
                                  "health_interval_seconds": 2}, format="json")
    workload.refresh_from_db()
    assert accepted.status_code == 200, accepted.content
    assert workload.health_check() == {"command": "wget -q -O- http://127.0.0.1/",
                                       "interval": 2, "timeout": 5, "retries": 3,
                                       "start_period": 0}


def test_the_settle_window_reads_seconds_and_the_old_name(monkeypatch):
    monkeypatch.delenv("BERTH_DEPLOY_SETTLE_SECONDS", raising=False)
    monkeypatch.delenv("BERTH_START_GRACE_MS", raising=False)
    assert deploy_settle_seconds() == 3.0

    monkeypatch.setenv("BERTH_START_GRACE_MS", "1500")
    with pytest.warns(BerthDeprecationWarning, match="BERTH_DEPLOY_SETTLE_SECONDS=1.5"):
        assert deploy_settle_seconds() == 1.5

    monkeypatch.setenv("BERTH_DEPLOY_SETTLE_SECONDS", "0.5")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name wins, silently
        assert deploy_settle_seconds() == 0.5

    for bad in ("-1", "soon", "nan", "601"):
        monkeypatch.setenv("BERTH_DEPLOY_SETTLE_SECONDS", bad)
        with pytest.raises(ImproperlyConfigured, match="BERTH_DEPLOY_SETTLE_SECONDS"):
            deploy_settle_seconds()
