"""Strict readers for Berth's environment variables.

Every reader fails loudly (ImproperlyConfigured) on a value it cannot parse:
a typo in a deployment's environment must stop Berth at start-up, not be
silently replaced by a default.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import tempfile
import warnings
from pathlib import Path
from urllib.parse import unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

TRUE_VALUES = {"1", "true", "yes", "on"}
FALSE_VALUES = {"0", "false", "no", "off", ""}


def envstr(name: str, default: str) -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in TRUE_VALUES:
        return True
    if value in FALSE_VALUES:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no).")


def envint(
    name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}.")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={value} must be at most {maximum}.")
    return value


def envseconds(name: str, default: float, *, maximum: float) -> float:
    """A non-negative number of seconds, with decimals allowed ("2", "0.5")."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number of seconds.") from None
    if not 0 <= value <= maximum:  # also refuses nan and inf
        raise ImproperlyConfigured(f"{name}={value} must be between 0 and {maximum} seconds.")
    return value


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def envduration(name: str, default: int, *, minimum: int | None = None) -> int:
    """A duration in seconds: plain seconds ("3600") or a number and a unit ("90m", "7d").

    Units: s, m, h, d, w. One unit only, no fractions: "1d12h" or "1.5d" fail
    loudly rather than being read as something else.
    """
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    text = raw.strip().lower()
    number, unit = (text[:-1], text[-1]) if text[-1:] in DURATION_UNITS else (text, "s")
    if not number.isdigit():
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not a duration (use seconds, or e.g. 90m, 36h, 7d, 2w)."
        )
    value = int(number) * DURATION_UNITS[unit]
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be at least {minimum} seconds.")
    return value


class BerthDeprecationWarning(FutureWarning):
    """A setting an operator should rename (shown by default, unlike DeprecationWarning)."""


def task_lost_after(default: int = 4200) -> int:
    """BERTH_TASK_LOST_AFTER in seconds, or the deprecated BERTH_TASK_TIMEOUT plus 600.

    BERTH_TASK_TIMEOUT named what Berth's tasks no longer have (they run
    without a task timeout); what it still set is when a task still in the
    broker counts as lost, which was always its value plus 600 seconds.
    """
    if "BERTH_TASK_LOST_AFTER" in os.environ or "BERTH_TASK_TIMEOUT" not in os.environ:
        return envduration("BERTH_TASK_LOST_AFTER", default, minimum=660)
    value = envint("BERTH_TASK_TIMEOUT", default - 600, minimum=60) + 600
    warnings.warn(
        f"BERTH_TASK_TIMEOUT is deprecated; set BERTH_TASK_LOST_AFTER={value} (its value plus "
        "600 seconds) instead.",
        BerthDeprecationWarning, stacklevel=2,
    )
    return value


def deploy_settle_seconds(default: float = 3.0) -> float:
    """BERTH_DEPLOY_SETTLE_SECONDS, or the deprecated BERTH_START_GRACE_MS in seconds."""
    if "BERTH_DEPLOY_SETTLE_SECONDS" in os.environ or "BERTH_START_GRACE_MS" not in os.environ:
        return envseconds("BERTH_DEPLOY_SETTLE_SECONDS", default, maximum=600)
    value = envint("BERTH_START_GRACE_MS", 1000, minimum=0, maximum=600_000) / 1000
    warnings.warn(
        f"BERTH_START_GRACE_MS is deprecated; set BERTH_DEPLOY_SETTLE_SECONDS={value:g} "
        "instead.",
        BerthDeprecationWarning, stacklevel=2,
    )
    return value


