"""lib/redact: credentials in URLs of any scheme, and the forms of a secret a log may show."""

from __future__ import annotations

import base64
import time

import pytest

from lib.redact import MASK, for_log, log_forms, redact, redact_url_credentials


@pytest.mark.parametrize(("line", "masked"), [
    ("connecting to postgres://app:s3cr3t-db-pass@db:5432/app",
     f"connecting to postgres://{MASK}@db:5432/app"),
    ("redis://:r3dis-pass@cache:6379/0", f"redis://{MASK}@cache:6379/0"),
    ("amqp://guest:rabbit-pass@mq//", f"amqp://{MASK}@mq//"),
    ("mongodb+srv://u:m0ngo-pass@cluster0.example.net/db",
     f"mongodb+srv://{MASK}@cluster0.example.net/db"),
    ("fetching https://AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG@example.com/x",
     f"fetching https://{MASK}@example.com/x"),
    ("fetching https://user:p@ss-with-at@example.com/repo.git",
     f"fetching https://{MASK}@example.com/repo.git"),
    ('{"db": "postgres://a:b@h/d", "mail": "x@y.com"}', f'{{"db": "postgres://{MASK}@h/d", '
                                                       '"mail": "x@y.com"}'),
    ("ssh://git:pw/with@slash@host/z and ssh://git@host/keep",
     f"ssh://git:{MASK}@host/z and ssh://git@host/keep"),
])
def test_it_masks_the_userinfo_of_urls_of_any_scheme(line, masked):
    assert redact_url_credentials(line) == masked


@pytest.mark.parametrize("line", [
    "https://host/path/with@at.git", "mail bob@example.com", "ssh://git@github.com/org/app",
    "see http://example.com/a@b",
])
def test_it_leaves_urls_without_a_credential_alone(line):
    assert redact_url_credentials(line) == line


def test_a_line_of_many_schemes_is_masked_in_bounded_time():
    started = time.monotonic()
    redact_url_credentials("a://" * 20_000)
    assert time.monotonic() - started < 5  # not a timing claim: quadratic took minutes


def test_the_forms_of_a_secret_are_masked():
    secret = "p@ss word/with+signs"  # noqa: S105
    forms = log_forms([secret, "short"])
    encoded = base64.b64encode(secret.encode()).decode()
    for shown in (secret, encoded, base64.urlsafe_b64encode(secret.encode()).decode(),
                  "p%40ss%20word%2Fwith%2Bsigns", "p%40ss+word%2Fwith%2Bsigns"):
        assert for_log(f"<{shown}>", forms) == f"<{MASK}>", shown
    # Encoded with what follows it, the characters that are the secret's alone.
    longer = base64.b64encode(secret.encode() + b"and more").decode()
    assert longer.startswith(encoded[:26]) and encoded[:26] in forms
    assert "c2hvcnQ=" not in forms  # a short secret's encodings would match ordinary text


def test_each_long_line_of_a_multi_line_secret_is_a_form():
    key = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nab\n-----END KEY-----"
    forms = log_forms([key])
    assert {"-----BEGIN KEY-----", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "-----END KEY-----"} <= (
        set(forms))
    assert "ab" not in forms
    assert redact("x MIIEvQIBADANBgkqhkiG9w0BAQEFAASC y", forms) == f"x {MASK} y"
