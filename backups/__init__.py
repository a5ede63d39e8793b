"""Backups that leave the host: the targets they go to (docs/backups.md)."""
