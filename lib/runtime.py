"""The one module that talks to the Docker engine.

Every call is translated into an `EngineError` subclass whose `str()` is a
short, fixed, safe message and whose `code` is one of DeployRecord.Failure's.
The raw Docker text can carry registry credentials or environment values, so
it is kept only on `EngineError.raw` for the caller to log after redaction,
and the original exception is not chained (`from None`) so no traceback
printer can show it either.
"""

from __future__ import annotations

import logging
import math
import os
import re
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from django.conf import settings
from docker.types.daemon import CancellableStream
from docker.utils import parse_repository_tag, version_gte

from lib.dockerfile import DockerfileError, digest_references, read_from_context
from lib.logframes import LogLines, LogRead
from lib.redact import for_log

logger = logging.getLogger(__name__)

INSTANCE_LABEL = "berth.instance"
WORKLOAD_LABEL = "berth.workload"
REPLICA_LABEL = "berth.replica"
DEPLOY_LABEL = "berth.deploy"
COMMIT_LABEL = "berth.commit"
# An image Berth builds carries keys of its own: a container inherits its image's labels,
# and one run by hand from a built image must not look like a workload's (made_by_berth).
IMAGE_LABEL_PREFIX = "berth.image."
# A name Berth gives a workload's container: final, a deploy's temporary one, or one a failed
# deploy kept (FAILED_MARK).
_BERTH_NAME = re.compile(
    r"berth-[^./]+-(?P<replica>[1-9][0-9]*)(?:\.(?:deploy|failed)-(?P<deploy>[0-9]+))?")
# The names of the environment variables that were secret when the container was
# made, comma-separated: its logs mask their values whatever Berth holds now.
SECRET_ENV_LABEL = "berth.secret-env"  # noqa: S105 - a label name

# Clients by (DOCKER_HOST, purpose): the stats sampler has its own, with a short
# timeout and a connection pool as large as its thread pool.
_clients: dict[tuple[str, str], docker.DockerClient] = {}
_clients_lock = threading.Lock()
STATS = "stats"
ONE_SHOT_API = "1.41"
# Containers whose stats call has not returned yet, across read_stats() calls: a call
# abandoned at its deadline keeps its thread until the engine answers (or the client's
# timeout ends it), and the next read skips the container instead of stacking a second one.
_stats_in_flight: set[str] = set()
_stats_in_flight_lock = threading.Lock()


class EngineError(Exception):
    code = "internal"
    message = "The Docker engine reported an error."

    def __init__(self, raw: str = "") -> None:
        super().__init__(self.message)
        self.raw = raw


class EngineUnreachable(EngineError):
    code = "engine_unreachable"
    message = "The Docker engine is unreachable."


class PullFailed(EngineError):
    code = "pull_failed"
    message = "The image could not be pulled."


class ImageNotFound(PullFailed):
    code = "image_not_found"
    message = "The registry has no image of that name and tag."


class RegistryAuthFailed(PullFailed):
    code = "registry_auth_failed"
    message = "The registry refused the credential (or asked for one)."


class RegistryUnreachable(PullFailed):
    code = "registry_unreachable"
    message = "The registry could not be reached."


class CreateFailed(EngineError):
    code = "create_failed"
    message = "A container could not be created."


class ImageMissing(CreateFailed):
    """The engine no longer holds the image a container was to be created from."""


class StartFailed(EngineError):
    code = "start_failed"
    message = "A container could not be started."


class PortInUse(StartFailed):
    code = "port_in_use"
    message = "A host port the workload publishes is already in use."


class ExitedAtStart(StartFailed):
    """A container exited (or was restarted by its policy) right after it started."""

    code = "exited_at_start"
    message = "A container exited right after it started."

    def __init__(self, raw: str = "", *, container_id: str = "", exit_code: int | None = None
                 ) -> None:
        super().__init__(raw)
        self.container_id = container_id
        self.exit_code = exit_code


class OutOfMemory(ExitedAtStart):
    code = "out_of_memory"
    message = "A container ran out of memory right after it started."


class Unhealthy(ExitedAtStart):
    """A container's health check failed, or had not passed when the wait ended."""

    code = "unhealthy"
    message = "A container's health check did not pass after it started."


class BuildFailed(EngineError):
    code = "build_failed"
    message = "The image could not be built."


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    labels: dict[str, str]
    environment: dict[str, str] = field(default_factory=dict)
    # {"80/tcp": ("127.0.0.1", 8080)}
    ports: dict[str, tuple[str, int]] = field(default_factory=dict)
    # {host_path: {"bind": target, "mode": "rw"}}
    binds: dict[str, dict[str, str]] = field(default_factory=dict)
    # Bytes of memory, swap included (no swap beyond it); None: no limit.
    memory_limit: int | None = None
    # A shell command and its timing in seconds (Workload.health_check); None: the image's.
    health: dict[str, object] | None = None


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    status: str
    labels: dict[str, str]
    created: float | None = None  # seconds since the epoch, where the engine said
    image: str = ""

    @property
    def running(self) -> bool:
        return self.status in {"running", "restarting"}


@dataclass(frozen=True)
class StatsReading:
    """One reading of a running container's counters, as the engine reports them.

    `cpu_total` and `system_cpu` are cumulative nanoseconds: a CPU percentage
    needs two readings (see engine/sampler.py). `memory_bytes` is what
    `docker stats` shows: usage minus the inactive file cache.
    """

    cpu_total: int
    system_cpu: int
    online_cpus: int
    memory_bytes: int
    memory_limit: int


@dataclass
class StatsBatch:
    """What read_stats() found: a reading, or why there is none, per container id."""

    readings: dict[str, StatsReading] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)  # gone, or not running
    failed: dict[str, EngineError] = field(default_factory=dict)
    # No answer by the deadline, or the previous call for it is still unanswered.
    late: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class EngineStatus:
    reachable: bool
    version: str = ""


def _docker_host() -> str:
    return os.environ.get("DOCKER_HOST", "")


