"""Backup targets: the check an operator runs before trusting a target with backups.

The check writes a probe object, reads it back and deletes it (lib/offsite.py)
and records the outcome on the target as a fixed code. The target's own error
text goes to the log only, without credentials (docs/backups.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.utils import timezone
from django.utils.translation import gettext

from backups.models import BackupTarget
from lib import offsite, redact

logger = logging.getLogger(__name__)

OK = "ok"


@dataclass(frozen=True)
class CheckResult:
    code: str  # "ok" or an offsite.OffsiteError code
    message: str

    @property
    def ok(self) -> bool:
        return self.code == OK


def recorded_result(code: str) -> CheckResult:
    """The result a recorded check code stands for, with its fixed message."""
    if code == OK:
        return CheckResult(OK, gettext(
            "The target answers: a probe was written, read back and deleted."))
    return CheckResult(code, offsite.OffsiteError(code).message)


def check_target(target: BackupTarget) -> CheckResult:
    """Probe `target` (write, read back, delete) and record the outcome on it."""
    try:
        offsite.check(target.store())
    except Exception as exc:  # noqa: BLE001 - every failure is a fixed code, never a 500
        error = exc if isinstance(exc, offsite.OffsiteError) else offsite.OffsiteError(
            "internal", f"{type(exc).__name__}: {exc}")
        result = CheckResult(error.code, error.message)
        logger.warning("backup target %s failed its check (%s): %s", target.pk, error.code,
                       redact.for_log(error.raw, target.secret_values()))
    else:
        result = recorded_result(OK)
    # Recorded only if the target is still where it was checked (an edit may have moved it).
    BackupTarget.objects.filter(pk=target.pk, **target.location()).update(
        checked=timezone.now(), check_code=result.code)
    return result


