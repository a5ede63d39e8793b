"""manage.py backup_catalogue <target>: what a backup target holds, read from the sidecars."""

from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import filesizeformat

from engine import disaster
from lib import offsite
from web.management.lookup import find_target, read_identity, read_secret_file


class Command(BaseCommand):
    help = (
        "List the snapshot copies on a backup target, grouped by workload, from their "
        "sidecars (no archive is downloaded). An encrypted target needs its age identity: "
        "--identity-file, or the one stored with the target."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("target", help="the backup target's name or id")
        parser.add_argument("--identity-file", metavar="PATH",
                            help="an age identity file ('-' reads standard input)")
        parser.add_argument("--passphrase-file", metavar="PATH",
                            help="a file holding the target's passphrase ('-' reads standard "
                                 "input), instead of an identity")

    def handle(self, *args, target: str, identity_file: str | None,
               passphrase_file: str | None, **options) -> None:
        chosen = find_target(target)
        try:
            identities = disaster.identities_for(chosen, read_identity(identity_file),
                                                 read_secret_file(passphrase_file))
            entries = disaster.catalogue(chosen, identities)
        except disaster.RecoveryError as exc:
            raise CommandError(f"{exc.code}: {exc}") from None
        except offsite.OffsiteError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        if not entries:
            self.stdout.write(f"Target {chosen.name} holds no copies.")
            return
        current = None
        for entry in entries:
            if entry.described is None:
                self.stdout.write(self.style.WARNING(f"  {entry.key}: {entry.problem}"))
                continue
            if entry.workload_path != current:
                current = entry.workload_path
                self.stdout.write(self.style.MIGRATE_HEADING(current))
            snapshot = entry.described.snapshot
            self.stdout.write(
                f"  {entry.described.created:%Y-%m-%d %H:%M:%S %Z}  {snapshot['kind']:<10} "
                f"{filesizeformat(snapshot['size']):>10}  {entry.key}")
