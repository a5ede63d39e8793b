"""The secret env values deploys ran with, kept so that a rollback can set them back.

A deploy's recorded configuration (workloads/configuration.py) names a secret
by the id of its version here and its keyed fingerprint; the ledger row holds
no secret, not even encrypted. A version is shared by every deploy that ran
the same value, and goes with the last ledger row that refers to it.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from lib import crypto
from workloads.models.workloads import Workload


def fingerprint(workload_id: int, name: str, value: str) -> str:
    """The keyed fingerprint of one secret value of one workload's variable.

    The workload and the name are in it, so two rows with one value do not show it.
    """
    return crypto.fingerprint(str(workload_id), name, value)


class SecretVersionQuerySet(models.QuerySet):
    def unreferenced(self) -> SecretVersionQuerySet:
        """Versions no ledger row refers to any more."""
        return self.filter(deploys__isnull=True)


class SecretVersion(models.Model):
    """One value a workload's secret variable had when a deploy ran, encrypted at rest."""

    workload = models.ForeignKey(
        Workload, models.CASCADE, related_name="secret_versions", verbose_name=_("workload")
    )
    name = models.CharField(_("name"), max_length=128)
    secret_encrypted = models.TextField(editable=False)
    fingerprint = models.CharField(_("fingerprint"), max_length=64, editable=False)
    created = models.DateTimeField(_("created"), default=timezone.now)

    objects = SecretVersionQuerySet.as_manager()

    class Meta:
        ordering = ["workload", "name", "id"]
        verbose_name = _("secret version")
        verbose_name_plural = _("secret versions")
        constraints = [
            models.UniqueConstraint(fields=["workload", "name", "fingerprint"],
                                    name="secret_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.name} (version {self.pk})"

    @classmethod
    def keep(cls, *, workload: Workload, name: str, value: str) -> SecretVersion:
        """The version of this value, made if it is new: versions do not multiply per deploy."""
        version, _created = cls.objects.get_or_create(
            workload=workload, name=name, fingerprint=fingerprint(workload.pk, name, value),
            defaults={"secret_encrypted": crypto.encrypt(value)},
        )
        return version

    def get_value(self) -> str:
        return crypto.decrypt(self.secret_encrypted)
