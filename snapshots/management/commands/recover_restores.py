"""Finish or undo restores that a crash interrupted, before Berth serves anything.

`make run` runs this before the web server and the task worker start. Until
the restore engine lands there are no journals to read; a journal found here
would come from a newer Berth, so the command refuses to guess and fails.
"""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Recover restores that were interrupted by a crash (run before serving)."

    def handle(self, *args, **options) -> None:
        directory = Path(settings.DATA_DIR) / "restore-journal"
        journals = sorted(directory.glob("*.json")) if directory.is_dir() else []
        if journals:
            raise CommandError(
                f"{len(journals)} restore journal(s) in {directory} cannot be read by this "
                "version of Berth; do not start it until they are recovered."
            )
        self.stdout.write("No interrupted restores.")
