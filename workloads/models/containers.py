"""The Container index and the stats samples that join through it."""

from __future__ import annotations

from django.db import models, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from workloads.models.workloads import Workload


class ContainerQuerySet(models.QuerySet):
    def live(self) -> ContainerQuerySet:
        return self.filter(removed__isnull=True)


class Container(models.Model):
    """The index of Docker containers a workload has had (stats join through it)."""

    workload = models.ForeignKey(
        Workload, models.CASCADE, related_name="containers", verbose_name=_("workload")
    )
    docker_id = models.CharField(_("Docker id"), max_length=64, unique=True)
    name = models.CharField(_("name"), max_length=255)
    replica = models.PositiveSmallIntegerField(_("replica"))
    image_reference = models.CharField(_("image"), max_length=512)
    created = models.DateTimeField(_("created"), default=timezone.now)
    removed = models.DateTimeField(_("removed"), null=True, blank=True)

    objects = ContainerQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "replica"]
        verbose_name = _("container")
        verbose_name_plural = _("containers")
        indexes = [models.Index(fields=["workload", "removed"], name="container_live_idx")]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def replace_for(cls, workload: Workload, new: list[tuple[str, str, int]], image: str) -> None:
        """Record `new` (docker id, name, replica) as the workload's live containers."""
        now = timezone.now()
        # One transaction: the index never shows both generations live, or none.
        with transaction.atomic():
            cls.objects.filter(workload=workload, removed__isnull=True).update(removed=now)
            cls.objects.bulk_create(
                cls(workload=workload, docker_id=docker_id, name=name, replica=replica,
                    image_reference=image, created=now)
                for docker_id, name, replica in new
            )


class ContainerStatsSample(models.Model):
    """One sampler tick's reading of one container (written by engine/sampler.py).

    A tick's samples share one timestamp, so a workload's usage at an instant
    is the sum over the rows with that timestamp.
    """

    # No index of its own: (container, timestamp) below serves every lookup by container.
    container = models.ForeignKey(
        Container, models.CASCADE, related_name="stats", verbose_name=_("container"),
        db_index=False,
    )
    timestamp = models.DateTimeField(_("timestamp"))
    cpu_percent = models.FloatField(_("CPU percent"))
    memory_bytes = models.PositiveBigIntegerField(_("memory (bytes)"))
    memory_limit = models.PositiveBigIntegerField(_("memory limit (bytes)"))

    class Meta:
        verbose_name = _("stats sample")
        verbose_name_plural = _("stats samples")
        indexes = [
            # The history query: a workload's containers, then a time range of each.
            models.Index(fields=["container", "timestamp"], name="stats_container_time_idx"),
            # Pruning: everything older than the retention, whatever the container.
            models.Index(fields=["timestamp"], name="stats_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.container_id} @ {self.timestamp:%Y-%m-%d %H:%M:%S}"
