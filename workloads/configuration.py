"""A workload's configuration as a deploy ran it: recorded on the ledger row, compared, set back.

The one place that says which of a workload's settings make up its
configuration (SETTINGS: one line per field), with its env, ports and
volumes. A snapshot is plain JSON:

    {"version": 1, "source_kind": "image",
     "settings": {"image": "...", "replicas": 1, ...},
     "env": [{"name": "MODE", "value": "prod"},
             {"name": "TOKEN", "secret": true, "version": 7, "fingerprint": "<hmac hex>"}],
     "ports": [{"host_ip": "127.0.0.1", "host_port": 8080, "container_port": 80,
                "protocol": "tcp"}],
     "volumes": [{"scope": "stage", "source": "data", "target": "/data", "read_only": false}]}

A secret's value is never in it: only the id of its SecretVersion (its value
encrypted at rest) and a keyed fingerprint for comparing. docs/deploys.md,
"Rollback", says what a rollback does with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from lib import crypto
from workloads import edits
from workloads.models import DeployRecord, EnvVar, PortMapping, SecretVersion, VolumeMount, Workload
from workloads.models.secret_versions import fingerprint

FORMAT_VERSION = 1
IMAGE, GIT = Workload.SourceKind.IMAGE, Workload.SourceKind.GIT


@dataclass(frozen=True)
class Setting:
    """A Workload field that shapes the containers.

    `kinds`: the source kinds it applies to (empty: every kind). `pinned`:
    recorded, but what a rollback sets it to is what the deploy ran (the
    image's digest, the commit), not what was configured then.
    """

    field: str
    kinds: tuple[str, ...] = ()
    pinned: bool = False

    def applies_to(self, kind: str) -> bool:
        return not self.kinds or kind in self.kinds

    @property
    def label(self) -> str:
        return str(Workload._meta.get_field(self.field).verbose_name)

    @property
    def attname(self) -> str:
        """The attribute that holds the value (a foreign key's id)."""
        return Workload._meta.get_field(self.field).attname


# Left out, on purpose: name, slug and stage (which workload it is, not how it
# runs); the backup settings and hooks (they shape snapshots, not containers);
# the git credential (an access secret, bound to its URL's origin: a rollback
# must not bring back one that was revoked).
SETTINGS = (
    Setting("image", (IMAGE,), pinned=True),
    Setting("registry_credential", (IMAGE,)),
    Setting("git_url", (GIT,)),
    Setting("git_ref", (GIT,), pinned=True),
    Setting("git_dockerfile", (GIT,)),
    Setting("git_context", (GIT,)),
    Setting("build_args", (GIT,)),
    Setting("replicas"),
    Setting("memory_limit_mib"),
    *(Setting(field) for field in Workload.HEALTH_FIELDS),
)
PORT_FIELDS = ("host_ip", "host_port", "container_port", "protocol")
VOLUME_FIELDS = ("scope", "source", "target", "read_only")


def describe(workload: Workload) -> dict:
    """The workload's configuration now, secrets as fingerprints only (nothing is stored)."""
    return _snapshot(workload, keep=None)


def capture(workload: Workload) -> tuple[dict, list[SecretVersion]]:
    """The snapshot a deploy records, and the secret versions it names (kept, or made now)."""
    versions: list[SecretVersion] = []
    return _snapshot(workload, keep=versions), versions


def record(workload: Workload, deploy: DeployRecord) -> None:
    """Record on the deploy's ledger row the configuration it runs (again, if it changed)."""
    snapshot, versions = capture(workload)
    if snapshot != deploy.configuration:
        deploy.keep_configuration(snapshot, versions)


def _snapshot(workload: Workload, *, keep: list[SecretVersion] | None) -> dict:
    return {
        "version": FORMAT_VERSION,
        "source_kind": workload.source_kind,
        "settings": {s.field: getattr(workload, s.attname) for s in SETTINGS},
        "env": [_env_entry(workload, env, keep) for env in workload.env_vars.order_by("name")],
        "ports": sorted(({f: getattr(p, f) for f in PORT_FIELDS} for p in workload.ports.all()),
                        key=_port_key),
        # In id order: a snapshot's archive maps its entries to volumes by that index.
        "volumes": [{f: getattr(v, f) for f in VOLUME_FIELDS}
                    for v in workload.volumes.order_by("id")],
    }


def _env_entry(workload: Workload, env: EnvVar, keep: list[SecretVersion] | None) -> dict:
    if not env.is_secret:
        return {"name": env.name, "value": env.value}
    value = env.get_value()
    entry = {"name": env.name, "secret": True,
             "fingerprint": fingerprint(workload.pk, env.name, value)}
    if keep is not None:
        version = SecretVersion.keep(workload=workload, name=env.name, value=value)
        keep.append(version)
        entry["version"] = version.pk
    return entry


def _port_key(port: dict) -> tuple:
    return port["container_port"], port["protocol"], port["host_ip"], port["host_port"]


def setting_rows(snapshot: dict) -> list[tuple[str, Any]]:
    """(label, value) of each recorded setting of the snapshot's source kind, for a page."""
    return [(s.label, snapshot["settings"].get(s.field)) for s in SETTINGS
            if s.applies_to(snapshot["source_kind"]) and s.field in snapshot["settings"]]


# --- what differs -----------------------------------------------------------

ADDED, REMOVED, CHANGED = "added", "removed", "changed"


@dataclass(frozen=True)
class Change:
    """One difference between now and a recorded configuration, as a rollback would make it.

    `change` is what the rollback does: `added` (the recorded configuration
    has it, now has not), `removed`, or `changed`. `part` is `setting`, `env`,
    `port` or `volume`. A secret's `current` and `target` are always None.
    """

    part: str
    name: str
    change: str
    label: str = ""
    current: Any = None
    target: Any = None
    secret: bool = False


def diff(current: dict, target: dict) -> list[Change]:
    """What setting `target` over `current` changes (both snapshots, e.g. describe()'s).

    Settings of the other source kind and pinned ones (the code, which the
    rollback sets to what the deploy ran) are not compared here, nor one the
    target did not record (a field added since: a rollback leaves it as it is).
    """
    kind = current["source_kind"]
    changes = [
        Change("setting", s.field, CHANGED, label=s.label,
               current=current["settings"].get(s.field), target=target["settings"][s.field])
        for s in SETTINGS
        if s.applies_to(kind) and not s.pinned and s.field in target["settings"]
        and current["settings"].get(s.field) != target["settings"][s.field]
    ]
    changes += _env_diff(current["env"], target["env"])
    changes += _set_diff("port", current["ports"], target["ports"], port_text)
    changes += _set_diff("volume", current["volumes"], target["volumes"], volume_text)
    return changes


def _env_diff(current: list[dict], target: list[dict]) -> list[Change]:
    now = {e["name"]: e for e in current}
    then = {e["name"]: e for e in target}
    changes = []
    for name in sorted(now.keys() | then.keys()):
        a, b = now.get(name), then.get(name)
        secret = bool((a or {}).get("secret") or (b or {}).get("secret"))
        if a is None:
            change = ADDED
        elif b is None:
            change = REMOVED
        elif _env_value(a) != _env_value(b):
            change = CHANGED
        else:
            continue
        changes.append(Change(
            "env", name, change, secret=secret,
            current=None if secret or a is None else a["value"],
            target=None if secret or b is None else b["value"],
        ))
    return changes


def _env_value(entry: dict) -> tuple:
    return ("secret", entry["fingerprint"]) if entry.get("secret") else ("plain", entry["value"])


def _set_diff(part: str, current: list[dict], target: list[dict], text) -> list[Change]:
    now, then = {text(x) for x in current}, {text(x) for x in target}
    return ([Change(part, t, ADDED, target=t) for t in sorted(then - now)]
            + [Change(part, t, REMOVED, current=t) for t in sorted(now - then)])


def port_text(port: dict) -> str:
    host = f"[{port['host_ip']}]" if ":" in port["host_ip"] else port["host_ip"]
    return f"{host}:{port['host_port']}→{port['container_port']}/{port['protocol']}"


def volume_text(volume: dict) -> str:
    mode = "ro" if volume["read_only"] else "rw"
    return f"{volume['scope']}:{volume['source']} → {volume['target']} ({mode})"


# --- setting it back ----------------------------------------------------------

def missing_secrets(workload: Workload, snapshot: dict) -> list[str]:
    """The secret variables whose kept value is gone (pruned, or unreadable with today's key)."""
    return [entry["name"] for entry in _secret_entries(snapshot)
            if _kept_value(workload, entry) is None]


def _secret_entries(snapshot: dict) -> list[dict]:
    return [entry for entry in snapshot["env"] if entry.get("secret")]


def _kept_value(workload: Workload, entry: dict) -> str | None:
    version = SecretVersion.objects.filter(workload=workload, pk=entry.get("version")).first()
    if version is None:
        return None
    try:
        return version.get_value()
    except crypto.SecretUnreadable:
        return None


def apply(workload: Workload, snapshot: dict, *, reference: str,
          secrets: dict[str, str] | None = None) -> None:
    """Set the workload's configuration to `snapshot`, and its image (or git ref) to `reference`.

    `secrets` supplies values by name for secret variables (needed for one
    whose kept version is gone). Every rule an edit must keep is checked
    first; on a refusal (ValidationError, keyed `secrets` or `configuration`)
    nothing is changed. One transaction: the workload never has half of it.
    """
    values = _env_values(workload, snapshot, secrets or {})
    _set_settings(workload, snapshot, reference)
    ports = [PortMapping(workload=workload, **p) for p in snapshot["ports"]]
    volumes = [VolumeMount(workload=workload, **v) for v in snapshot["volumes"]]
    _check(workload, ports, volumes, list(values))
    with transaction.atomic():
        # Only the configuration: a restore's redeploy may be writing the state meanwhile.
        workload.save(update_fields=[setting.field for setting in SETTINGS])
        workload.volumes.all().delete()
        VolumeMount.objects.bulk_create(volumes)
        workload.ports.all().delete()
        PortMapping.objects.bulk_create(ports)
        workload.env_vars.all().delete()
        for name, (value, secret) in values.items():
            env = EnvVar(workload=workload, name=name)
            env.set_value(value, secret=secret)
            env.save()


def _env_values(workload: Workload, snapshot: dict,
                supplied: dict[str, str]) -> dict[str, tuple[str, bool]]:
    """{name: (value, secret)}; refuses values supplied for names that are not its secrets."""
    secret_names = {entry["name"] for entry in _secret_entries(snapshot)}
    unknown = sorted(set(supplied) - secret_names)
    if unknown:
        raise ValidationError({"secrets": _(
            "%(names)s: not a secret variable of the recorded configuration."
        ) % {"names": ", ".join(unknown)}})
    kept = sorted(name for name in supplied
                  if _kept_value(workload, _entry(snapshot, name)) is not None)
    if kept:
        # A typed value only stands in for one that is gone, never for one Berth keeps.
        raise ValidationError({"secrets": _(
            "%(names)s: Berth still keeps the value this deploy ran with; a rollback does "
            "not replace it."
        ) % {"names": ", ".join(kept)}})
    values, missing = {}, []
    for entry in snapshot["env"]:
        name = entry["name"]
        if not entry.get("secret"):
            values[name] = (entry["value"], False)
            continue
        value = supplied[name] if name in supplied else _kept_value(workload, entry)
        if value is None:
            missing.append(name)
        values[name] = (value, True)
    if missing:
        raise ValidationError({"secrets": _(
            "The value of the secret variable %(names)s that this deploy ran with is no longer "
            "kept: supply it, or roll back the code only."
        ) % {"names": ", ".join(missing)}})
    return values


def _entry(snapshot: dict, name: str) -> dict:
    return next(entry for entry in snapshot["env"] if entry["name"] == name)


def _set_settings(workload: Workload, snapshot: dict, reference: str) -> None:
    for setting in SETTINGS:
        if setting.applies_to(workload.source_kind) and not setting.pinned \
                and setting.field in snapshot["settings"]:
            setattr(workload, setting.attname, snapshot["settings"][setting.field])
    if workload.source_kind == GIT:
        workload.git_ref = reference
    else:
        workload.image = reference


def _check(workload: Workload, ports: list[PortMapping], volumes: list[VolumeMount],
           env_names: list[str]) -> None:
    """The rules of an edit, on the configuration as the rollback would leave it."""
    recorded = {setting.field for setting in SETTINGS}
    try:
        # The fields' own rules first: they also refuse a registry credential deleted since.
        workload.clean_fields(exclude=[f.name for f in Workload._meta.fields
                                       if f.name not in recorded])
        workload.clean()
        for volume in volumes:
            volume.clean()
        edits.check_parts(workload, ports=ports, volumes=volumes, env_names=env_names)
    except ValidationError as exc:
        raise ValidationError({"configuration": _(
            "The recorded configuration is not allowed any more: %(reason)s"
        ) % {"reason": " ".join(exc.messages)}}) from None
