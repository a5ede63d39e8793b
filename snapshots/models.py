"""Snapshot and restore records arrive with the snapshot and restore issues."""
