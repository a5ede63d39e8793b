"""The old paths of the capture and restore tasks, kept for one release.

Tasks queued before the upgrade name `snapshots.tasks.run_capture` and
`snapshots.tasks.run_restore` in the broker; new ones name `engine.tasks.*`.
Allowed by tests/test_architecture.py until it goes.
"""

from engine.tasks import run_capture, run_restore

__all__ = ["run_capture", "run_restore"]
