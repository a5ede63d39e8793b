"""The entry points' name for lib/taskqueue.py (enqueue a task by its dotted path).

The queue itself lives in the library layer, where a locked body can reach it
too; tests replace `engine.queue.enqueue` to hold the entry points' tasks back.
"""

from lib.taskqueue import CAPTURE, COPY, DEPLOY, DRILL, NO_TIMEOUT, RECOVER, RESTORE, enqueue

__all__ = ["CAPTURE", "COPY", "DEPLOY", "DRILL", "NO_TIMEOUT", "RECOVER", "RESTORE", "enqueue"]
