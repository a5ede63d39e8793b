"""Which data dir a management command uses, and whether it holds a database yet.

manage.py asks before Django is set up: importing the settings creates the data
dir and its keys, so a command that is refused must be refused before that. A
command started without BERTH_DATA_DIR says which data dir it uses (the
default, `var/` in the checkout), and every command but those that create the
database or need none refuses a data dir whose SQLite database does not exist
yet — instead of creating an empty directory and an empty database and failing
with Django's "no such table". `migrate` (which `make run` runs first) creates it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from django.core.exceptions import ImproperlyConfigured

from berth.env import database_from_url

VARIABLE = "BERTH_DATA_DIR"
DATABASE_NAME = "berth.sqlite3"

# Commands that create the database, or never open it.
WITHOUT_DATABASE = frozenset({
    "migrate", "help", "version", "check", "compilemessages", "makemessages",
    "makemigrations", "squashmigrations", "collectstatic", "findstatic", "diffsettings",
    "startapp", "startproject",
})


def configured(base_dir: Path, environ: Mapping[str, str] = os.environ) -> Path:
    """The data dir: BERTH_DATA_DIR, or `var/` beside the code; not created here."""
    raw = environ.get(VARIABLE, "").strip()
    return Path(raw or base_dir / "var").resolve()


def missing_database(data_dir: Path, environ: Mapping[str, str] = os.environ) -> Path | None:
    """The SQLite file the settings would use, if it does not exist (or is empty); else None.

    None as well for PostgreSQL (its database is created outside Berth) and for a
    DATABASE_URL the settings will refuse with their own message.
    """
    try:
        database = database_from_url(environ.get("DATABASE_URL", "").strip(),
                                     sqlite_default=data_dir / DATABASE_NAME)
    except ImproperlyConfigured:
        return None
    if database["ENGINE"] != "django.db.backends.sqlite3":
        return None
    path = Path(database["NAME"])
    if path.is_file() and path.stat().st_size > 0:
        return None
    return path


def preflight(argv: list[str], base_dir: Path, stderr: TextIO,
              environ: Mapping[str, str] = os.environ) -> int | None:
    """Say which data dir the command uses; an exit status if it must not run, else None."""
    data_dir = configured(base_dir, environ)
    if not environ.get(VARIABLE, "").strip():
        stderr.write(f"berth: data dir {data_dir} (the default: {VARIABLE} is not set)\n")
    command = argv[1] if len(argv) > 1 else "help"
    if command.startswith("-") or command in WITHOUT_DATABASE:
        return None
    database = missing_database(data_dir, environ)
    if database is None:
        return None
    stderr.write(
        f"berth: no database at {database}, so {data_dir} is not a Berth data dir yet.\n"
        f"berth: set {VARIABLE} to the data dir you mean, or create the database with "
        f"`manage.py migrate` (`make run` does).\n"
    )
    return 2
