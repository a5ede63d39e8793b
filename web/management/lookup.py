"""Finding a workload or a backup target from a command-line argument."""

import sys

from django.core.management.base import CommandError

from backups.models import BackupTarget
from workloads.models import Workload


def find_workload(ref: str) -> Workload:
    """A workload by id, or by `project/stage/workload` slugs."""
    workloads = Workload.objects.with_parents()
    if ref.isdigit():
        found = workloads.filter(pk=int(ref)).first()
    else:
        parts = ref.split("/")
        if len(parts) != 3:
            raise CommandError(f"{ref!r} is neither an id nor project/stage/workload.")
        project, stage, slug = parts
        found = workloads.filter(
            stage__project__slug=project, stage__slug=stage, slug=slug
        ).first()
    if found is None:
        raise CommandError(f"No workload {ref!r}.")
    return found


def find_target(ref: str) -> BackupTarget:
    """A backup target by id or by name."""
    found = BackupTarget.objects.filter(name=ref).first()
    if found is None and ref.isdigit():
        found = BackupTarget.objects.filter(pk=int(ref)).first()
    if found is None:
        raise CommandError(f"No backup target {ref!r}.")
    return found


def read_identity(path: str | None) -> str:
    """The age identity file at `path` ("-" for standard input); "" without one (the
    target's stored identity is then used, if it has one)."""
    if path is None:
        return ""
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as source:
            return source.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"Cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
                           ) from None


def read_secret_file(path: str | None) -> str:
    """A passphrase from the file at `path` ("-" for standard input), its last newline
    dropped; "" without one."""
    if path is None:
        return ""
    return read_identity(path).removesuffix("\n")
