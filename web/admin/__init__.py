"""The Django admin: a thin operations console over the domain models (autodiscovered)."""

from web.admin import snapshots, workloads

__all__ = ["snapshots", "workloads"]
