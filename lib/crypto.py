"""Encryption at rest for secrets (registry passwords, secret env values).

The database only ever holds Fernet tokens: a dump of any table never shows
a secret, and the key lives outside the database (BERTH_ENCRYPTION_KEY or a
0600 file in the data dir).
"""

from functools import cache

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


class SecretUnreadable(Exception):
    """A stored secret cannot be decrypted with the configured key."""


@cache
def _fernet(key: str) -> Fernet:
    return Fernet(key)


def encrypt(plaintext: str) -> str:
    return _fernet(settings.BERTH_ENCRYPTION_KEY).encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet(settings.BERTH_ENCRYPTION_KEY).decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable(
            "A stored secret cannot be decrypted: BERTH_ENCRYPTION_KEY changed since it was saved."
        ) from None
