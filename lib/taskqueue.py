"""Putting Berth's long work on the django-q2 queue, by the task's dotted path.

The engine enqueues tasks by name, so nothing in it imports the task module
(engine/tasks.py) back: the tasks sit above the entry points they call. It is
a leaf module so that a locked body can queue work too (a snapshot's copies,
engine/locked/copy_policy.py); entry points use it as `engine.queue`.
"""

from __future__ import annotations

from django_q.tasks import async_task

# Berth's tasks (deploys, snapshots, restores) run with no task timeout.
# django-q2 ends a task at its timeout with SIGALRM (a SystemExit) and then
# terminates the worker: cut there, a deploy could stop between stopping the
# old containers and starting the new ones, a capture with the workload
# stopped, a restore between two steps of its protocol. None of them can
# wedge instead: every step that waits on something outside Berth has its own
# bound (Docker calls, git, the image build, the lock), and the rest is
# reading and writing data, which takes as long as the data needs. A second
# delivery of a task (the broker's retry) finds its row claimed and does nothing.
NO_TIMEOUT = -1

DEPLOY = "engine.tasks.run_deploy"
CAPTURE = "engine.tasks.run_capture"
RESTORE = "engine.tasks.run_restore"
COPY = "engine.tasks.run_copy"
RECOVER = "engine.tasks.run_recovery"
DRILL = "engine.tasks.run_drill"


def enqueue(task: str, row_id: int, *, name: str) -> None:
    """Queue `task(row_id)`; `name` (e.g. "deploy-12") shows in django-q2's admin."""
    async_task(task, row_id, task_name=name, timeout=NO_TIMEOUT)
