"""manage.py prune_images [--dry-run]: remove Berth's images that nothing needs any more.

What is kept and why: engine/images.py. The daily django-q2 schedule
`berth-image-gc` runs the same collection (engine.tasks.run_image_gc).
"""

from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _

from engine import images
from lib import runtime


class Command(BaseCommand):
    help = ("Remove the images Berth built or pulled that no container uses, no deploy in the "
            "history can roll back to and that are not among their workload's BERTH_IMAGE_KEEP "
            "most recent; with --dry-run, only say what would be removed.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true",
                            help="remove nothing; list what would be removed and kept")

    def handle(self, *args, dry_run: bool, **options) -> None:
        try:
            report = images.prune(dry_run=dry_run)
        except runtime.EngineError as exc:
            raise CommandError(_("The Docker engine could not be asked: %(error)s")
                               % {"error": exc}) from None
        for verdict in report.kept:
            self.stdout.write(_("Kept %(image)s: %(why)s.") % {"image": verdict.name,
                                                                "why": verdict.why})
        for verdict in report.skipped:
            self.stdout.write(_("Skipped %(image)s: in use, gone or its workload busy.")
                              % {"image": verdict.name})
        verb = _("Would remove %(image)s, %(size)s.") if dry_run else _(
            "Removed %(image)s, %(size)s.")
        for verdict in report.removed:
            self.stdout.write(verb % {"image": verdict.name,
                                      "size": filesizeformat(verdict.image.size)})
        total = {"count": len(report.removed), "size": filesizeformat(report.bytes_freed),
                 "bytes": report.bytes_freed}
        summary = (_("Dry run: %(count)d image(s) would be removed, %(size)s (%(bytes)d bytes) "
                     "freed; nothing was removed.") if dry_run else
                   _("%(count)d image(s) removed, %(size)s (%(bytes)d bytes) freed."))
        self.stdout.write(self.style.SUCCESS(summary % total))
