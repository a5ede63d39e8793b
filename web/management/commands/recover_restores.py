"""manage.py recover_restores: the old name of `manage.py recover`, kept for one release."""

from web.management.commands.recover import Command as Recover


class Command(Recover):
    help = "The old name of `manage.py recover` (it recovers deploys and captures too now)."
