"""Projects and their stages: the two levels above a workload."""

from __future__ import annotations

from django.core.exceptions import ValidationError
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

    def clean(self) -> None:
        super().clean()
        self.check_kept_in_place(self.slug)

    def check_kept_in_place(self, slug: str) -> None:
        """A project with workloads keeps its slug: their volumes' host paths derive from it,
        so a new one would point them at other directories (another workload's, or empty)."""
        if self.pk is None:
            return
        stored = type(self).objects.filter(pk=self.pk).values_list("slug", flat=True).first()
        if stored is not None and stored != slug and self._has_workloads():
            raise ValidationError({"slug": _(
                "The project's workloads keep their volumes in directories named after this "
                "slug, so it cannot change while the project has workloads."
            )})

    def _has_workloads(self) -> bool:
        return self.stages.filter(workloads__isnull=False).exists()


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

    def clean(self) -> None:
        super().clean()
        self.check_kept_in_place(project_id=self.project_id, slug=self.slug)

    def check_kept_in_place(self, *, project_id: int | None, slug: str) -> None:
        """A stage with workloads keeps its project and slug: their volumes' host paths
        derive from both, so a change would point them at other directories."""
        if self.pk is None:
            return
        stored = type(self).objects.filter(pk=self.pk).values_list("project_id", "slug").first()
        if stored is not None and stored != (project_id, slug) and self.workloads.exists():
            raise ValidationError({"slug": _(
                "The stage's workloads keep their volumes in directories named after its "
                "project and slug, so neither can change while the stage has workloads."
            )})
