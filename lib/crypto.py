"""Encryption at rest for secrets (registry passwords, secret env values), and their keyed
fingerprints.

The database only ever holds Fernet tokens: a dump of any table never shows
a secret, and the key lives outside the database (BERTH_ENCRYPTION_KEY or a
0600 file in the data dir).
"""

import hashlib
import hmac
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


# The fingerprint key's purpose label: a key derived for one purpose is useless for another.
_FINGERPRINT_PURPOSE = b"berth: secret fingerprints v1"


def fingerprint(*parts: str) -> str:
    """A keyed fingerprint (HMAC-SHA256, hex) of `parts`, for telling whether a secret changed.

    The key is derived from BERTH_ENCRYPTION_KEY, so like it it lives outside
    the database: a dump of the database cannot be used to guess a secret by
    its fingerprint. Parts are joined with NUL, which no name or value holds.
    """
    key = hmac.new(settings.BERTH_ENCRYPTION_KEY.encode(), _FINGERPRINT_PURPOSE,
                   hashlib.sha256).digest()
    return hmac.new(key, "\x00".join(parts).encode(), hashlib.sha256).hexdigest()
