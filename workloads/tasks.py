"""The old path of the deploy task, kept for one release.

Tasks queued before the upgrade name `workloads.tasks.run_deploy` in the
broker; new ones name `engine.tasks.run_deploy`. The one import from a domain
app up into the engine, allowed by tests/test_architecture.py until it goes.
"""

from engine.tasks import run_deploy

__all__ = ["run_deploy"]