def _client(purpose: str = "") -> docker.DockerClient:
    """A client per DOCKER_HOST value and purpose, created on first use."""
    key = (_docker_host(), purpose)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            with _translated(EngineUnreachable):
                if purpose == STATS:
                    client = docker.from_env(
                        timeout=settings.BERTH_STATS_TIMEOUT,
                        max_pool_size=settings.BERTH_STATS_WORKERS,
                    )
                else:
                    client = docker.from_env(timeout=settings.BERTH_DOCKER_TIMEOUT)
            _clients[key] = client
        return client


def _forget_client() -> None:
    host = _docker_host()
    with _clients_lock:
        for key in [key for key in _clients if key[0] == host]:
            del _clients[key]


@contextmanager
def _translated(error: type[EngineError]) -> Iterator[None]:
    try:
        yield
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        _forget_client()
        raise EngineUnreachable(str(exc)) from None
    except docker.errors.DockerException as exc:
        if "Error while fetching server API version" in str(exc):
            raise EngineUnreachable(str(exc)) from None
        raise error(str(exc)) from None


def engine_status() -> EngineStatus:
    try:
        with _translated(EngineUnreachable):
            version = _client().version().get("Version", "")
    except EngineError:
        return EngineStatus(reachable=False)
    return EngineStatus(reachable=True, version=version)


def split_reference(reference: str) -> tuple[str, str]:
    """("repo", "tag") or ("repo", "sha256:…") for a reference; tag defaults to latest."""
    repository, tag = parse_repository_tag(reference)
    return repository, tag or "latest"


def pull(reference: str, *, username: str = "", password: str = "") -> str:
    """Pull `reference` and return it pinned: `repository@sha256:…`.

    The registry is asked first, with the credential given, whether it hands
    out `reference` (its distribution data): the engine serves an image it
    already has without asking the registry, and a private image another
    workload pulled is no business of a workload without the credential.
    """
    repository, tag = split_reference(reference)
    auth = {"username": username, "password": password} if username else None
    with _translated(PullFailed):
        try:
            _client().images.get_registry_data(_joined(repository, tag), auth_config=auth)
            image = _client().images.pull(repository, tag=tag, auth_config=auth)
        except docker.errors.APIError as exc:
            raise _pull_error(exc) from None
    for repo_digest in image.attrs.get("RepoDigests") or []:
        repo, _, digest = repo_digest.partition("@")
        if repo == repository:
            return f"{repository}@{digest}"
    raise PullFailed(f"no repository digest for {repository} after pulling {reference}")


# What the engine says, in its message only, when it could not reach a registry
# or the registry wanted a credential it was not given. Matched here and turned
# into a code; the text itself is never stored.
_UNREACHABLE_PHRASES = ("dial tcp", "connection refused", "no such host", "i/o timeout",
                        "tls handshake timeout", "connection reset by peer", "no route to host")
_NO_CREDENTIAL_PHRASES = ("no basic auth credentials", "authentication required",
                          "unauthorized")


def _pull_error(exc: docker.errors.APIError) -> PullFailed:
    """The engine's answer to a registry request, as a code: by HTTP status, else known phrases."""
    raw = str(exc.explanation or exc)
    status = exc.status_code
    if status == 404:
        return ImageNotFound(raw)
    if status in (401, 403):
        return RegistryAuthFailed(raw)
    lowered = raw.lower()
    if any(phrase in lowered for phrase in _NO_CREDENTIAL_PHRASES):
        return RegistryAuthFailed(raw)
    if any(phrase in lowered for phrase in _UNREACHABLE_PHRASES):
        return RegistryUnreachable(raw)
    return PullFailed(raw)


def _joined(repository: str, tag: str) -> str:
    """`repo:tag` or `repo@sha256:…` again, from split_reference()'s parts."""
    return f"{repository}@{tag}" if ":" in tag else f"{repository}:{tag}"


def build(
    context: IO[bytes], *, dockerfile: str, tag: str, buildargs: dict[str, str],
    labels: dict[str, str], on_output: Callable[[str], None],
) -> str:
    """Build an image from a tar build context; returns its id (`sha256:…`).

    The engine's output is handed to `on_output` as it streams. A build that
    fails raises BuildFailed with the engine's own message (the failing step's
    error); its output so far has already gone to `on_output`.

    Every FROM image is pulled from its registry (`pull=True`), never taken
    from what the engine happens to hold: not another workload's built image,
    not a private image pulled with someone else's credential. The engine
    still serves an image named by digest from its own store when it has it
    (it keeps the digest's manifest), so every image the Dockerfile names by
    digest is first asked of its registry (see _check_digest_images). A
    build that runs past BERTH_BUILD_TIMEOUT (printing, or silent for that
    long) fails with a message saying so.
    """
    deadline = time.monotonic() + settings.BERTH_BUILD_TIMEOUT
    image_id = ""
    with _translated(BuildFailed):
        _check_digest_images(context, dockerfile, buildargs)
        try:
            stream = _client().api.build(
                fileobj=context, custom_context=True, dockerfile=dockerfile, tag=tag,
                buildargs=buildargs, labels=labels, rm=True, forcerm=True, pull=True,
                decode=True, timeout=settings.BERTH_BUILD_TIMEOUT, use_config_proxy=False,
            )
            for chunk in stream:
                if "stream" in chunk:
                    on_output(str(chunk["stream"]))
                if "error" in chunk:
                    raise BuildFailed(str(chunk["error"]))
                image_id = (chunk.get("aux") or {}).get("ID", image_id)
                if time.monotonic() > deadline:
                    stream.close()
                    raise BuildFailed(_build_timeout())
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout):
            if time.monotonic() < deadline:
                raise  # The engine went away: _translated says so.
            raise BuildFailed(_build_timeout()) from None
        except docker.errors.APIError as exc:
            # The daemon's own words; str(exc) would add the request URL,
            # whose query string carries the build arguments.
            raise BuildFailed(str(exc.explanation or exc.status_code)) from None
        except (urllib3.exceptions.HTTPError, requests.exceptions.RequestException) as exc:
            # Reading the build's stream (after APIError: that is a
            # RequestException too): a read that waited the whole timeout for
            # output (ReadTimeoutError), or a connection that broke.
            if isinstance(exc, urllib3.exceptions.TimeoutError) or time.monotonic() >= deadline:
                raise BuildFailed(_build_timeout()) from None
            _forget_client()
            raise EngineUnreachable(str(exc)) from None
    if not image_id:
        raise BuildFailed("the engine reported no image id for the build")
    return image_id


