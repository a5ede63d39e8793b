"""manage.py sample_stats: the long-running stats sampler (engine/sampler.py).

SIGTERM or SIGINT stops it cleanly: a tick in progress finishes and writes its
samples, then the command returns (exit status 0).
"""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand

from engine import sampler


class Command(BaseCommand):
    help = (
        "Sample the CPU and memory of every live container every BERTH_STATS_INTERVAL "
        "seconds, prune old samples and reconcile the container index; runs until SIGTERM."
    )

    def handle(self, *args, **options) -> None:
        stats_sampler = sampler.Sampler()
        stop = threading.Event()

        def request_stop(signum, frame) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        self.stdout.write(
            f"Sampling container stats every {stats_sampler.interval} s, keeping "
            f"{stats_sampler.retention} s of them; SIGTERM stops."
        )
        self.stdout.flush()
        stats_sampler.run(stop)
        self.stdout.write("Stats sampler stopped.")
