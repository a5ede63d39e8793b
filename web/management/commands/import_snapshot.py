"""manage.py import_snapshot <workload> <file>: validate an archive in full and keep it."""

from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import filesizeformat

from engine import imports
from snapshots.errors import ArchiveError
from web.management.lookup import find_workload


class Command(BaseCommand):
    help = (
        "Import a snapshot archive (.tar.zst) as a snapshot of a workload. It is extracted in "
        "full into a scratch directory first; a hostile or corrupt archive is refused."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("workload", help="id, or project/stage/workload slugs")
        parser.add_argument("file", help="the archive, e.g. one downloaded from another Berth")

    def handle(self, *args, workload: str, file: str, **options) -> None:
        target = find_workload(workload)
        try:
            with open(file, "rb") as source:
                snapshot = imports.import_file(workload=target, source=source)
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror or exc}") from None
        except ArchiveError as exc:
            raise CommandError(f"Refused {file}: {exc}") from None
        self.stdout.write(self.style.SUCCESS(
            f"Imported {file} as snapshot #{snapshot.pk} of {target} "
            f"({filesizeformat(snapshot.size)}, {snapshot.file_count} files), "
            f"sha256 {snapshot.sha256}"
        ))