def _check_digest_images(context: IO[bytes], dockerfile: str, buildargs: dict[str, str]) -> None:
    """Ask the registry for every image the Dockerfile names by digest; BuildFailed if refused.

    `FROM repo@sha256:…` and `COPY --from=repo@sha256:…` are served from the
    engine's store without the registry when the engine has them, whatever
    `pull` says. The Dockerfile is read generously (a superset of what the
    engine reads: both escape characters, every ARG value, build arguments),
    so a reference the engine would resolve is never missed; one that uses a
    variable this reading cannot resolve fails the build.
    """
    try:
        references = digest_references(read_from_context(context, dockerfile), buildargs)
    except DockerfileError as exc:
        raise BuildFailed(str(exc)) from None
    for reference in sorted(references):
        try:
            _client().images.get_registry_data(reference)
        except docker.errors.APIError as exc:
            raise BuildFailed(
                f"{reference}: its registry does not hand it out to this build "
                f"({exc.explanation or exc.status_code})"
            ) from None


def _build_timeout() -> str:
    return f"the build ran longer than BERTH_BUILD_TIMEOUT ({settings.BERTH_BUILD_TIMEOUT} s)"


def image_exists(image: str) -> bool:
    with _translated(EngineError):
        try:
            _client().images.get(image)
        except docker.errors.ImageNotFound:
            return False
    return True


def image_id(reference: str) -> str:
    """The id (`sha256:…`) of the image the engine holds under `reference`; "" if none."""
    with _translated(EngineError):
        try:
            return _client().api.inspect_image(reference).get("Id", "")
        except docker.errors.ImageNotFound:
            return ""


@dataclass(frozen=True)
class ImageInfo:
    """One image of the engine's list: `size` in bytes (its layers shared with others
    counted too), `created` in seconds since the epoch."""

    id: str
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    labels: dict[str, str]
    size: int
    created: int


def list_images() -> list[ImageInfo]:
    """Every image the engine holds (not the intermediate layers), in one call."""
    with _translated(EngineError):
        found = _client().api.images()
    return [
        ImageInfo(id=i.get("Id", ""), repo_tags=tuple(i.get("RepoTags") or ()),
                  repo_digests=tuple(i.get("RepoDigests") or ()),
                  labels=dict(i.get("Labels") or {}), size=int(i.get("Size") or 0),
                  created=int(i.get("Created") or 0))
        for i in found
    ]


def images_in_use() -> set[str]:
    """The ids of the images any container of the engine (Berth's or not, in any state) uses."""
    with _translated(EngineError):
        found = _client().api.containers(all=True)
    return {c["ImageID"] for c in found if c.get("ImageID")}


def remove_image(image_id: str) -> bool:
    """Remove an image by id, never by force; False if it is in use or already gone.

    The engine refuses (409) to remove an image a container uses, or one tagged in
    several repositories: both are left as they are.
    """
    with _translated(EngineError):
        try:
            _client().api.remove_image(image_id, force=False, noprune=False)
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                return False
            raise
    return True


def instance_label() -> str:
    return f"{INSTANCE_LABEL}={settings.BERTH_INSTANCE_ID}"


def labels_for(workload_id: int, **extra: str) -> dict[str, str]:
    return {
        INSTANCE_LABEL: settings.BERTH_INSTANCE_ID,
        WORKLOAD_LABEL: str(workload_id),
        **extra,
    }


# The name mark of the containers a deploy kept after they exited at start
# (`<name>.failed-<deploy id>`): stopped, out of the workload's containers, kept
# only so that the deploy's page can show their last log lines, and removed by
# the next deploy (or the workload's removal).
FAILED_MARK = ".failed-"


def is_kept_failed(name: str) -> bool:
    return FAILED_MARK in name


def image_labels_for(workload_id: int, **extra: str) -> dict[str, str]:
    """labels_for() under the image's own keys (`berth.image.workload`, …)."""
    return {IMAGE_LABEL_PREFIX + key.removeprefix("berth."): value
            for key, value in labels_for(workload_id, **extra).items()}


def made_by_berth(labels: dict[str, str], name: str) -> bool:
    """Whether a container is one of a workload's, made by Berth (docs/concepts.md).

    Labels alone do not say so: a container inherits its image's, and an image
    may carry any (one Berth built before images had keys of their own, a
    Dockerfile's LABEL, a `docker commit`). What an image cannot give is a name:
    the container's must be one Berth gives, `berth-…-<replica>` or its
    `.deploy-<deploy>` temporary form, with the replica (a label only a deploy
    sets on a container, never a build on an image) and the deploy of its labels.
    Every container Berth ever made passes.
    """
    match = _BERTH_NAME.fullmatch(name.lstrip("/"))
    if match is None or not labels.get(WORKLOAD_LABEL):
        return False
    if labels.get(INSTANCE_LABEL) != settings.BERTH_INSTANCE_ID:
        return False
    if labels.get(REPLICA_LABEL) != match.group("replica"):
        return False
    return match.group("deploy") is None or labels.get(DEPLOY_LABEL) == match.group("deploy")


def list_containers(workload_id: int, *, kept_failed: bool = False) -> list[ContainerInfo]:
    """The workload's containers (made_by_berth), in any state; with `kept_failed`, only
    those a failed deploy kept."""
    with _translated(EngineError):
        found = _client().containers.list(
            all=True,
            filters={"label": [instance_label(), f"{WORKLOAD_LABEL}={workload_id}"]},
        )
    return [ContainerInfo(c.id, c.name, c.status, dict(c.labels)) for c in found
            if made_by_berth(c.labels, c.name) and is_kept_failed(c.name) == kept_failed]


