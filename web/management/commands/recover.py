"""manage.py recover [--every SECONDS]: finish or undo what killed processes left.

Restores, deploys' container swaps and captures that stopped the workload,
the jobs of processes that died, and their temporary files (engine/sweep.py).
`make run` runs it once before serving (it exits with an error on a journal
it cannot recover, so Berth does not start on volumes in an unknown state),
then with `--every 60` in its own process beside the server, reporting such
journals and going on. docs/restore-protocol.md ("Recovery") and
docs/deploys.md ("After a crash") have the why.
"""

from __future__ import annotations

import logging
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections

from engine import sweep
from lib import exchange

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = ("Finish or undo restores, deploys and snapshots a crash interrupted, and remove "
            "what they left (run before serving); with --every, keep doing so until SIGTERM.")

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--every", type=int, metavar="SECONDS", default=None,
            help="keep running and sweep again every SECONDS (make run uses 60); SIGTERM stops",
        )

    def handle(self, *args, every: int | None = None, **options) -> None:
        if every is not None and every < 1:
            raise CommandError("--every needs at least 1 second.")
        self._probe()
        if every is None:
            self._once()
        else:
            self._keep_sweeping(every)

    def _once(self) -> None:
        report = sweep.recover_all(say=self.stdout.write)
        for busy in report.busy:
            self.stdout.write(self.style.WARNING(f"Left alone, its workload is locked: {busy}"))
        for waiting in report.waiting:
            self.stdout.write(self.style.WARNING(f"Left for the next sweep: {waiting}"))
        if report.problems:
            raise CommandError(
                "These journals cannot be recovered automatically; do not start Berth until "
                "someone has looked at them (docs/restore-protocol.md, \"By hand\"):\n  "
                + "\n  ".join(report.problems)
            )
        if report.recovered:
            self.stdout.write(self.style.SUCCESS(
                f"Recovered {len(report.recovered)} interrupted operation(s): "
                + ", ".join(report.recovered)
            ))
        else:
            self.stdout.write("Nothing was interrupted.")

    def _keep_sweeping(self, every: int) -> None:
        stop = threading.Event()

        def request_stop(signum, frame) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        self.stdout.write(f"Sweeping for interrupted work every {every} s; SIGTERM stops.")
        self.stdout.flush()
        while not stop.is_set():
            close_old_connections()
            try:
                report = sweep.recover_all(say=self.stdout.write)
            except Exception:  # noqa: BLE001 - the next sweep tries again
                logger.exception("the sweep failed")
            else:
                for problem in report.problems:
                    self.stderr.write(f"A journal needs a person: {problem}")
                if report.recovered:
                    self.stdout.write(self.style.SUCCESS(
                        "Recovered interrupted work: " + ", ".join(report.recovered)
                    ))
            self.stdout.flush()
            stop.wait(every)
        self.stdout.write("Sweep stopped.")

    def _probe(self) -> None:
        """Say once, at start-up, whether volumes can be swapped in one step on this host."""
        where = str(settings.DATA_DIR)
        if exchange.supported(where):
            self.stdout.write(f"Atomic directory exchange (renameat2) works on {where}.")
        else:
            self.stdout.write(self.style.WARNING(
                f"Atomic directory exchange (renameat2) is not available on {where}; restores "
                "there swap volumes with two renames (still recovered after a crash)."
            ))
