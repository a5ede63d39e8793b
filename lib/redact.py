"""Removing known secret values from text before it reaches a log line."""

import base64
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "[redacted]"

# The userinfo of a URL of any scheme (postgres://, redis://, amqp://,
# mongodb+srv://, https://) is a credential: `user:pass@`, `:pass@`, or a bare
# `token@`. A password may hold `/` and `@`, so it runs to the last `@` before
# the host (a URL ends at whitespace or a quote). Of an ssh URL only the
# password is (`git@` is the login). Bounded, so that a line of many `x://`
# cannot make a match cost the square of its length.
USERINFO_CHARS = 256
_SCHEME = r"\b((?!(?:ssh|sftp|git\+ssh|ssh\+git)://)[a-z][a-z0-9+.\-]{0,31}://)"
_URL_USERINFO = re.compile(
    rf"(?i){_SCHEME}(?:[^\s/@:\"'<>]{{0,{USERINFO_CHARS}}}:[^\s\"'<>]{{0,{USERINFO_CHARS}}}"
    rf"|[^\s/@:\"'<>]{{1,{USERINFO_CHARS}}})@")
_SSH_PASSWORD = re.compile(
    rf"(?i)\b((?:ssh|sftp|git\+ssh|ssh\+git)://[^/\s@:]{{1,{USERINFO_CHARS}}})"
    rf":[^\s\"'<>]{{1,{USERINFO_CHARS}}}@")
# A secret this short is masked as printed only: its encodings would match
# ordinary text.
MIN_ENCODED = 8


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


def log_forms(secrets: Iterable[str]) -> list[str]:
    """The secrets as an application may print them, for for_log().

    Each secret; each line (of 8 characters or more) of a multi-line one (a
    PEM key is printed line by line); and, for those of 8 characters or more,
    their standard and URL-safe base64 (also as the start of a longer
    encoding), URL-quoted and JSON-string forms. Not others: upper-cased,
    hex, or escaped character by character (docs/logs.md).
    """
    plain: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        plain.add(secret)
        plain.update(line.strip() for line in secret.splitlines()
                     if len(line.strip()) >= MIN_ENCODED)
    forms = set(plain)
    for secret in plain:
        if len(secret) >= MIN_ENCODED:
            forms.update(_encoded(secret))
    return sorted(forms, key=len, reverse=True)


def reach(secrets: Iterable[str]) -> int:
    """How many characters one masked match can span: a text cut short keeps
    its last `reach` characters back, where the start of a secret cut in two may be."""
    return max([2 * USERINFO_CHARS + 40, *(len(s) for s in secrets)])


def _encoded(secret: str) -> set[str]:
    raw = secret.encode()
    # The characters of an encoding that depend on the secret's bytes alone:
    # the start of the encoding of the secret and whatever follows it.
    whole = len(raw) // 3 * 4 + len(raw) % 3
    found = {quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1],
             json.dumps(secret, ensure_ascii=False)[1:-1]}
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        encoded = encode(raw).decode()
        found |= {encoded, encoded[:whole]}
    return {form for form in found if form != secret}