def create(spec: ContainerSpec) -> str:
    """Create a container (not started); ImageMissing if the engine lacks its image."""
    with _translated(CreateFailed):
        try:
            return _create(spec)
        except docker.errors.ImageNotFound as exc:
            raise ImageMissing(str(exc)) from None


def _create(spec: ContainerSpec) -> str:
    container = _client().containers.create(
        spec.image,
        name=spec.name,
        labels=spec.labels,
        environment=spec.environment,
        ports=spec.ports,
        volumes=spec.binds,
        restart_policy={"Name": "unless-stopped"},
        detach=True,
        **({"mem_limit": spec.memory_limit, "memswap_limit": spec.memory_limit}
           if spec.memory_limit else {}),
        **({"healthcheck": _healthcheck(spec.health)} if spec.health else {}),
    )
    return container.id


_NS = 1_000_000_000


def _healthcheck(health: dict[str, object]) -> dict[str, object]:
    """The engine's form of a health check: a shell command, durations in nanoseconds."""
    return {
        "test": ["CMD-SHELL", health["command"]],
        "interval": int(health["interval"]) * _NS,
        "timeout": int(health["timeout"]) * _NS,
        "retries": int(health["retries"]),
        "start_period": int(health["start_period"]) * _NS,
    }


# The engine's message when a published host port is taken (its status is a
# plain 500): the userland proxy's bind error, or the port allocator's.
_PORT_IN_USE_PHRASES = ("address already in use", "port is already allocated")


def start(container_id: str) -> None:
    """Start a container; ExitedAtStart (or OutOfMemory) if it is not running right after."""
    since = time.time()
    with _translated(StartFailed):
        container = _client().containers.get(container_id)
        try:
            container.start()
        except docker.errors.APIError as exc:
            raw = str(exc.explanation or exc)
            if any(phrase in raw.lower() for phrase in _PORT_IN_USE_PHRASES):
                raise PortInUse(raw) from None
            raise
        container.reload()
    if container.status != "running":
        _raise_if_died(container_id, since)
        raise StartFailed(f"container {container_id} is {container.status} after start")


def settle(container_ids: list[str], *, since: float, window: float,
           health_deadline: float) -> None:
    """Watch newly started containers until they have settled; raise if one did not.

    A container has settled when it has run for `window` seconds without
    exiting or being restarted and, if it has a health check (its image's or
    the workload's), has reported healthy. ExitedAtStart (OutOfMemory) as soon
    as one dies; Unhealthy as soon as one reports unhealthy, or when one with
    a health check is still starting `health_deadline` seconds after `since`.

    The containers restart by their policy, and a restarted container reports
    exit code 0 and no OOM again, so how one died is read from the engine's
    events since `since` (seconds since the epoch, just before the start).
    """
    window_ends = time.monotonic() + window
    health_ends = time.monotonic() + max(window, health_deadline - (time.time() - since))
    waiting = list(container_ids)
    while True:
        states = {cid: _start_state(cid) for cid in waiting}
        died = [cid for cid, state in states.items() if state == "died"]
        if died:
            for container_id in died:
                _raise_if_died(container_id, since)
            raise StartFailed(f"container {died[0]} stopped after start")
        sick = [cid for cid, state in states.items() if state == "unhealthy"]
        if sick:
            raise Unhealthy(f"container {sick[0]} reported unhealthy", container_id=sick[0])
        now = time.monotonic()
        if now >= window_ends:
            waiting = [cid for cid, state in states.items() if state == "starting"]
            if not waiting:
                break
            if now >= health_ends:
                raise Unhealthy(f"container {waiting[0]} was not healthy in time",
                                container_id=waiting[0])
        time.sleep(0.1)
    for container_id in container_ids:
        _raise_if_died(container_id, since, wait=False)


def _start_state(container_id: str) -> str:
    """"died", "unhealthy", "starting" (its health check has not passed yet) or "up"."""
    with _translated(EngineError):
        try:
            attrs = _client().api.inspect_container(container_id)
        except docker.errors.NotFound:
            return "died"
    state = attrs.get("State") or {}
    if attrs.get("RestartCount") or not state.get("Running") or state.get("Restarting"):
        return "died"
    health = (state.get("Health") or {}).get("Status") or ""
    if health in ("unhealthy", "starting"):
        return health
    return "up"


def _raise_if_died(container_id: str, since: float, *, wait: bool = True) -> None:
    """ExitedAtStart (or OutOfMemory) if the engine saw the container die since `since`."""
    exit_code, oom = _first_death(container_id, since)
    if exit_code is None and wait:
        time.sleep(0.2)  # the engine logs the event as it handles the exit
        exit_code, oom = _first_death(container_id, since)
    if exit_code is not None:
        error = OutOfMemory if oom else ExitedAtStart
        raise error(f"container {container_id} exited with code {exit_code} at start",
                    container_id=container_id, exit_code=exit_code)


def _first_death(container_id: str, since: float) -> tuple[int | None, bool]:
    """(exit code of the first `die` since `since`, whether an `oom` came before it)."""
    oom = False
    with _translated(EngineError):
        events = _client().api.events(
            # Up to now and no further: a future `until` keeps the stream open.
            since=int(since) - 1, until=_now_for_engine(), decode=True,
            filters={"container": container_id, "event": ["die", "oom"]},
        )
        for event in events:
            action = event.get("Action") or event.get("status")
            if action == "oom":
                oom = True
            elif action == "die":
                code = (event.get("Actor") or {}).get("Attributes", {}).get("exitCode")
                events.close()
                return (int(code) if code is not None and str(code).isdigit() else -1), oom
    return None, oom


