"""manage.py drill <copy id>: prove a copy restores, now, in this process."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import filesizeformat

from backups.models import RestoreDrill, SnapshotCopy
from engine import drills


class Command(BaseCommand):
    help = (
        "Read a verified copy back as a recovery would (download, decrypt with the target's "
        "stored identity, check against its sidecar, extract in full into scratch) and say "
        "whether it restores. Nothing is restored."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("copy", type=int, help="the copy's id")

    def handle(self, *args, copy: int, **options) -> None:
        chosen = SnapshotCopy.objects.filter(pk=copy).first()
        if chosen is None:
            raise CommandError(f"No snapshot copy #{copy}.")
        try:
            row = drills.run_drill(drills.request_drill(copy=chosen, queued=False))
        except drills.DrillRefused as exc:
            raise CommandError(str(exc.message)) from None
        if row.state != RestoreDrill.State.PASSED:
            raise CommandError(f"{row.failure_code}: {row.failure_text} (drill #{row.pk})")
        self.stdout.write(self.style.SUCCESS(
            f"Copy #{chosen.pk} restores: {row.files} files, "
            f"{filesizeformat(row.bytes_total)} in {row.duration} (drill #{row.pk})."))
