"""manage.py delete_snapshot <workload> <snapshot>: delete one snapshot and its archive."""

from django.core.management.base import BaseCommand, CommandError

from engine import captures
from snapshots.models import Snapshot
from web.management.lookup import find_workload


class Command(BaseCommand):
    help = ("Delete a snapshot of a workload (by id or project/stage/workload) and its archive; "
            "refused while it is being taken or restored.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("workload", help="id, or project/stage/workload slugs")
        parser.add_argument("snapshot", type=int, help="the snapshot's id")

    def handle(self, *args, workload: str, snapshot: int, **options) -> None:
        target = find_workload(workload)
        found = Snapshot.objects.filter(workload=target, pk=snapshot).first()
        if found is None:
            raise CommandError(f"Workload {target} has no snapshot #{snapshot}.")
        try:
            captures.delete_snapshot(snapshot=found)
        except captures.SnapshotBusy as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"Deleted snapshot #{snapshot} of {target}."))
