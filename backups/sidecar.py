"""The sidecar of a copy: what a fresh Berth needs to list and re-create without the archive.

A small JSON document stored next to each copy (`<copy name>.json.age`, or
`.json` on an unencrypted target): the snapshot's summary (kind, time, size,
the plain archive's SHA-256, volumes) and the workload's definition (source,
volumes, ports, env). Secret env values are included only when the sidecar
is encrypted to the target's recipients; an unencrypted sidecar says a
secret exists and leaves its value out (build args' values too, as they
may carry tokens). Registry and git credentials are never included.
docs/backups.md describes the format.
"""

from __future__ import annotations

from lib import redact
from snapshots.models import Snapshot

FORMAT, VERSION = "berth-copy-sidecar", 1


def sidecar_name(copy_name: str, *, encrypted: bool) -> str:
    base = copy_name.removesuffix(".age").removesuffix(".tar.zst")
    return f"{base}.json.age" if encrypted else f"{base}.json"


def describe(snapshot: Snapshot, *, with_secrets: bool) -> dict:
    """The sidecar's document for a copy of `snapshot`."""
    workload = snapshot.workload
    stage, project = workload.stage, workload.stage.project
    return {
        "format": FORMAT, "version": VERSION,
        "snapshot": {
            "id": snapshot.pk, "kind": snapshot.kind, "created": snapshot.created.isoformat(),
            "imported": snapshot.imported, "size": snapshot.size, "sha256": snapshot.sha256,
            "data_bytes": snapshot.data_bytes, "file_count": snapshot.file_count,
            "volume_count": snapshot.volume_count,
        },
        "workload": {
            "project": {"slug": project.slug, "name": project.name},
            "stage": {"slug": stage.slug, "name": stage.name},
            "slug": workload.slug, "name": workload.name,
            "source_kind": workload.source_kind,
            "image": workload.image,
            "running_reference": workload.running_reference,
            "git_url": redact.redact_url_credentials(workload.git_url),
            "git_ref": workload.git_ref, "git_dockerfile": workload.git_dockerfile,
            "git_context": workload.git_context,
            # Build args may carry tokens: their values travel only encrypted, like secrets.
            "build_args": (dict(workload.build_args) if with_secrets
                           else dict.fromkeys(workload.build_args or {})),
            "replicas": workload.replicas,
            "snapshot_consistency": workload.snapshot_consistency,
            "volumes": [{"scope": v.scope, "source": v.source, "target": v.target,
                         "read_only": v.read_only} for v in workload.volumes.order_by("id")],
            "ports": [{"host_ip": p.host_ip, "host_port": p.host_port,
                       "container_port": p.container_port, "protocol": p.protocol}
                      for p in workload.ports.order_by("id")],
            "env": [_env(e, with_secrets=with_secrets) for e in workload.env_vars.order_by("id")],
        },
    }


def _env(env, *, with_secrets: bool) -> dict:
    if not env.is_secret:
        return {"name": env.name, "value": env.value, "secret": False}
    return {"name": env.name, "secret": True,
            "value": env.get_value() if with_secrets else None}
