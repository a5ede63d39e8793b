"""Berth's engine: the workflows that touch Docker, the disk or several models.

Entry points (this package's modules) take the workload's lock, recover what
a dead process left, claim their row and call a body in `engine.locked`,
which assumes the lock is held. Tasks (`engine.tasks`) sit on top and are
enqueued by dotted path. No models live here. docs/architecture.md has the map.
"""
