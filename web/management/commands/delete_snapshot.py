"""manage.py delete_snapshot <workload> <snapshot> [--with-copies]: delete one snapshot and its
archive; its copies on backup targets stay unless --with-copies."""

from django.core.management.base import BaseCommand, CommandError

from engine import captures, copy_upkeep
from snapshots.models import Snapshot
from web.management.lookup import find_workload


class Command(BaseCommand):
    help = ("Delete a snapshot of a workload (by id or project/stage/workload) and its archive; "
            "refused while it is being taken or restored. Its copies on backup targets stay "
            "unless --with-copies.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("workload", help="id, or project/stage/workload slugs")
        parser.add_argument("snapshot", type=int, help="the snapshot's id")
        parser.add_argument("--with-copies", action="store_true",
                            help="also remove its verified copies from their backup targets")

    def handle(self, *args, workload: str, snapshot: int, with_copies: bool,
               **options) -> None:
        target = find_workload(workload)
        found = Snapshot.objects.filter(workload=target, pk=snapshot).first()
        if found is None:
            raise CommandError(f"Workload {target} has no snapshot #{snapshot}.")
        try:
            captures.delete_snapshot(snapshot=found, with_copies=with_copies)
        except captures.SnapshotBusy as exc:
            raise CommandError(str(exc)) from None
        except copy_upkeep.CopiesNotRemoved as exc:
            raise CommandError(f"The copy on target {exc.row.target.name} could not be removed "
                               f"({exc.error.message}); the snapshot is kept.") from None
        gone = " and its copies on backup targets" if with_copies else ""
        self.stdout.write(self.style.SUCCESS(f"Deleted snapshot #{snapshot} of {target}{gone}."))
