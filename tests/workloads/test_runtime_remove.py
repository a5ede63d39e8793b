"""Removing a container while another process's removal of it is still in progress."""

from __future__ import annotations

import subprocess
import threading

import pytest
import requests
from django.conf import settings
from docker.errors import APIError
from docker.models.containers import Container

from lib import runtime
from tests.fixtures import images


def started_container() -> str:
    return subprocess.run(
        ["docker", "run", "-d", "--label", runtime.instance_label(), images.BUSYBOX,
         "sleep", "3600"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()


def exists(container_id: str) -> bool:
    return subprocess.run(["docker", "inspect", container_id], capture_output=True,
                          check=False).returncode == 0


def conflict(container_id: str) -> requests.Response:
    response = requests.Response()
    response.status_code, response.reason = 409, "Conflict"
    response.url = f"http+docker://localhost/containers/{container_id}?force=True"
    return response


def removal_in_progress(monkeypatch, *, finishes: bool) -> None:
    """The engine answers 409 "removal ... already in progress", as it does while the removal
    a killed process asked for goes on. That moment cannot be made to last on purpose here,
    so the answer is given by a stand-in for docker-py's Container.remove; the removal it
    stands for is real (done on the engine a moment later), unless `finishes` is False."""
    real = Container.remove

    def remove(container, **kwargs):
        if finishes:
            threading.Timer(0.3, real, args=(container,), kwargs={"force": True}).start()
        raise APIError(
            "409 Client Error", response=conflict(container.id),
            explanation=f"removal of container {container.id} is already in progress",
        )

    monkeypatch.setattr(Container, "remove", remove)


def test_it_waits_for_a_removal_already_in_progress(docker, monkeypatch):
    container_id = started_container()
    removal_in_progress(monkeypatch, finishes=True)

    runtime.remove(container_id)

    assert not exists(container_id)


def test_a_removal_in_progress_that_never_ends_is_an_engine_error(docker, monkeypatch):
    container_id = started_container()
    removal_in_progress(monkeypatch, finishes=False)
    settings.BERTH_DOCKER_TIMEOUT = 1

    with pytest.raises(runtime.EngineError) as raised:
        runtime.remove(container_id)

    assert "already in progress" in raised.value.raw
    assert exists(container_id)


def test_other_conflicts_are_still_errors(docker, monkeypatch):
    container_id = started_container()

    def remove(container, **kwargs):
        raise APIError("409 Client Error", response=conflict(container.id),
                                     explanation="some other conflict")

    monkeypatch.setattr(Container, "remove", remove)
    with pytest.raises(runtime.EngineError):
        runtime.remove(container_id)
