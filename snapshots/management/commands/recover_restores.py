"""Finish or undo restores that a crash interrupted, before Berth serves anything.

`make run` runs this before the web server and the task worker start. For
every journal under $BERTH_DATA_DIR/restore-journal/ it decides by the
journal's COMMIT record and by the inodes found on disk (snapshots/recovery.py):
before the commit every volume is put back, at or after it the restore is
finished; then the workload is redeployed and the job marked. Running it again
changes nothing; killing it half-way and running it again is safe.

It exits with an error — and `make run` stops — when a journal cannot be read
or describes a state no restore could leave: starting Berth on volumes in an
unknown state would be worse than not starting.
"""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from snapshots import exchange, recovery


class Command(BaseCommand):
    help = "Recover restores that were interrupted by a crash (run before serving)."

    def handle(self, *args, **options) -> None:
        self._probe()
        report = recovery.recover_all(say=self.stdout.write)
        for busy in report.busy:
            self.stdout.write(self.style.WARNING(f"Left alone, its workload is locked: {busy}"))
        if report.problems:
            raise CommandError(
                "These restore journals cannot be recovered automatically; do not start Berth "
                "until someone has looked at them (docs/restore-protocol.md, \"By hand\"):\n  "
                + "\n  ".join(report.problems)
            )
        if report.recovered:
            self.stdout.write(self.style.SUCCESS(
                f"Recovered {len(report.recovered)} interrupted restore(s): "
                + ", ".join(report.recovered)
            ))
        else:
            self.stdout.write("No interrupted restores.")

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
