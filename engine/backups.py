"""Backup targets: the check an operator runs before trusting a target with backups, and
the passphrase that can open its copies.

The check writes a probe object, reads it back and deletes it (lib/offsite.py)
and records the outcome on the target as a fixed code. The target's own error
text goes to the log only, without credentials (docs/backups.md).

A passphrase is age's scrypt recipient, which cannot share a file with other
recipients; so the target holds an X25519 identity of its own, sealed with the
passphrase (`berth-identity.age`), and its public key is one more recipient of
every copy. Berth keeps neither the passphrase nor that identity.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext
from pyrage import x25519

from backups.models import BackupTarget
from lib import agecrypt, offsite, redact

logger = logging.getLogger(__name__)

OK = "ok"
IDENTITY_OBJECT = "berth-identity.age"
MAX_IDENTITY_OBJECT = 64 << 10  # a sealed identity is about 400 bytes


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




def _sealed_identity(store: offsite.Store) -> bytes | None:
    """The target's `berth-identity.age`, or None if it has none."""
    size = store.size(IDENTITY_OBJECT)
    if size is None:
        return None
    if size > MAX_IDENTITY_OBJECT:
        raise agecrypt.AgeError(gettext("The identity the target holds is not one Berth sealed."))
    with contextlib.closing(store.open(IDENTITY_OBJECT)) as stream:
        try:
            return stream.read(MAX_IDENTITY_OBJECT + 1)
        except Exception as exc:  # noqa: BLE001 - botocore's streaming errors too
            raise offsite.OffsiteError("no_read", f"{type(exc).__name__}: {exc}") from None


def set_passphrase(*, target: BackupTarget, passphrase: str, current: str = "") -> BackupTarget:
    """Let `passphrase` open the copies made to `target` from now on.

    The identity sealed on the target is kept whenever there is one (copies
    already made are encrypted to it): `current`, the passphrase that seals
    it now, changes the passphrase; a fresh Berth that gives the passphrase
    the target already has takes that identity over. Only a target without
    one gets a new identity. Its public key becomes the target's marked
    passphrase recipient. AgeError (the message says why) if the passphrase
    is too short or neither passphrase opens the identity the target holds;
    OffsiteError if the target fails.
    """
    store = target.store()
    sealed = _sealed_identity(store)
    if sealed is None:
        identity = x25519.Identity.generate()
    else:
        try:
            identity = agecrypt.unwrap_identity(sealed, current or passphrase)
        except agecrypt.AgeError:
            raise agecrypt.AgeError(gettext(
                "The target already holds an identity sealed with another passphrase: give "
                "that one as the current passphrase.")) from None
    if sealed is None or (current and current != passphrase):
        wrapped = agecrypt.wrap_identity(identity, passphrase,
                                         work_factor=settings.BERTH_PASSPHRASE_WORK_FACTOR)
        store.put(IDENTITY_OBJECT, io.BytesIO(wrapped))
        if _sealed_identity(store) != wrapped:
            raise offsite.OffsiteError("mismatch", f"{IDENTITY_OBJECT} read back differs")
    target.record_passphrase_recipient(agecrypt.recipient_of(identity))
    logger.info("backup target %s: copies are encrypted to its passphrase's recipient %s",
                target.pk, agecrypt.recipient_of(identity))
    return target


def identities_from_passphrase(target: BackupTarget, passphrase: str) -> list[x25519.Identity]:
    """The identity `target` holds sealed with `passphrase`, to restore its copies with.

    AgeError if the target holds none, the passphrase does not open it, or it
    is not the recipient the target marks as its passphrase's (when it marks
    one: a fresh Berth may not know it yet); OffsiteError if the target fails.
    """
    sealed = _sealed_identity(target.store())
    if sealed is None:
        raise agecrypt.AgeError(gettext(
            "The target holds no identity sealed with a passphrase (berth-identity.age)."))
    identity = agecrypt.unwrap_identity(sealed, passphrase)
    known = target.passphrase_recipient
    if known and agecrypt.recipient_of(identity) != known:
        raise agecrypt.AgeError(gettext(
            "The identity the target holds is not the one its copies are encrypted to."))
    return [identity]
