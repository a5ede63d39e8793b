"""Reading age files in process, many 64 KiB chunks per read (age v1, X25519 recipients).

pyrage's `decrypt_io` asks its input for 8 KiB at a time and hands every
8 KiB of output back to Python, holding the GIL throughout: a recovery that
must also read the network, hash and write ran at under half the speed of a
plain download (bench/README.md). This reads the same format
(https://age-encryption.org/v1) with `cryptography`'s primitives (OpenSSL's
ChaCha20-Poly1305, X25519, HKDF and HMAC) and decrypts every chunk a large
read brings in at once. Only what Berth writes is read: a binary (not
armored) file whose X25519 stanzas one of the identities opens, or a small
one sealed with a passphrase (a target's identity, `open_with_passphrase`,
which `seal_with_passphrase` writes). A wrong
identity, an altered, truncated or extended file, or anything else raises
`Invalid` (lib/agecrypt.py turns it into AgeError). Encrypting stays with
pyrage (but for the small passphrase files), and Debian's `age` reads what
Berth writes (tests prove both ways).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterable, Iterator

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from pyrage import x25519

INTRO = b"age-encryption.org/v1"
CHUNK = 64 << 10  # plaintext bytes per chunk
TAG = 16
SEALED_CHUNK = CHUNK + TAG
READ_SIZE = 1 << 20
MAX_HEADER = 64 << 10  # a stanza is about 100 bytes: room for hundreds of recipients
_ARGUMENT = re.compile(rb"[\x21-\x7e]+")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*")
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_WORK_FACTOR = re.compile(rb"[1-9][0-9]?")
# The most scrypt work a passphrase file may ask for (2**22 rounds, 4 GiB of memory), as
# Go's age caps it. rage (pyrage) caps it at 16 times what this machine does in a second
# right now, so a busy machine refused a file a calmer one had sealed.
MAX_WORK_FACTOR = 22


class Invalid(ValueError):
    """Not an age file these identities open, or one that was altered; says which."""


# --- keys ------------------------------------------------------------------------------------

def _bech32_polymod(values: Iterable[int]) -> int:
    check = 1
    for value in values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for i, generator in enumerate((0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)):
            if (top >> i) & 1:
                check ^= generator
    return check


def _bech32_bytes(text: str, hrp: str) -> bytes:
    """The bytes a Bech32 string (BIP 173, as age spells its keys) carries, checksum checked."""
    text = text.lower()
    prefix, _, data = text.rpartition("1")
    if prefix != hrp or len(data) < 6 or any(c not in _BECH32 for c in data):
        raise Invalid("not an age key")
    values = [_BECH32.index(c) for c in data]
    expanded = [ord(c) >> 5 for c in prefix] + [0] + [ord(c) & 31 for c in prefix]
    if _bech32_polymod(expanded + values) != 1:
        raise Invalid("not an age key (checksum)")
    acc, bits, out = 0, 0, bytearray()
    for value in values[:-6]:
        acc, bits = (acc << 5 | value) & 0xFFF, bits + 5
        if bits >= 8:
            bits -= 8
            out.append(acc >> bits & 0xFF)
    return bytes(out)


class _Key:
    """An X25519 identity in `cryptography`'s terms, with its public key's bytes."""

    def __init__(self, identity: x25519.Identity) -> None:
        secret = _bech32_bytes(str(identity), "age-secret-key-")
        public = _bech32_bytes(str(identity.to_public()), "age")
        self.private = X25519PrivateKey.from_private_bytes(secret)
        self.public = self.private.public_key().public_bytes_raw()
        if self.public != public:  # both spellings come from pyrage: they must agree
            raise Invalid("the identity does not match its public key")


def _hkdf(secret: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(secret)


def _unpadded_base64(text: bytes) -> bytes:
    """age's base64: standard alphabet, no padding, canonical (one spelling per value)."""
    if not _BASE64.fullmatch(text) or len(text) % 4 == 1:
        raise Invalid("the header holds invalid base64")
    try:
        value = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise Invalid("the header holds invalid base64") from None
    if base64.b64encode(value).rstrip(b"=") != text:
        raise Invalid("the header holds non-canonical base64")
    return value


# --- the header ------------------------------------------------------------------------------