def _now_for_engine() -> str:
    """Now as the engine's API reads a timestamp: seconds and nine digits of nanoseconds."""
    seconds, nanoseconds = divmod(time.time_ns(), 10**9)
    return f"{seconds}.{nanoseconds:09d}"



def stop(container_id: str, *, timeout: int = 10) -> None:
    with _translated(EngineError):
        _client().containers.get(container_id).stop(timeout=timeout)


def remove(container_id: str) -> None:
    """Remove a container, running or not; one already gone is fine.

    If another process's removal is in progress (the engine goes on with it
    after that process died), wait for it to end instead of failing.
    """
    with _translated(EngineError):
        try:
            _client().containers.get(container_id).remove(force=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code != 409 or "already in progress" not in str(exc):
                raise
            _wait_removed(container_id, str(exc))


def _wait_removed(container_id: str, raw: str) -> None:
    deadline = time.monotonic() + settings.BERTH_DOCKER_TIMEOUT
    while time.monotonic() < deadline:
        try:
            _client().containers.get(container_id)
        except docker.errors.NotFound:
            return
        time.sleep(0.1)
    raise EngineError(raw)


def rename(container_id: str, name: str) -> None:
    with _translated(EngineError):
        _client().containers.get(container_id).rename(name)


def inspect(container_id: str) -> ContainerInfo | None:
    with _translated(EngineError):
        try:
            c = _client().containers.get(container_id)
        except docker.errors.NotFound:
            return None
    return ContainerInfo(c.id, c.name, c.status, dict(c.labels))


def started_at(container_id: str) -> datetime | None:
    """When the container last started (UTC), or None if it never did or is gone."""
    return _state_time(container_id, "StartedAt")


def _state_time(container_id: str, key: str) -> datetime | None:
    with _translated(EngineError):
        try:
            raw = _client().api.inspect_container(container_id)["State"][key]
        except docker.errors.NotFound:
            return None
    return _engine_time(raw)


def list_instance_containers() -> list[ContainerInfo]:
    """Every workload container of this installation (made_by_berth), in one call.

    Not the containers a failed deploy kept for their logs (FAILED_MARK).

    The engine's list answer already has names, labels and states: no
    per-container inspect (what `containers.list()` would do).
    """
    with _translated(EngineError):
        found = _client().api.containers(
            all=True, filters={"label": [instance_label(), WORKLOAD_LABEL]}
        )
    return [
        ContainerInfo(
            id=c["Id"],
            name=(c.get("Names") or ["/"])[0].lstrip("/"),
            status=c.get("State", ""),
            labels=dict(c.get("Labels") or {}),
            created=c.get("Created"),
            image=c.get("Image", ""),
        )
        for c in found
        if made_by_berth(dict(c.get("Labels") or {}), (c.get("Names") or ["/"])[0])
        and not is_kept_failed((c.get("Names") or ["/"])[0])
    ]


# --- live state: inspect and the event stream --------------------------------------------

# The container events that change what Berth shows of a container.
EVENT_ACTIONS = ("start", "die", "oom", "stop", "destroy", "restart", "health_status")
# How long past a window's end the event stream may stay silent before it counts as lost.
EVENTS_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class ContainerState:
    """What the engine says of a container now (one inspect).

    `exit_code` and `oom_killed` describe how it last ended while it is not
    running (the engine resets them when it starts again); `since` is when it
    started if it runs, else when it ended (else when it was created).
    """

    id: str
    name: str
    labels: dict[str, str]
    status: str
    exit_code: int | None
    oom_killed: bool
    restart_count: int
    health: str
    since: datetime | None


@dataclass(frozen=True)
class EngineEvent:
    """One container event: `action` without its detail ("health_status", not
    "health_status: healthy"), `detail` the rest, the engine's time in nanoseconds."""

    action: str
    detail: str
    container_id: str
    time_nano: int
    attributes: dict[str, str]

    @property
    def exit_code(self) -> int | None:
        try:
            return int(self.attributes.get("exitCode", ""))
        except ValueError:
            return None


def _engine_time(raw: str | None) -> datetime | None:
    """An engine timestamp (RFC 3339 with nanoseconds) in UTC; None for its zero time."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6})\d*)?Z$", raw or "")
    if match is None or raw.startswith("0001-"):
        return None
    fraction = (match.group(2) or "0").ljust(6, "0")
    return datetime.fromisoformat(f"{match.group(1)}.{fraction}+00:00")


def inspect_state(container_id: str) -> ContainerState | None:
    """The container's state now; None if the engine no longer has it."""
    with _translated(EngineError):
        try:
            raw = _client().api.inspect_container(container_id)
        except docker.errors.NotFound:
            return None
    return parse_state(raw)


def parse_state(raw: dict) -> ContainerState:
    """A ContainerState from the engine's inspect JSON."""
    state = raw.get("State") or {}
    status = state.get("Status", "")
    running = status == "running"
    if running:
        since = _engine_time(state.get("StartedAt"))
    else:
        since = _engine_time(state.get("FinishedAt")) or _engine_time(raw.get("Created"))
    return ContainerState(
        id=raw.get("Id", ""),
        name=(raw.get("Name") or "/").lstrip("/"),
        labels=dict((raw.get("Config") or {}).get("Labels") or {}),
        status=status,
        exit_code=None if running else state.get("ExitCode"),
        oom_killed=not running and bool(state.get("OOMKilled")),
        restart_count=int(raw.get("RestartCount") or 0),
        health=((state.get("Health") or {}).get("Status") or "").replace("none", ""),
        since=since,
    )


def _nano_param(nanoseconds: int) -> str:
    # The engine reads `since` and `until` as seconds with up to nine decimals.
    return f"{nanoseconds // 1_000_000_000}.{nanoseconds % 1_000_000_000:09d}"


def events(*, since_nano: int, until_nano: int) -> Iterator[EngineEvent]:
    """This installation's container events from `since_nano` to `until_nano`, then the end.

    Times are nanoseconds since the epoch. The engine replays what it still
    holds from before now and streams the rest as it happens, and closes the
    stream at `until_nano`: a reader that calls this for one window after the
    other (the next `since` one nanosecond after the last `until`) misses and
    repeats nothing while the engine keeps its events. Raises
    EngineUnreachable when the stream cannot be opened, breaks, or stays
    silent past its end by EVENTS_GRACE_SECONDS (an engine that hangs): the
    caller reconnects and reconciles.
    """
    api = _client().api
    filters = {"type": ["container"], "label": [instance_label()], "event": list(EVENT_ACTIONS)}
    params = {"since": _nano_param(since_nano), "until": _nano_param(until_nano),
              "filters": docker.utils.convert_filters(filters)}
    read_timeout = max(0.0, (until_nano - time.time_ns()) / 1e9) + EVENTS_GRACE_SECONDS
    try:
        # What APIClient.events() does, but with a read timeout (it passes
        # timeout=None, and a silent, hung engine would block forever).
        response = api._get(api._url("/events"), params=params, stream=True,
                            timeout=(settings.BERTH_DOCKER_TIMEOUT, read_timeout))
        api._raise_for_status(response)
        try:
            for raw in api._stream_helper(response, decode=True):
                event = _event(raw)
                if event is not None:
                    yield event
        finally:
            response.close()
    except docker.errors.APIError as exc:
        raise EngineError(str(exc.explanation or exc.status_code)) from None
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError,
            ValueError) as exc:
        _forget_client()
        raise EngineUnreachable(f"the event stream broke: {exc}") from None
    if time.time_ns() < until_nano:
        raise EngineUnreachable("the engine closed the event stream early")


