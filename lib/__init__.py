"""Leaf modules with no app imports: Docker, locks, git, host paths, files, crypto, redaction."""
