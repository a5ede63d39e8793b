"""Create the first admin account (used by `make run`)."""

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Create a superuser in the operators group; print its generated password once."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument(
            "--if-none", action="store_true",
            help="Do nothing if any superuser exists already (what `make run` uses).",
        )

    def handle(self, *args, username: str, if_none: bool, **options) -> None:
        User = get_user_model()
        if if_none and User.objects.filter(is_superuser=True).exists():
            self.stdout.write("An admin exists already; not creating another.")
            return
        if User.objects.filter(username=username).exists():
            raise CommandError(f"A user named {username!r} exists already.")
        password = secrets.token_urlsafe(12)
        user = User.objects.create_superuser(username=username, password=password)
        user.groups.add(Group.objects.get(name="operators"))
        self.stdout.write(self.style.SUCCESS(f"Created admin {username!r}."))
        self.stdout.write(f"Password (shown once, change it after logging in): {password}")
