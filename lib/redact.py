"""Removing known secret values from text before it reaches a log line."""

import re
from collections.abc import Iterable

MASK = "[redacted]"

# The userinfo of an http(s)/git/ftp URL is a credential (`user:pass@`, or a
# bare `token@`); of an ssh URL only the password is (`git@` is the login).
_URL_USERINFO = re.compile(r"(?i)\b((?:https?|git|ftp)://)[^/\s@]+@")
_SSH_PASSWORD = re.compile(r"(?i)\b(ssh://[^/\s@:]+):[^/\s@]+@")


def redact(text: str, secrets: Iterable[str]) -> str:
    # Longest first, so a secret that contains another is masked whole.
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def redact_url_credentials(text: str) -> str:
    """Mask credentials written into URLs, known to Berth or not."""
    text = _URL_USERINFO.sub(rf"\1{MASK}@", text)
    return _SSH_PASSWORD.sub(rf"\1:{MASK}@", text)


def for_log(text: str, secrets: Iterable[str]) -> str:
    """Both at once: URL credentials and the known secrets, for a log line."""
    return redact(redact_url_credentials(text), secrets)