def envlist(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def envaddresses(name: str) -> list[str]:
    """Comma-separated IP addresses, each in its canonical spelling; none when unset."""
    found = []
    for item in envlist(name, []):
        try:
            found.append(str(ipaddress.ip_address(item)))
        except ValueError:
            raise ImproperlyConfigured(
                f"{name} takes IP addresses, comma-separated; {item!r} is not one.") from None
    return found


def envdirs(name: str) -> list[str]:
    """Comma-separated absolute directories (never `/` itself); none when unset."""
    found = envlist(name, [])
    for item in found:
        if not os.path.isabs(item) or not os.path.normpath(item).strip("/"):
            raise ImproperlyConfigured(
                f"{name} takes absolute directories other than /, comma-separated; "
                f"{item!r} is not one."
            )
    return ["/" + os.path.normpath(item).lstrip("/") for item in found]


def listen_address(name: str, default: str) -> tuple[str, int]:
    raw = os.environ.get(name, default)
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ImproperlyConfigured(f"{name}={raw!r} must look like HOST:PORT, e.g. 127.0.0.1:8000.")
    return host.strip("[]"), int(port)


def database_from_url(url: str, *, sqlite_default: Path) -> dict:
    """Return a Django DATABASES entry for a DATABASE_URL.

    Only SQLite (the embedded default) and PostgreSQL (through psycopg 3) are
    supported; anything else is a configuration error.
    """
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(sqlite_default),
            # A file (not :memory:) so that the lock tests' child processes
            # see the same test database.
            "TEST": {"NAME": str(sqlite_default.with_name("test-" + sqlite_default.name))},
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
        }
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        # sqlite:///abs/path.db (three slashes, then the absolute path)
        path = "/" + unquote(parsed.path).lstrip("/")
        if path == "/":
            raise ImproperlyConfigured("DATABASE_URL=sqlite:/// needs an absolute file path.")
        return database_from_url("", sqlite_default=Path(path))
    if parsed.scheme in {"postgres", "postgresql"}:
        name = unquote(parsed.path.lstrip("/"))
        if not name:
            raise ImproperlyConfigured("DATABASE_URL needs a database name, e.g. postgres://u@h/berth.")
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
            # A session whose client went away (a host or network failure, not a
            # process exit, which closes the socket) ends within about a minute,
            # and its advisory locks with it.
            "OPTIONS": {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                        "keepalives_count": 3},
        }
    raise ImproperlyConfigured(
        f"DATABASE_URL scheme {parsed.scheme!r} is not supported (use postgres:// or sqlite:///)."
    )


def secret_key(data_dir: Path) -> str:
    """BERTH_SECRET_KEY, or a key generated once and kept in the data dir (0600)."""
    configured = os.environ.get("BERTH_SECRET_KEY")
    if configured is not None:
        if len(configured) < 32:
            raise ImproperlyConfigured("BERTH_SECRET_KEY must be at least 32 characters long.")
        return configured
    return _key_file(data_dir / "secret_key", lambda: secrets.token_urlsafe(50))


def _key_file(path: Path, make) -> str:
    """The key in `path`, generated once (mode 0600) if the file does not exist.

    The key is written to a temporary file and linked into place, so a second
    process starting at the same moment never reads a half-written key, and a
    crash never leaves an empty one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as fh:
                os.fchmod(fh.fileno(), 0o600)
                fh.write(make())
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process won the race
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    value = path.read_text().strip()
    if not value:
        raise ImproperlyConfigured(f"{path} is empty; remove it to make a new key.")
    return value


def private_directory(path: Path) -> Path:
    """Create `path` if needed and make it readable by its owner only.

    The data dir holds the database (sessions, API tokens), the keys and the
    volumes: no other local user has any business in it.
    """
    path.mkdir(parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        try:
            path.chmod(0o700)
        except PermissionError:
            raise ImproperlyConfigured(
                f"BERTH_DATA_DIR {path} is readable by other users and Berth cannot change that."
            ) from None
    return path


def encryption_key(data_dir: Path) -> str:
    """The Fernet key that encrypts stored secrets (registry passwords, secret env values)."""
    from cryptography.fernet import Fernet

    configured = os.environ.get("BERTH_ENCRYPTION_KEY")
    value = configured or _key_file(
        data_dir / "encryption_key", lambda: Fernet.generate_key().decode()
    )
    try:
        Fernet(value)
    except ValueError:
        raise ImproperlyConfigured(
            "BERTH_ENCRYPTION_KEY is not a valid Fernet key (32 url-safe base64-encoded bytes)."
        ) from None
    return value


def instance_id(data_dir: Path) -> str:
    """This installation's id, generated once; labels its containers.

    Two Berth installations (or a test run beside a real one) can share one
    Docker engine: containers are found by workload id *and* instance id.
    """
    return _key_file(data_dir / "instance_id", lambda: secrets.token_hex(6))
