"""The Django admin: a thin operations console over the domain models (autodiscovered)."""

from web.admin import backups, snapshots, workloads

__all__ = ["backups", "snapshots", "workloads"]
