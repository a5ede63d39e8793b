"""The Django admin: a thin operations console over the domain models (autodiscovered)."""

from web.admin import alerts, backups, snapshots, tokens, workloads

__all__ = ["alerts", "backups", "snapshots", "tokens", "workloads"]
