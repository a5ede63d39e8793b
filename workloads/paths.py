"""Host paths of volume mounts: derived from configuration, never stored.

One constant, SUPPORTED_SCOPES, drives validation here and, later, snapshot
capture and restore.
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

# Host directories Berth refuses to bind as an `absolute` volume: binding one
# of these read-write into a container hands it the host.
FORBIDDEN_ABSOLUTE = {"/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc",
                      "/root", "/run", "/sbin", "/sys", "/usr", "/var", "/var/run"}


def volumes_root() -> str:
    return os.path.join(str(settings.DATA_DIR), "volumes")


def validate_source(scope: str, source: str) -> None:
    """Raise ValidationError unless `source` is acceptable for `scope`."""
    if scope not in SUPPORTED_SCOPES:
        raise ValidationError(
            _("Unknown volume scope %(scope)s (use absolute, stage or project).") % {"scope": scope}
        )
    if not source or "\x00" in source or "\\" in source:
        raise ValidationError(_("The volume source is empty or contains forbidden characters."))
    if ".." in source.split("/"):
        raise ValidationError(_("A volume source must not contain '..'."))
    if scope == SCOPE_ABSOLUTE:
        if not source.startswith("/"):
            raise ValidationError(_("An absolute volume needs an absolute host path."))
        if os.path.normpath(source) in FORBIDDEN_ABSOLUTE:
            raise ValidationError(
                _("%(path)s is a system directory and cannot be a volume.") % {"path": source}
            )
    else:
        if source.startswith("/"):
            raise ValidationError(
                _("A stage or project volume needs a path relative to its directory.")
            )
        if any(part in {"", "."} for part in source.split("/")):
            raise ValidationError(
                _("A volume source must be a clean relative path (no empty or '.' parts).")
            )


def validate_target(target: str) -> None:
    if not target.startswith("/") or ".." in target.split("/") or "\x00" in target:
        raise ValidationError(_("The container path must be absolute and must not contain '..'."))
    if os.path.normpath(target) == "/":
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
    _check_inside(path, base)
    _check_inside(os.path.realpath(path), os.path.realpath(base))
    return path


def _check_inside(path: str, base: str) -> None:
    if os.path.commonpath([path, base]) != base:
        raise ValidationError(
            _("The volume path %(path)s escapes its base directory %(base)s.")
            % {"path": path, "base": base}
        )
