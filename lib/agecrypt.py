"""age encryption of what leaves the host (pyrage): recipients, identities, streams.

Berth needs only public keys (X25519 recipients, `age1...`) to encrypt a
backup; the private identity (`AGE-SECRET-KEY-1...`) is needed only to read
one back. The output is the standard age format: Debian's `age -d -i` reads
it. Decryption runs in process in large pieces (lib/agestream.py), not
through pyrage's 8 KiB callbacks. docs/backups.md says why and how.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO

import pyrage
from django.utils.translation import gettext as _
from pyrage import x25519

from lib import agestream


class AgeError(ValueError):
    """A recipient or identity that is not a valid age key, or data that does not decrypt."""


def parse_recipients(text: str) -> list[str]:
    """The recipients in `text`, one per line (blank lines and `#` comments skipped).

    Raises AgeError naming the line of the first invalid one; an identity
    pasted by mistake is refused without repeating it.
    """
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if "AGE-SECRET-KEY-" in line.upper():  # also in a comment: it would be shown
            raise AgeError(_("Line %(line)d is a private identity, not a recipient: give "
                             "the public key (age1...) only.") % {"line": number})
        if not line or line.startswith("#"):
            continue
        try:
            key = str(x25519.Recipient.from_str(line))  # the canonical spelling
        except pyrage.RecipientError:
            raise AgeError(_("Line %(line)d is not an age X25519 recipient (age1...).")
                           % {"line": number}) from None
        if key not in found:
            found.append(key)
    return found


def parse_identities(text: str) -> list[x25519.Identity]:
    """The identities in `text` (an age identity file: keys, blank lines, `#` comments)."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise AgeError(_("Line %(line)d is not an age identity (AGE-SECRET-KEY-1...).")
                           % {"line": number}) from None
    if not found:
        raise AgeError(_("No age identity was given."))
    return found


def recipient_of(identity: x25519.Identity) -> str:
    return str(identity.to_public())


# --- a passphrase: an identity sealed with it (scrypt), its recipient among the others -----

# Marks the recipient whose identity a target holds sealed with a passphrase. Code reads it
# back: never translated, never changed.
SEALED_IDENTITY_MARK = \
    "# berth: passphrase recipient (its identity is berth-identity.age on the target)"
MIN_PASSPHRASE = 12


def wrap_identity(identity: x25519.Identity, passphrase: str, *, work_factor: int) -> bytes:
    """`identity` as an age identity file, encrypted with `passphrase` (age's scrypt
    recipient): `age -d -i` that file asks for the passphrase and opens the copies."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise AgeError(_("A passphrase needs at least %(count)d characters: anyone who can "
                         "read the target can try to guess it.") % {"count": MIN_PASSPHRASE})
    text = (f"# A Berth backup target's identity, sealed with its passphrase\n"
            f"# public key: {recipient_of(identity)}\n{identity}\n")
    return agestream.seal_with_passphrase(text.encode(), passphrase, work_factor=work_factor)


def unwrap_identity(sealed: bytes, passphrase: str) -> x25519.Identity:
    """The identity `wrap_identity` sealed; AgeError if the passphrase does not open it."""
    try:
        text = agestream.open_with_passphrase(sealed, passphrase).decode()
    except (agestream.Invalid, UnicodeDecodeError):
        raise AgeError(_("The passphrase does not open the identity the target holds.")) from None
    identities = parse_identities(text)
    if len(identities) != 1:
        raise AgeError(_("The identity the target holds is not one Berth sealed."))
    return identities[0]


def passphrase_recipient(text: str) -> str:
    """The recipient marked in a target's recipients as its passphrase's, or ""."""
    lines = [line.strip() for line in text.splitlines()]
    for line, following in zip(lines, lines[1:], strict=False):
        if line == SEALED_IDENTITY_MARK and following.startswith("age1"):
            return following
    return ""


def with_passphrase_recipient(text: str, recipient: str) -> str:
    """`text` (recipients) with its marked passphrase recipient, if any, replaced by `recipient`."""
    kept, skip = [], False
    for line in text.splitlines():
        if skip:
            skip = False
        elif line.strip() == SEALED_IDENTITY_MARK:
            skip = True
        else:
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    return "\n".join([*kept, SEALED_IDENTITY_MARK, recipient]) + "\n"


def encrypt_stream(source: BinaryIO, target: BinaryIO, recipients: Iterable[str]) -> None:
    """Encrypt everything `source` holds into `target`, to every recipient."""
    keys = [x25519.Recipient.from_str(r) for r in recipients]
    if not keys:
        raise AgeError(_("There are no recipients to encrypt to."))
    try:
        pyrage.encrypt_io(source, target, keys)
    except pyrage.EncryptError as exc:
        raise AgeError(_("The encryption failed (%(error)s).") % {"error": exc}) from None


def decrypt_stream(source: BinaryIO, target: BinaryIO,
                   identities: Iterable[x25519.Identity]) -> None:
    """Decrypt `source` into `target`; AgeError if no identity opens it or it was altered.

    In process, in 1 MiB pieces (lib/agestream.py); an error of `source` or
    `target` themselves is raised as it is.
    """
    try:
        agestream.decrypt(source.read, target.write, identities)
    except agestream.Invalid as exc:
        raise AgeError(_("The data does not decrypt with the identity given (%(error)s).")
                       % {"error": exc}) from None
