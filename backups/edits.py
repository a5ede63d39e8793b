"""One edit of a backup target, as the admin, the API and the pages make it.

An edit is measured against the target as it was loaded, once (never a
second read: another edit committed meanwhile must not change what "moved"
means). Secrets are write-only: an empty secret access key keeps the stored
one, an identity of "" forgets the stored one. Saving writes only the columns
the edit changed, so a check recorded meanwhile is not overwritten.
"""

from __future__ import annotations

import copy

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from backups.models import BackupTarget
from lib import agecrypt


def validate_identity(raw: str) -> None:
    """Refuse an identity that does not parse, without echoing it (the message names no key)."""
    if raw:
        try:
            agecrypt.parse_identities(raw)
        except agecrypt.AgeError as exc:
            raise ValidationError(str(exc)) from None


class TargetEdit:
    """A new target, or a change of `target`; the caller sets its plain fields on `target`."""

    def __init__(self, target: BackupTarget | None = None) -> None:
        self.target = target if target is not None else BackupTarget()
        self.loaded = copy.copy(self.target) if self.target.pk else None
        self.new_secret = False

    def give_secrets(self, *, secret_access_key: str = "", identity: str | None = None) -> None:
        """Set what was given: an empty key keeps the stored one; identity None keeps the
        stored one and "" forgets it. Before the model's validation, which needs them (a
        stored identity must belong to a recipient)."""
        if secret_access_key:
            self.target.set_secret_access_key(secret_access_key)
            self.new_secret = True
        if identity is not None:
            self.target.set_identity(identity)

    def settle(self) -> None:
        """What the new place keeps of the old one (BackupTarget.settle_change), and an S3
        target must have a secret; ValidationError by field."""
        self.target.settle_change(self.loaded, new_secret=self.new_secret)
        if self.target.kind == BackupTarget.Kind.S3 and not self.target.has_secret_access_key:
            raise ValidationError(
                {"secret_access_key": [_("An S3 target needs a secret access key.")]})

    def changed_fields(self) -> list[str]:
        """The columns this edit changed, against the target as it loaded it."""
        return [f.attname for f in BackupTarget._meta.concrete_fields
                if getattr(self.target, f.attname) != getattr(self.loaded, f.attname)]

    def save(self) -> BackupTarget:
        if self.loaded is None:
            self.target.save()
        elif changed := self.changed_fields():
            # Only what this edit changed: a check recorded meanwhile is not overwritten.
            self.target.save(update_fields=changed)
        return self.target
