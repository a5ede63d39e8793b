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

import json
from dataclasses import dataclass
from datetime import datetime

from lib import redact
from snapshots.models import Snapshot

FORMAT, VERSION = "berth-copy-sidecar", 1
# A sidecar is a few KiB; anything far larger is not one of Berth's.
MAX_BYTES = 1 << 20
_MAX_ITEMS = 1000
_ARCHIVE_SUFFIXES = (".tar.zst.age", ".tar.zst")
_SIDECAR_SUFFIXES = (".json.age", ".json")


def sidecar_name(copy_name: str, *, encrypted: bool) -> str:
    base = copy_name.removesuffix(".age").removesuffix(".tar.zst")
    return f"{base}.json.age" if encrypted else f"{base}.json"


def copy_name(sidecar: str) -> str | None:
    """The copy a sidecar's name belongs to, or None if the name is not a sidecar's."""
    for suffix, archive in zip(_SIDECAR_SUFFIXES, _ARCHIVE_SUFFIXES, strict=True):
        if sidecar.endswith(suffix) and len(sidecar) > len(suffix):
            return sidecar.removesuffix(suffix) + archive
    return None


def is_encrypted(copy_name: str) -> bool:
    return copy_name.endswith(".age")


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
            "hooks": {"pre": workload.pre_backup_hook, "post": workload.post_backup_hook,
                      "timeout": workload.backup_hook_timeout,
                      "on_failure": workload.pre_hook_failure},
        },
    }


def _env(env, *, with_secrets: bool) -> dict:
    if not env.is_secret:
        return {"name": env.name, "value": env.value, "secret": False}
    return {"name": env.name, "secret": True,
            "value": env.get_value() if with_secrets else None}


class SidecarError(ValueError):
    """A document that is not a sidecar Berth can use (the message says what is wrong)."""


@dataclass(frozen=True)
class Described:
    """A parsed, checked sidecar: what a catalogue lists and a recovery re-creates."""

    snapshot: dict
    workload: dict

    @property
    def created(self) -> datetime:
        return datetime.fromisoformat(self.snapshot["created"])


def parse(data: bytes) -> Described:
    """Check a sidecar read from a target, which is untrusted like any remote object.

    Only the shape is checked here (types, sizes, known keys); the values go
    through the models' own validation when a recovery re-creates a workload,
    and the archive through the safe extractor.
    """
    if len(data) > MAX_BYTES:
        raise SidecarError("the sidecar is too large")
    try:
        document = json.loads(data.decode("utf-8"), object_pairs_hook=_unique,
                              parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise SidecarError("the sidecar is not valid JSON") from None
    _expect(isinstance(document, dict) and document.get("format") == FORMAT,
            "not a Berth sidecar")
    _expect(document.get("version") == VERSION, "an unknown sidecar version")
    snapshot, workload = document.get("snapshot"), document.get("workload")
    _expect(isinstance(snapshot, dict) and isinstance(workload, dict), "a part is missing")
    _check_snapshot(snapshot)
    _check_workload(workload)
    return Described(snapshot=snapshot, workload=workload)


def _check_snapshot(snapshot: dict) -> None:
    for key in ("id", "size", "data_bytes", "file_count", "volume_count"):
        _expect(_count(snapshot.get(key)), f"snapshot.{key} is not a count")
    _expect(_text(snapshot.get("kind"), 40), "snapshot.kind is not text")
    _expect(isinstance(snapshot.get("imported"), bool), "snapshot.imported is not a flag")
    digest = snapshot.get("sha256")
    _expect(isinstance(digest, str) and len(digest) == 64
            and all(c in "0123456789abcdef" for c in digest), "snapshot.sha256 is not a SHA-256")
    try:
        when = datetime.fromisoformat(snapshot.get("created"))
    except (TypeError, ValueError):
        raise SidecarError("snapshot.created is not a time") from None
    _expect(when.tzinfo is not None, "snapshot.created has no time zone")


def _check_workload(workload: dict) -> None:
    for part in ("project", "stage"):
        value = workload.get(part)
        _expect(isinstance(value, dict) and _text(value.get("slug"), 40)
                and _text(value.get("name"), 100), f"workload.{part} is malformed")
    for key, length in (("slug", 40), ("name", 100), ("source_kind", 10), ("image", 255),
                        ("running_reference", 512), ("git_url", 2048), ("git_ref", 255),
                        ("git_dockerfile", 1024), ("git_context", 1024),
                        ("snapshot_consistency", 4)):
        _expect(_text(workload.get(key), length), f"workload.{key} is not text")
    _expect(_count(workload.get("replicas")), "workload.replicas is not a count")
    args = workload.get("build_args")
    _expect(isinstance(args, dict) and len(args) <= _MAX_ITEMS
            and all(_text(k, 256) and (v is None or _text(v, 4096)) for k, v in args.items()),
            "workload.build_args is malformed")
    _items(workload, "volumes", {"scope": str, "source": str, "target": str, "read_only": bool})
    _items(workload, "ports", {"host_ip": str, "host_port": int, "container_port": int,
                               "protocol": str})
    _items(workload, "env", {"name": str, "secret": bool, "value": (str, type(None))})
    hooks = workload.get("hooks")  # absent from sidecars written before hooks existed
    _expect(hooks is None or (
        isinstance(hooks, dict) and set(hooks) == {"pre", "post", "timeout", "on_failure"}
        and _text(hooks["pre"], 4096) and _text(hooks["post"], 4096)
        and _count(hooks["timeout"]) and _text(hooks["on_failure"], 8)),
        "workload.hooks is malformed")


def _items(workload: dict, key: str, shape: dict) -> None:
    items = workload.get(key)
    _expect(isinstance(items, list) and len(items) <= _MAX_ITEMS, f"workload.{key} is not a list")
    for item in items:
        _expect(isinstance(item, dict) and set(item) == set(shape)
                and all(isinstance(item[k], t) and not (t is int and isinstance(item[k], bool))
                        and (not isinstance(item[k], str) or len(item[k]) <= 65536)
                        for k, t in shape.items()),
                f"workload.{key} holds a malformed item")


def _expect(condition: bool, problem: str) -> None:
    if not condition:
        raise SidecarError(problem)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 62


def _text(value: object, length: int) -> bool:
    return isinstance(value, str) and len(value) <= length


def _unique(pairs: list[tuple[str, object]]) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _no_constant(value: str) -> None:
    raise ValueError(value)