def _event(raw: dict) -> EngineEvent | None:
    actor = raw.get("Actor") or {}
    action, _, detail = (raw.get("Action") or raw.get("status") or "").partition(":")
    container_id = actor.get("ID") or raw.get("id") or ""
    if not container_id or action not in EVENT_ACTIONS:
        return None
    time_nano = int(raw.get("timeNano") or int(raw.get("time") or 0) * 1_000_000_000)
    return EngineEvent(action=action, detail=detail.strip(), container_id=container_id,
                       time_nano=time_nano, attributes=dict(actor.get("Attributes") or {}))


def read_stats(
    container_ids: list[str], *, workers: int, deadline: float | None = None,
) -> StatsBatch:
    """Read the containers' stats in parallel, at most `workers` calls at a time.

    Returns when every call has returned (or timed out after
    BERTH_STATS_TIMEOUT), or after `deadline` seconds: the calls still
    running are abandoned (`late`) and the queued ones cancelled, so one
    stuck container cannot hold up the others' readings. A container whose
    call from an earlier read is still running is not asked again (`late`
    too): at most one thread per container lingers. Raises EngineUnreachable
    when no call reached the engine; a container that vanished meanwhile is
    only `missing`.
    """
    # The client is made here, once: made lazily by each thread, a hanging
    # engine would be waited for once per container, one after the other.
    api = _client(STATS).api
    one_shot = True if version_gte(api.api_version, ONE_SHOT_API) else None
    batch = StatsBatch()
    with _stats_in_flight_lock:
        batch.late = {c for c in container_ids if c in _stats_in_flight}
        to_read = [c for c in container_ids if c not in batch.late]
        _stats_in_flight.update(to_read)
    if not to_read:
        return batch
    pool = ThreadPoolExecutor(min(workers, len(to_read)), "berth-stats")
    futures = {c: pool.submit(_stats, api, c, one_shot) for c in to_read}
    for container_id, future in futures.items():
        # Also called when the future is cancelled, or at once if it is already done.
        future.add_done_callback(lambda _, c=container_id: _stats_returned(c))
    wait(futures.values(), timeout=deadline)
    # Without waiting: an abandoned call ends in its own thread, and its idle
    # workers exit once the queue is empty.
    pool.shutdown(wait=False, cancel_futures=True)
    for container_id, future in futures.items():
        _collect(batch, container_id, future)
    unreachable = [e for e in batch.failed.values() if isinstance(e, EngineUnreachable)]
    if len(unreachable) == len(futures):
        raise EngineUnreachable(unreachable[0].raw)
    return batch


def _stats_returned(container_id: str) -> None:
    with _stats_in_flight_lock:
        _stats_in_flight.discard(container_id)


def _collect(batch: StatsBatch, container_id: str, future: Future) -> None:
    """File one container's call in the batch: a reading, missing, failed or late."""
    if not future.done() or future.cancelled():
        batch.late.add(container_id)
        return
    try:
        reading = future.result()
    except EngineError as exc:
        batch.failed[container_id] = exc
        return
    except Exception as exc:  # noqa: BLE001 - one container's trouble must not lose the tick
        batch.failed[container_id] = EngineError(repr(exc))
        return
    if reading is None:
        batch.missing.add(container_id)
    else:
        batch.readings[container_id] = reading


def _stats(api, container_id: str, one_shot: bool | None) -> StatsReading | None:
    """One container's counters now; None if it is gone or not running.

    One-shot stats (API 1.41+) answer at once instead of waiting for the
    engine's second reading; they carry no previous values, so the sampler
    keeps the previous reading itself.
    """
    with _translated(EngineError):
        try:
            raw = api.stats(container_id, stream=False, one_shot=one_shot)
        except docker.errors.NotFound:
            return None
        except (ValueError, requests.exceptions.ChunkedEncodingError):
            # The engine cut its answer off (a short JSON body: JSONDecodeError; a chunk
            # that never ends: ChunkedEncodingError): the container went away while it
            # was read, during a restore's or a deploy's swap. Gone, not an error.
            return None
    try:
        return parse_stats(raw)
    except (AttributeError, KeyError, TypeError, ValueError):
        raise EngineError(f"a malformed stats answer for {container_id[:12]}") from None


