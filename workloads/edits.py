"""The rules an edit of a workload's parts must keep, as the API and the pages check them.

Each check raises a Django ValidationError keyed by the field the user
fixes (``replicas``, ``ports``, ``volumes``, ``env``, ``registry_credential``);
the serializer turns it into a DRF error, a form into field errors. The model's
own rules (``Workload.clean``, ``VolumeMount.clean``) stay on the models.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import reduce
from operator import or_

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils.translation import gettext as _

from workloads.models import (
    PortMapping,
    Project,
    RegistryCredential,
    Stage,
    VolumeMount,
    Workload,
)

CREDENTIAL_PERMISSION = "workloads.use_registrycredential"


def check_replicas(replicas: int, ports: Iterable[PortMapping]) -> None:
    """A published host port can be bound by one container only."""
    if replicas > 1 and list(ports):
        raise ValidationError(
            {"replicas": _("A workload that publishes host ports can only have one replica.")}
        )


# An address family's every address (:: takes both families).
WILDCARDS = {"0.0.0.0": 4, "::": 6}  # noqa: S104 - addresses compared, never bound


def _clash(a: str, b: str) -> bool:
    """Two host addresses on one port and protocol cannot both be bound."""
    if a == b:
        return True
    for wildcard, family in WILDCARDS.items():
        for one, other in ((a, b), (b, a)):
            if one == wildcard and (family == 6 or ":" not in other):
                return True
    return False


def check_host_ports(workload: Workload, ports: list[PortMapping]) -> None:
    """Each host port and protocol is published once, by one workload, on an address the
    site allows (BERTH_PORT_ADDRESSES) and that can be bound beside the others (a wildcard
    address takes the port on every address)."""
    if not ports:
        return
    for port in ports:
        if not port.address_allowed():
            raise ValidationError({"ports": _(
                "Host address %(address)s is not one ports may be published on: loopback, "
                "or an address BERTH_PORT_ADDRESSES lists."
            ) % {"address": port.host_ip}})
    for n, port in enumerate(ports):
        for other in ports[n + 1:]:
            if ((port.host_port, port.protocol) == (other.host_port, other.protocol)
                    and _clash(port.host_ip, other.host_ip)):
                raise ValidationError({"ports": _("Each host port may appear only once.")})
    taken = PortMapping.objects.filter(
        reduce(or_, (Q(host_port=p.host_port, protocol=p.protocol) for p in ports))
    )
    if workload.pk is not None:
        taken = taken.exclude(workload_id=workload.pk)  # its own, about to be replaced
    for clash in taken:
        if any((p.host_port, p.protocol) == (clash.host_port, clash.protocol)
               and _clash(p.host_ip, clash.host_ip) for p in ports):
            raise ValidationError(
                {"ports": _("Host port %(port)s is already published by another workload.")
                 % {"port": clash}}
            )


def check_unique(values: Iterable[str], *, key: str, field: str) -> None:
    seen = list(values)
    if len(seen) != len(set(seen)):
        raise ValidationError({field: _("Each %(key)s may appear only once.") % {"key": key}})


def check_volumes(workload: Workload, volumes: list[VolumeMount]) -> None:
    """Allowed host paths that overlap no other workload's volume."""
    try:
        workload.check_volumes(volumes)
    except ValidationError as exc:
        raise ValidationError({"volumes": exc.messages}) from None


def check_credential_use(user, *, current: RegistryCredential | None,
                         new: RegistryCredential | None) -> None:
    """Attaching a credential (it will be sent to a registry) needs its own permission."""
    if new is not None and new != current and not user.has_perm(CREDENTIAL_PERMISSION):
        raise ValidationError(
            {"registry_credential": _("You may not attach registry credentials.")}
        )


def check_parts(workload: Workload, *, ports: list[PortMapping], volumes: list[VolumeMount],
                env_names: list[str]) -> None:
    """Every rule on a workload's full lists of ports, volumes and env (a form sends them all)."""
    check_replicas(workload.replicas, ports)
    check_unique([v.target for v in volumes], key="target", field="volumes")
    check_volumes(workload, volumes)
    check_unique(env_names, key="name", field="env")
    check_host_ports(workload, ports)


class StillInUse(Exception):
    """A project or stage that still has workloads: removing it would orphan their containers."""


def delete_project(project: Project) -> None:
    """Delete an empty project (its stages with it); StillInUse while it has workloads."""
    with transaction.atomic():
        # Locks the row, so that on PostgreSQL a workload created meanwhile
        # (whose insert locks its stage, then its project, for key share) waits.
        Project.objects.select_for_update().get(pk=project.pk)
        Stage.objects.select_for_update().filter(project=project).count()
        if Workload.objects.filter(stage__project=project).exists():
            raise StillInUse(_("Project %(slug)s still has workloads: delete them first.")
                             % {"slug": project.slug})
        project.delete()


def delete_stage(stage: Stage) -> None:
    """Delete an empty stage; StillInUse while it has workloads."""
    with transaction.atomic():
        Stage.objects.select_for_update().get(pk=stage.pk)
        if Workload.objects.filter(stage=stage).exists():
            raise StillInUse(_("Stage %(stage)s still has workloads: delete them first.")
                             % {"stage": stage})
        stage.delete()
