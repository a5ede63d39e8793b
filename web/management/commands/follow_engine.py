"""manage.py follow_engine: the long-running follower of the engine's events (engine/live.py).

SIGTERM or SIGINT stops it at the end of the current window of events (about a
second); the command then returns (exit status 0).
"""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand

from engine import live


class Command(BaseCommand):
    help = (
        "Follow the Docker engine's container events and keep the containers' live state "
        "(running, exited, restarting, health) up to date; runs until SIGTERM."
    )

    def handle(self, *args, **options) -> None:
        follower = live.Follower()
        stop = threading.Event()

        def request_stop(signum, frame) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        self.stdout.write("Following the Docker engine's container events; SIGTERM stops.")
        self.stdout.flush()
        follower.run(stop)
        self.stdout.write("Event follower stopped.")