def parse_stats(raw: dict) -> StatsReading | None:
    """A StatsReading from the engine's stats JSON; None for a container that is not running."""
    memory = raw.get("memory_stats") or {}
    cpu = raw.get("cpu_stats") or {}
    if "usage" not in memory or not cpu.get("system_cpu_usage"):
        return None  # a stopped container answers with zeros and an empty memory_stats
    usage = cpu.get("cpu_usage") or {}
    return StatsReading(
        cpu_total=int(usage.get("total_usage") or 0),
        system_cpu=int(cpu["system_cpu_usage"]),
        online_cpus=int(cpu.get("online_cpus") or len(usage.get("percpu_usage") or []) or 1),
        memory_bytes=_memory_without_cache(memory),
        memory_limit=int(memory.get("limit") or 0),
    )


def _memory_without_cache(memory: dict) -> int:
    """Usage minus inactive file cache, as the docker CLI computes it (cgroup v1 and v2)."""
    usage = int(memory["usage"])
    detail = memory.get("stats") or {}
    # cgroup v1 reports total_inactive_file; cgroup v2 reports inactive_file.
    inactive = detail.get("total_inactive_file", detail.get("inactive_file"))
    if inactive is not None and int(inactive) < usage:
        return usage - int(inactive)
    return usage


# --- running a command inside a container ------------------------------------------------

EXEC_TAIL_CHARS = 4000
# How much longer than the in-container `timeout` Berth waits for the exec's
# stream before it stops waiting (the engine may hold the stream a moment
# after the process ends).
EXEC_GRACE_SECONDS = 5.0
EXEC_KILLED = 137  # 128 + SIGKILL

# The hook runs under `timeout -s KILL` where the image has one (coreutils, and
# busybox from 1.30); on a timeout, everything left in the exec's process group
# (the engine starts each exec in a session of its own) is killed too, so a
# child the command started does not live on. An image without `timeout` runs
# the command without it: only Berth's own deadline ends the wait, and the
# command runs on inside the container.
_EXEC_WRAPPER = (
    'if command -v timeout >/dev/null 2>&1; then timeout -s KILL "$1" sh -c "$0"; '
    'else sh -c "$0"; fi; rc=$?; '
    'if [ "$rc" -eq 137 ]; then kill -KILL 0; fi; exit "$rc"'
)


@dataclass(frozen=True)
class ExecResult:
    """How a command run by exec_in() ended.

    `exit_code` is None when Berth stopped waiting before the engine reported
    one. `output` is the end of what it wrote (stdout and stderr together),
    at most EXEC_TAIL_CHARS, with the secrets given masked.
    """

    exit_code: int | None
    timed_out: bool
    output: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def exec_in(container_id: str, command: str, *, timeout: int,
            secrets: Iterable[str] = ()) -> ExecResult:
    """Run `sh -c command` inside a running container, for at most `timeout` seconds.

    The docker SDK's exec_run() waits without a limit, so the exec is started
    on a raw socket read against a deadline: inside the container `timeout`
    kills the command (and what it started) after `timeout` seconds, and
    Berth stops waiting EXEC_GRACE_SECONDS later whatever the engine does.
    Raises EngineError if the exec cannot be created or started (the
    container is gone or stopped).
    """
    secrets = [s for s in secrets if s]
    argv = ["sh", "-c", _EXEC_WRAPPER, command, str(max(1, math.ceil(timeout)))]
    started = time.monotonic()
    with _translated(EngineError):
        api = _client().api
        exec_id = api.exec_create(container_id, argv, stdout=True, stderr=True)["Id"]
        sock = api.exec_start(exec_id, socket=True)
    tail = _ExecTail(EXEC_TAIL_CHARS + max((len(s) for s in secrets), default=0))
    deadline = started + timeout + EXEC_GRACE_SECONDS
    try:
        finished = _read_until(sock, tail, deadline)
    finally:
        _close_quietly(sock)
    exit_code = _exit_code(api, exec_id) if finished else None
    seconds = time.monotonic() - started
    timed_out = not finished or (exit_code == EXEC_KILLED and seconds >= timeout)
    return ExecResult(exit_code=exit_code, timed_out=timed_out,
                      output=tail.text(secrets), seconds=seconds)


class _ExecTail:
    """The end of an exec's multiplexed stream: frames of an 8-byte header and a payload."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.pending = b""
        self.data = bytearray()
        self.cut = False

    def feed(self, chunk: bytes) -> None:
        self.pending += chunk
        while len(self.pending) >= 8:
            size = struct.unpack(">BxxxL", self.pending[:8])[1]
            if len(self.pending) < 8 + size:
                break
            self.data += self.pending[8:8 + size]
            self.pending = self.pending[8 + size:]
            if len(self.data) > 2 * self.keep:
                del self.data[:-self.keep]
                self.cut = True

    def text(self, secrets: list[str]) -> str:
        data = bytes(self.data)
        cut = self.cut or len(data) > self.keep
        text = data[-self.keep:].decode("utf-8", "replace")
        masked = for_log(text, secrets)
        if cut:
            # A secret cut at the start of the kept bytes would not be masked
            # whole: drop as many characters as the longest secret has.
            masked = masked[max((len(s) for s in secrets), default=0):]
        return masked[-EXEC_TAIL_CHARS:]


def _read_until(sock, tail: _ExecTail, deadline: float) -> bool:
    """Read the stream into `tail` until it ends (True) or the deadline passes (False)."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            ready, _, _ = select.select([sock], [], [], remaining)
            if not ready:
                return False
            chunk = sock.recv(65536) if hasattr(sock, "recv") else sock.read(65536)
        except OSError as exc:
            raise EngineError(f"reading an exec's output: {exc}") from None
        if not chunk:
            return True
        tail.feed(chunk)


def _close_quietly(sock) -> None:
    """Shut the exec's connection down (an upgraded connection is never reused) and close it."""
    raw = getattr(sock, "_sock", sock)
    response = getattr(sock, "_response", None)
    for step in (lambda: raw.shutdown(socket.SHUT_RDWR),
                 response.close if response is not None else None, sock.close):
        # Each may find the connection closed already, by the engine or a step before.
        if step is not None:
            with suppress(OSError, ValueError):
                step()


