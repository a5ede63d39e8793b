"""The images Berth pulled: what image garbage collection may remove (engine/images.py)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class PulledImage(models.Model):
    """An image a workload's deploy pulled, by the engine's image id.

    Built images carry Berth's labels; a pulled one carries only its author's,
    so this row is what says Berth pulled it. It names the workload by number,
    not by a foreign key: the row outlives the workload (and its ledger rows,
    which are pruned), so the image can still be removed after both are gone.
    """

    workload_number = models.PositiveBigIntegerField(_("workload id"))
    image_id = models.CharField(_("image id"), max_length=100)
    reference = models.CharField(_("pinned reference"), max_length=512)
    pulled = models.DateTimeField(_("last pulled"), default=timezone.now)

    class Meta:
        verbose_name = _("pulled image")
        verbose_name_plural = _("pulled images")
        constraints = [
            models.UniqueConstraint(fields=["workload_number", "image_id"],
                                    name="one_pulled_image_row_per_workload"),
        ]

    def __str__(self) -> str:
        return f"{self.reference} ({self.image_id[:19]})"

    @classmethod
    def note(cls, *, workload_id: int, image_id: str, reference: str) -> None:
        """Record (or refresh) that the workload pulled the image now."""
        cls.objects.update_or_create(
            workload_number=workload_id, image_id=image_id,
            defaults={"reference": reference, "pulled": timezone.now()},
        )
