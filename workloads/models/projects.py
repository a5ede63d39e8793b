"""Projects and their stages: the two levels above a workload."""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

SLUG_VALIDATOR = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$",
    _("Use 1–40 lowercase letters, digits and hyphens, not starting or ending with a hyphen."),
)


class Project(models.Model):
    name = models.CharField(_("name"), max_length=100)
    slug = models.CharField(_("slug"), max_length=40, unique=True, validators=[SLUG_VALIDATOR])
    created = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        ordering = ["slug"]
        verbose_name = _("project")
        verbose_name_plural = _("projects")

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("project-edit", args=[self.pk])


class Stage(models.Model):
    project = models.ForeignKey(
        Project, models.CASCADE, related_name="stages", verbose_name=_("project")
    )
    name = models.CharField(_("name"), max_length=100)
    slug = models.CharField(_("slug"), max_length=40, validators=[SLUG_VALIDATOR])
    created = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        ordering = ["project__slug", "slug"]
        verbose_name = _("stage")
        verbose_name_plural = _("stages")
        constraints = [
            models.UniqueConstraint(fields=["project", "slug"], name="stage_slug_unique_in_project")
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.slug}"

    def get_absolute_url(self) -> str:
        return reverse("stage-edit", args=[self.pk])
