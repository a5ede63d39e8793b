"""manage.py set_backup_passphrase <target>: let a passphrase open a target's copies."""

from __future__ import annotations

import getpass

from django.core.management.base import BaseCommand, CommandError

from engine import backups
from lib import agecrypt, offsite
from web.management.lookup import find_target, read_secret_file


class Command(BaseCommand):
    help = (
        "Seal an identity of the target's own with a passphrase, store it on the target as "
        "berth-identity.age, and encrypt every copy from now on to it too: the passphrase "
        "alone then recovers them. Berth keeps neither. Asks for the passphrase unless "
        "--passphrase-file is given."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("target", help="the backup target's name or id")
        parser.add_argument("--passphrase-file", metavar="PATH",
                            help="a file holding the new passphrase ('-' reads standard input)")
        parser.add_argument("--current-file", metavar="PATH",
                            help="a file holding the passphrase that seals the identity now, "
                                 "to change it")

    def handle(self, *args, target: str, passphrase_file: str | None,
               current_file: str | None, **options) -> None:
        chosen = find_target(target)
        passphrase = read_secret_file(passphrase_file)
        if not passphrase:
            passphrase = getpass.getpass("New passphrase: ")
            if getpass.getpass("Again: ") != passphrase:
                raise CommandError("The two passphrases differ; nothing was changed.")
        try:
            backups.set_passphrase(target=chosen, passphrase=passphrase,
                                   current=read_secret_file(current_file))
        except agecrypt.AgeError as exc:
            raise CommandError(str(exc)) from None
        except offsite.OffsiteError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        self.stdout.write(self.style.SUCCESS(
            f"Copies to {chosen.name} are encrypted to {chosen.passphrase_recipient} from now "
            "on; the passphrase opens them. Keep it somewhere other than this host."))