class Header:
    """The stanzas (type, arguments, body), the MAC and the bytes it covers."""

    def __init__(self, raw: bytes) -> None:
        try:
            self._parse(raw.split(b"\n"))
        except IndexError:  # a stanza that runs into the end of the header
            raise Invalid("the header of the age file is malformed") from None

    def _parse(self, lines: list[bytes]) -> None:
        if lines[0] != INTRO or lines[-1] != b"":
            raise Invalid("not an age file (or an armored one)")
        self.stanzas: list[tuple[bytes, list[bytes], bytes]] = []
        at = 1
        while lines[at].startswith(b"-> "):
            words = lines[at][3:].split(b" ")
            if not all(_ARGUMENT.fullmatch(w) for w in words):
                raise Invalid("a stanza of the header is malformed")
            body = []
            while True:
                at += 1
                body.append(lines[at])
                if len(lines[at]) > 64:
                    raise Invalid("a stanza of the header is malformed")
                if len(lines[at]) < 64:
                    break
            self.stanzas.append((words[0], words[1:], _unpadded_base64(b"".join(body))))
            at += 1
        if not lines[at].startswith(b"--- ") or at != len(lines) - 2 or not self.stanzas:
            raise Invalid("the header of the age file is malformed")
        self.mac = _unpadded_base64(lines[at][4:])
        self.covered = b"\n".join(lines[:at]) + b"\n---"

    def file_key(self, keys: list[_Key]) -> bytes:
        """The file key one of `keys` unwraps from an X25519 stanza."""
        for kind, arguments, body in self.stanzas:
            if kind != b"X25519":
                continue
            if len(arguments) != 1 or len(body) != 32:
                raise Invalid("an X25519 stanza is malformed")
            share = _unpadded_base64(arguments[0])
            if len(share) != 32:
                raise Invalid("an X25519 stanza is malformed")
            for key in keys:
                try:
                    shared = key.private.exchange(X25519PublicKey.from_public_bytes(share))
                except ValueError:  # a low-order point: an all-zero shared secret
                    raise Invalid("an X25519 stanza is malformed") from None
                wrap = _hkdf(shared, share + key.public, b"age-encryption.org/v1/X25519")
                try:
                    file_key = ChaCha20Poly1305(wrap).decrypt(bytes(12), body, None)
                except InvalidTag:
                    continue
                if len(file_key) == 16:
                    return file_key
        raise Invalid("no identity given opens this file")

    def passphrase_file_key(self, passphrase: str, max_work_factor: int) -> bytes:
        """The file key the header's only stanza, a scrypt one, holds for `passphrase`."""
        if len(self.stanzas) != 1 or self.stanzas[0][0] != b"scrypt":
            raise Invalid("the file is not sealed with a passphrase alone")
        _kind, arguments, body = self.stanzas[0]
        if len(arguments) != 2 or len(body) != 32 or not _WORK_FACTOR.fullmatch(arguments[1]):
            raise Invalid("a scrypt stanza is malformed")
        salt = _unpadded_base64(arguments[0])
        work_factor = int(arguments[1])
        if len(salt) != 16:
            raise Invalid("a scrypt stanza is malformed")
        if work_factor > max_work_factor:
            raise Invalid("the passphrase file asks for more work than Berth allows")
        wrap = Scrypt(salt=b"age-encryption.org/v1/scrypt" + salt, length=32,
                      n=1 << work_factor, r=8, p=1).derive(passphrase.encode())
        try:
            file_key = ChaCha20Poly1305(wrap).decrypt(bytes(12), body, None)
        except InvalidTag:
            raise Invalid("the passphrase does not open this file") from None
        if len(file_key) != 16:
            raise Invalid("a scrypt stanza is malformed")
        return file_key

    def check(self, file_key: bytes) -> None:
        expected = hmac.new(_hkdf(file_key, b"", b"header"), self.covered, hashlib.sha256)
        if not hmac.compare_digest(expected.digest(), self.mac):
            raise Invalid("the header was altered")


def _read_header(read: Callable[[int], bytes]) -> tuple[Header, bytes]:
    """The header, and the bytes read after it."""
    held = b""
    while True:
        end = held.find(b"\n---")
        if end >= 0 and held.find(b"\n", end + 1) >= 0:
            stop = held.find(b"\n", end + 1) + 1
            if stop > MAX_HEADER:  # however the reads were split
                raise Invalid("the header of the age file is too large")
            return Header(held[:stop]), held[stop:]
        if len(held) > MAX_HEADER:
            raise Invalid("not an age file (no header end)")
        more = read(READ_SIZE)
        if not more:
            raise Invalid("not an age file (it ends in its header)")
        held += more


# --- the payload -----------------------------------------------------------------------------