def _exit_code(api, exec_id: str) -> int | None:
    """The exec's exit code, waiting a moment for the engine to record it."""
    deadline = time.monotonic() + EXEC_GRACE_SECONDS
    while True:
        with _translated(EngineError):
            state = api.exec_inspect(exec_id)
        if not state.get("Running"):
            code = state.get("ExitCode")
            return int(code) if code is not None else None
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


# --- reading a container's log ---------------------------------------------------------

# What one read may take from the engine, whatever was asked: a web worker reads a
# bounded answer (no `follow` stream is ever held open), and a chatty container
# cannot make a request large.
LOG_READ_BYTES = 4 * 1024 * 1024

@dataclass(frozen=True)
class LogSource:
    """What reading a container's log needs to know of it, from one inspect."""

    environment: dict[str, str]
    labels: dict[str, str]
    finished_at: datetime | None  # when its last run ended, if one did
    tty: bool
    image: str  # the image's id


def log_source(container_id: str, *, deadline: float) -> LogSource | None:
    """The container's environment, labels and last end; None if it is gone.

    Waits for the engine until `deadline` (time.monotonic()) at most.
    """
    with _translated(EngineError):
        api = _client().api
        try:
            response = api._get(api._url("/containers/{0}/json", container_id),
                                timeout=_remaining(deadline))
            raw = api._result(response, json=True)
        except docker.errors.NotFound:
            return None
    config = raw.get("Config") or {}
    return LogSource(environment=_environment(config.get("Env")),
                     labels=dict(config.get("Labels") or {}),
                     finished_at=_engine_time((raw.get("State") or {}).get("FinishedAt")),
                     tty=bool(config.get("Tty")), image=raw.get("Image") or "")


def image_environment(image_id: str, *, deadline: float) -> dict[str, str]:
    """The environment an image gives its containers; empty if the engine lost it."""
    with _translated(EngineError):
        api = _client().api
        try:
            response = api._get(api._url("/images/{0}/json", image_id),
                                timeout=_remaining(deadline))
            raw = api._result(response, json=True)
        except docker.errors.NotFound:
            return {}
    return _environment((raw.get("Config") or {}).get("Env"))


def _environment(items: list[str] | None) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in items or [])


def read_log(container_id: str, *, tail: int, deadline: float, since_ns: int | None = None,
             until_ns: int | None = None, keep: Callable[[str], bool] | None = None,
             max_lines: int | None = None, secrets: Iterable[str] = (),
             tty: bool = False) -> LogRead | None:
    """The last `tail` lines of a container's log (stdout and stderr), oldest first.

    Only lines received after `since_ns` (exclusive) and before `until_ns`
    (exclusive); with `keep`, only the lines it accepts, of which the last
    `max_lines` (default `tail`) are returned: `tail` is then how many lines
    are scanned. Each line is masked (`lib/redact.for_log` with `secrets`)
    whole, before `keep` sees it and before it is cut at LOG_LINE_CHARS. The
    engine's answer is read as a stream, never past LOG_READ_BYTES nor past
    `deadline` (time.monotonic()). None if the container is gone.
    """
    secrets = list(secrets)
    found = _read_log_once(container_id, tail, since_ns, until_ns, keep, max_lines, secrets,
                           tty, deadline)
    if (found is None or not found.over_bytes or found.scanned <= 1
            or time.monotonic() >= deadline):
        return found
    # The byte bound cut the answer before its newest lines: ask again for half as
    # many lines as fitted, so that the answer ends with the newest ones.
    again = _read_log_once(container_id, found.scanned // 2, since_ns, until_ns, keep,
                           max_lines, secrets, tty, deadline)
    if again is not None:
        again.cut = True
    return again


def _remaining(deadline: float) -> float:
    return max(0.05, deadline - time.monotonic())


def _read_log_once(container_id: str, tail: int, since_ns: int | None, until_ns: int | None,
                   keep: Callable[[str], bool] | None, max_lines: int | None,
                   secrets: list[str], tty: bool, deadline: float) -> LogRead | None:
    read = LogRead()
    lines = LogLines(read, since_ns, until_ns, keep, deque(maxlen=max_lines or tail), secrets)
    total = 0
    with _translated(EngineError):
        api = _client().api
        params = {
            # One message more than asked: the first may be the end of a line the
            # engine split (lib/logframes.LogLines.head).
            "stdout": 1, "stderr": 1, "timestamps": 1, "follow": 0, "tail": max(1, tail) + 1,
            # Whole seconds to the engine; the exact nanosecond bounds are applied
            # to each line below.
            **({"since": since_ns // 1_000_000_000} if since_ns else {}),
            **({"until": until_ns // 1_000_000_000 + 1} if until_ns else {}),
        }
        try:
            # Not api.logs(): it asks the engine once more (whether the container has
            # a tty) without the deadline.
            response = api._get(api._url("/containers/{0}/logs", container_id), params=params,
                                stream=True, timeout=_remaining(deadline))
            stream = CancellableStream(api._get_result_tty(True, response, tty), response)
        except docker.errors.NotFound:
            return None
        # The SDK reads a stream without a socket timeout: an engine that stops
        # answering midway is cut off at the deadline instead.
        stalled = threading.Event()
        timer = threading.Timer(_remaining(deadline), lambda: (stalled.set(), stream.close()))
        timer.start()
        try:
            for chunk in stream:
                total += len(chunk)
                if total > LOG_READ_BYTES:
                    read.cut = read.over_bytes = True
                    break
                lines.feed(chunk)
        finally:
            timer.cancel()
            stream.close()
    # Cut short, the answer still began where the engine's tail did.
    lines.close(began_inside=read.over_bytes or read.scanned > max(1, tail))
    read.stalled = stalled.is_set()
    read.cut |= read.stalled
    read.lines = list(lines.kept)
    return read
