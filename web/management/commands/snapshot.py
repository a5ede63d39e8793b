"""manage.py snapshot <workload>: capture its volumes now, in this process, and wait."""

from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import filesizeformat

from engine import captures
from snapshots import storage
from web.management.lookup import find_workload


class Command(BaseCommand):
    help = "Take a snapshot of a workload's volumes (by id or project/stage/workload) and wait."

    def add_arguments(self, parser) -> None:
        parser.add_argument("workload", help="id, or project/stage/workload slugs")

    def handle(self, *args, workload: str, **options) -> None:
        target = find_workload(workload)
        mode = target.get_snapshot_consistency_display()
        self.stdout.write(f"Taking a snapshot of {target} ({mode}) …")
        snapshot = captures.capture_snapshot(workload=target)
        if not snapshot.is_ready:
            raise CommandError(f"Snapshot #{snapshot.pk} failed: {snapshot.failure_text}")
        path = storage.archive_path(target.pk, snapshot.archive)
        self.stdout.write(self.style.SUCCESS(
            f"Snapshot #{snapshot.pk}: {path} ({filesizeformat(snapshot.size)}, "
            f"{snapshot.file_count} files, {snapshot.volume_count} volumes), "
            f"sha256 {snapshot.sha256}"
        ))
        if snapshot.skipped_count:
            count = snapshot.skipped_count
            self.stdout.write(self.style.WARNING(
                f"{count} {'entry' if count == 1 else 'entries'} skipped (symlinks, sockets, "
                "FIFOs, devices or names an archive cannot hold):"
            ))
            for entry in snapshot.skipped[:50]:
                self.stdout.write(f"  volume {entry['volume']}: {entry['path']} ({entry['type']})")
        if snapshot.much_smaller:
            self.stdout.write(self.style.WARNING("It is much smaller than the last one."))
