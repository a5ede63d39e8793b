"""Host paths of volume mounts: derived from configuration, never stored.

One constant, SUPPORTED_SCOPES, drives validation here and, later, snapshot
capture and restore.

A volume binds a host directory read-write into a container, so a bad path
hands the container the host. The rules:

- `stage` and `project` sources are clean relative paths under the scope's
  directory in `$BERTH_DATA_DIR/volumes/`;
- `absolute` sources must lie inside one of the operator's
  BERTH_ABSOLUTE_VOLUME_ROOTS (none by default: absolute volumes are off until
  an operator names where they may live), and never overlap Berth's own data
  directory, /proc, /sys, /dev or the Docker socket's directory;
- every check runs on the real path too, so a symlink cannot redirect a
  volume, and deploys re-check right before the containers start;
- no volume may lie inside another (see `check_no_overlap`), so no container
  can swap a directory that another volume's path goes through.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

SCOPE_ABSOLUTE = "absolute"
SCOPE_STAGE = "stage"
SCOPE_PROJECT = "project"
SUPPORTED_SCOPES = (SCOPE_ABSOLUTE, SCOPE_STAGE, SCOPE_PROJECT)

# Never bound, whatever the allowed roots say: the kernel's views of the host
# and the directories holding the Docker socket.
ALWAYS_FORBIDDEN = ("/proc", "/sys", "/dev", "/run", "/var/run")
# ':' and ',' separate the fields of Docker's bind specification.
FORBIDDEN_CHARACTERS = ("\x00", "\\", ":", ",")


def volumes_root() -> str:
    return os.path.join(str(settings.DATA_DIR), "volumes")


def is_within(path: str, base: str) -> bool:
    """`path` is `base` or lies below it (both absolute and normalised)."""
    return os.path.commonpath([path, base]) == base


def overlaps(a: str, b: str) -> bool:
    return is_within(a, b) or is_within(b, a)


def _check_characters(value: str) -> None:
    if not value or any(c in value for c in FORBIDDEN_CHARACTERS) or not value.isprintable():
        raise ValidationError(
            _("The path is empty or contains a forbidden character (NUL, \\, ':' or ',').")
        )


def validate_source(scope: str, source: str) -> None:
    """Raise ValidationError unless `source` is acceptable for `scope`."""
    if scope not in SUPPORTED_SCOPES:
        raise ValidationError(
            _("Unknown volume scope %(scope)s (use absolute, stage or project).") % {"scope": scope}
        )
    _check_characters(source)
    if ".." in source.split("/"):
        raise ValidationError(_("A volume source must not contain '..'."))
    if scope == SCOPE_ABSOLUTE:
        if not source.startswith("/"):
            raise ValidationError(_("An absolute volume needs an absolute host path."))
        _check_absolute_policy(os.path.normpath(source))
    else:
        if source.startswith("/"):
            raise ValidationError(
                _("A stage or project volume needs a path relative to its directory.")
            )
        if any(part in {"", "."} for part in source.split("/")):
            raise ValidationError(
                _("A volume source must be a clean relative path (no empty or '.' parts).")
            )


def _check_absolute_policy(path: str) -> None:
    data_dir = os.path.realpath(str(settings.DATA_DIR))
    forbidden = [*ALWAYS_FORBIDDEN, data_dir, str(settings.DATA_DIR)]
    if path == "/" or any(overlaps(path, f) for f in forbidden):
        raise ValidationError(
            _("%(path)s is a system directory or Berth's own data and cannot be a volume.")
            % {"path": path}
        )
    backups = [os.path.normpath(r) for r in settings.BERTH_BACKUP_DIRECTORY_ROOTS]
    if any(overlaps(path, b) for b in backups):
        raise ValidationError(
            _("%(path)s overlaps the backup directories (BERTH_BACKUP_DIRECTORY_ROOTS) and "
              "cannot be a volume.") % {"path": path}
        )
    roots = [os.path.normpath(r) for r in settings.BERTH_ABSOLUTE_VOLUME_ROOTS]
    if not roots:
        raise ValidationError(
            _("Absolute volumes are disabled: an operator must list the allowed host "
              "directories in BERTH_ABSOLUTE_VOLUME_ROOTS.")
        )
    if not any(is_within(path, root) for root in roots):
        raise ValidationError(
            _("%(path)s is outside the allowed host directories (%(roots)s).")
            % {"path": path, "roots": ", ".join(roots)}
        )


def validate_target(target: str) -> None:
    _check_characters(target)
    if not target.startswith("/") or ".." in target.split("/"):
        raise ValidationError(_("The container path must be absolute and must not contain '..'."))
    if os.path.normpath(target) == "/" or target.startswith("//"):
        raise ValidationError(_("The container path cannot be the container's root."))


def scope_base(scope: str, project_slug: str, stage_slug: str, source: str) -> str:
    if scope == SCOPE_PROJECT:
        return os.path.join(volumes_root(), project_slug)
    if scope == SCOPE_STAGE:
        return os.path.join(volumes_root(), project_slug, stage_slug)
    return os.path.normpath(source)


def host_path(scope: str, project_slug: str, stage_slug: str, source: str) -> str:
    """The host directory a volume binds, checked to stay inside its base.

    The check runs on the normalised path and on the real path of whatever
    already exists, so neither `..` nor a symlink planted inside the scope's
    directory can point a volume elsewhere on the host.
    """
    validate_source(scope, source)
    base = scope_base(scope, project_slug, stage_slug, source)
    path = os.path.normpath(os.path.join(base, source)) if scope != SCOPE_ABSOLUTE else base
    try:
        real = os.path.realpath(path, strict=False)
        real_base = os.path.realpath(base, strict=False)
    except OSError:
        # realpath can fail on a path it may not look at (another process's
        # /proc/<pid>/root): such a path is never a volume.
        raise ValidationError(
            _("The volume path %(path)s cannot be resolved.") % {"path": path}
        ) from None
    _check_inside(path, base)
    _check_inside(real, real_base)
    if real != path:
        raise ValidationError(
            _("The volume path %(path)s goes through a symbolic link.") % {"path": path}
        )
    if scope == SCOPE_ABSOLUTE:
        _check_absolute_policy(real)
    return path


def _check_inside(path: str, base: str) -> None:
    if not is_within(path, base):
        raise ValidationError(
            _("The volume path %(path)s escapes its base directory %(base)s.")
            % {"path": path, "base": base}
        )


def check_no_overlap(mine: list[tuple[str, str, str]], others: list[tuple[str, str, str]]) -> None:
    """Refuse volumes that lie inside one another.

    Each entry is (host path, scope, owner): the owner is the project slug for
    project volumes, "project/stage" for stage volumes, the path itself for
    absolute ones. The same path may be shared only by volumes of the same
    scope and owner (the point of a project-scoped volume); any other overlap
    would let one container rewrite the path another volume goes through.
    """
    for index, (path, scope, owner) in enumerate(mine):
        for other_path, other_scope, other_owner in [*mine[index + 1:], *others]:
            if not overlaps(path, other_path):
                continue
            if path == other_path and (scope, owner) == (other_scope, other_owner):
                continue
            raise ValidationError(
                _("The volume %(path)s overlaps the volume %(other)s.")
                % {"path": path, "other": other_path}
            )
