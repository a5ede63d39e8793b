"""Removing known secret values from text before it reaches a log line."""

from collections.abc import Iterable

MASK = "[redacted]"


def redact(text: str, secrets: Iterable[str]) -> str:
    # Longest first, so a secret that contains another is masked whole.
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text