def _sealed_chunks(held: bytes, read: Callable[[int], bytes]) -> Iterator[tuple[bytes, bool]]:
    """The payload's sealed chunks, each with whether it is the last one.

    A chunk is the last only if the file ends right after it, so the one at
    the end of what was read is held back until the next read says. Only a
    chunk that straddles two reads is copied.
    """
    carry: bytes | memoryview = held
    while True:
        more = read(READ_SIZE)
        view, at = memoryview(carry), 0
        while len(view) - at > SEALED_CHUNK or (more and len(view) - at == SEALED_CHUNK):
            yield view[at:at + SEALED_CHUNK], False
            at += SEALED_CHUNK
        if not more:
            yield view[at:], True
            return
        rest = view[at:].tobytes()
        need = SEALED_CHUNK - len(rest)
        if rest and len(more) > need:  # complete, and followed by more: not the last
            yield rest + more[:need], False
            carry = memoryview(more)[need:]
        else:
            carry = rest + more if rest else more


def decrypt(read: Callable[[int], bytes], write: Callable[[bytes], object],
            identities: Iterable[x25519.Identity]) -> None:
    """Decrypt what `read(n)` returns (b"" at its end) and pass it to `write`, about 1 MiB
    at a time. Invalid if no identity opens it or it is not intact; `write` may by then
    have been given a part of it (authenticated, but not the whole)."""
    keys = [_Key(i) for i in identities]
    if not keys:
        raise Invalid("no identity was given")
    _decrypt(read, write, lambda header: header.file_key(keys))


def open_with_passphrase(sealed: bytes, passphrase: str, *,
                         max_work_factor: int = MAX_WORK_FACTOR) -> bytes:
    """A small file age sealed with `passphrase` (its scrypt recipient), opened in memory."""
    parts: list[bytes] = []
    source = iter([sealed])
    _decrypt(lambda _size: next(source, b""), parts.append,
             lambda header: header.passphrase_file_key(passphrase, max_work_factor))
    return b"".join(parts)


def seal_with_passphrase(plain: bytes, passphrase: str, *, work_factor: int) -> bytes:
    """`plain` (small: one chunk at most) as an age file with one scrypt stanza of
    2**work_factor rounds, which `age -d` opens with the passphrase. pyrage chooses the
    work from how fast the machine is at that moment; Berth chooses it (as Go's age does)."""
    if len(plain) > CHUNK:
        raise ValueError("seal_with_passphrase takes at most one chunk")
    if not 1 <= work_factor <= MAX_WORK_FACTOR:
        raise ValueError(f"the work factor must be from 1 to {MAX_WORK_FACTOR}")
    file_key, salt, nonce = os.urandom(16), os.urandom(16), os.urandom(16)
    wrap = Scrypt(salt=b"age-encryption.org/v1/scrypt" + salt, length=32,
                  n=1 << work_factor, r=8, p=1).derive(passphrase.encode())
    body = ChaCha20Poly1305(wrap).encrypt(bytes(12), file_key, None)
    covered = (INTRO + b"\n-> scrypt " + _b64(salt) + b" %d\n" % work_factor
               + _b64(body) + b"\n---")
    mac = hmac.new(_hkdf(file_key, b"", b"header"), covered, hashlib.sha256).digest()
    payload = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload")).encrypt(
        bytes(11) + b"\x01", plain, None)
    return covered + b" " + _b64(mac) + b"\n" + nonce + payload


def _b64(raw: bytes) -> bytes:
    return base64.b64encode(raw).rstrip(b"=")


def _decrypt(read: Callable[[int], bytes], write: Callable[[bytes], object],
             file_key_of: Callable[[Header], bytes]) -> None:
    header, held = _read_header(read)
    file_key = file_key_of(header)
    header.check(file_key)
    while len(held) < 16:
        more = read(READ_SIZE)
        if not more:
            raise Invalid("the file ends before its payload")
        held += more
    nonce, held = held[:16], held[16:]
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    done: list[bytes] = []
    for counter, (sealed, last) in enumerate(_sealed_chunks(held, read)):
        if len(sealed) < TAG or (last and counter and len(sealed) == TAG):
            raise Invalid("the file was truncated or extended")  # an empty last chunk too
        try:
            done.append(aead.decrypt(counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00"),
                                     sealed, None))
        except InvalidTag:
            raise Invalid("the file was altered, truncated or extended") from None
        if last or len(done) * CHUNK >= READ_SIZE:
            write(b"".join(done))
            done.clear()
