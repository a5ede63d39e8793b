"""What a workload's page says about its configuration: the ports with links to the app,
the env (secrets as "set"), the volumes with their host paths and sizes, and whether the
configured image or ref differs from what runs."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.http import HttpRequest

from lib import dirsize
from workloads.models import DeployRecord, PortMapping, Workload

# Rollbacks of rollbacks followed back to the deploy that named the version.
ROLLBACK_CHAIN_MAX = 20


@dataclass(frozen=True)
class Drift:
    running: str
    configured: str
    rolled_back: bool


def _short(reference: str, other: str) -> str:
    """`reference` without the repository both share: `v1` beside `v2` of one image."""
    repo, colon, tag = reference.rpartition(":")
    other_repo = other.rpartition(":")[0]
    if colon and "/" not in tag and repo == other_repo:
        return tag
    return reference


def _named(record: DeployRecord) -> DeployRecord:
    """The deploy that asked for this version by name (a rollback replays a digest)."""
    for _step in range(ROLLBACK_CHAIN_MAX):
        if record.rolled_back_from is None:
            break
        record = record.rolled_back_from
    return record


def drift(workload: Workload, current: DeployRecord | None) -> Drift | None:
    """How what runs (the newest successful deploy) differs from what the next deploy runs,
    or None when they are the same (or nothing runs)."""
    if current is None or current.source_kind != workload.source_kind:
        return None
    if current.pinned_reference and workload.source_reference == current.pinned_reference:
        return None  # configured as exactly what runs (a rollback with its configuration)
    rolled_back = current.rolled_back_from_id is not None
    named = _named(current)
    if workload.source_kind == Workload.SourceKind.GIT:
        running, configured = named.git_ref, workload.git_ref
        if rolled_back and current.commit:
            running = f"{running}@{current.commit[:12]}"
    else:
        running = named.requested_reference
        configured = workload.image
        if "@" not in running:
            running, configured = _short(running, configured), _short(configured, running)
    if running == configured and not rolled_back:
        return None
    return Drift(running=running, configured=configured, rolled_back=rolled_back)


def port_link(request: HttpRequest, port: PortMapping) -> str | None:
    """http://<the request's host>:<port>/ for a TCP port (Berth and the app share a host)."""
    if port.protocol != PortMapping.Protocol.TCP:
        return None
    host = request.get_host().rsplit(":", 1)[0] if not request.get_host().endswith("]") \
        else request.get_host()
    return f"http://{host}:{port.host_port}/"


def volume_rows(workload: Workload) -> list[tuple]:
    """(volume, host path, size) for each volume; the path is None where it no longer resolves
    safely (a symlink planted in a volume's directory, a changed data dir), the size None
    where nothing is there yet. One bounded walk (lib/dirsize.py) is shared by all the
    volumes: past it, a size is a lower bound and the rest are not walked."""
    rows = []
    budget = dirsize.MAX_ENTRIES
    for volume in workload.volumes.all():
        try:
            host_path = volume.host_path()
        except ValidationError:
            rows.append((volume, None, None))
            continue
        size = dirsize.tree_size(host_path, max_entries=budget) if budget > 0 \
            else dirsize.TreeSize(0, complete=False)
        if size is not None:
            budget -= size.entries
        rows.append((volume, host_path, size))
    return rows


def context(request: HttpRequest, workload: Workload) -> dict:
    return {
        "ports": [(port, port_link(request, port)) for port in workload.ports.all()],
        "env_vars": list(workload.env_vars.all()),
        "volumes": volume_rows(workload),
    }
