"""lib/agestream.py: age files read in process, as pyrage and Debian's age write them.

Sizes around the 64 KiB chunk, reads of any size, and every way a file can
be wrong: a wrong identity, a flipped bit anywhere, a file cut or extended
(at a chunk boundary too), an armored or foreign file.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess

import pyrage
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyrage import x25519

from lib import agestream

CHUNK, SEALED = agestream.CHUNK, agestream.SEALED_CHUNK
AGE = shutil.which("age")
needs_age = pytest.mark.skipif(AGE is None, reason="SKIPPED FOR LACK OF age (run `make host`)")
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 7, (1 << 20) + 5,
         3 << 20]


class Reads:
    """A source that answers reads with pieces of the sizes given, in turn."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.sizes, self.at, self.calls = data, sizes, 0, 0

    def read(self, amount: int) -> bytes:
        size = min(amount, self.sizes[self.calls % len(self.sizes)])
        self.calls += 1
        piece = self.data[self.at:self.at + size]
        self.at += len(piece)
        return piece


def decrypted(sealed: bytes, identities, sizes=(1 << 20,)) -> bytes:
    out = bytearray()
    agestream.decrypt(Reads(sealed, list(sizes)).read, out.extend, identities)
    return bytes(out)


@pytest.fixture(scope="module")
def key() -> x25519.Identity:
    return x25519.Identity.generate()


@pytest.mark.parametrize("size", SIZES)
def test_it_reads_what_pyrage_wrote(key, size):
    plain = os.urandom(size)
    assert decrypted(pyrage.encrypt(plain, [key.to_public()]), [key]) == plain


@needs_age
@pytest.mark.parametrize("size", [0, CHUNK, 2 * CHUNK + 1])
def test_it_reads_what_the_age_cli_wrote(key, size, tmp_path):
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(size))
    sealed = subprocess.run([AGE, "-r", str(key.to_public()), str(plain)], check=True,
                            capture_output=True).stdout
    assert decrypted(sealed, [key]) == plain.read_bytes()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.sampled_from([1, 15, 16, 17, 4096, SEALED - 1, SEALED, SEALED + 1,
                                       3 * SEALED, 1 << 20]), min_size=1, max_size=6),
       size=st.sampled_from(SIZES[:-1]))
def test_reads_of_any_size_give_the_same_plaintext(sizes, size):
    key = x25519.Identity.generate()
    plain = os.urandom(size)
    assert decrypted(pyrage.encrypt(plain, [key.to_public()]), [key], sizes) == plain


def test_any_of_the_identities_that_opens_a_stanza_will_do(key):
    other, stranger = x25519.Identity.generate(), x25519.Identity.generate()
    sealed = pyrage.encrypt(b"two keys", [key.to_public(), other.to_public()])
    assert decrypted(sealed, [stranger, other]) == b"two keys"
    with pytest.raises(agestream.Invalid, match="no identity"):
        decrypted(sealed, [stranger])
    with pytest.raises(agestream.Invalid):
        decrypted(sealed, [])


def test_a_flipped_bit_anywhere_is_refused(key):
    sealed = pyrage.encrypt(os.urandom(2 * CHUNK + 100), [key.to_public()])
    header_end = sealed.index(b"\n---") + 1
    for at in (5, 30, header_end + 10, sealed.index(b"\n", header_end) + 3,
               len(sealed) // 2, len(sealed) - 1):
        altered = bytearray(sealed)
        altered[at] ^= 0x04
        with pytest.raises(agestream.Invalid):
            decrypted(bytes(altered), [key])


@pytest.mark.parametrize("size", [2 * CHUNK, 2 * CHUNK + 10])
def test_a_file_cut_or_extended_is_refused_even_at_a_chunk_boundary(key, size):
    sealed = pyrage.encrypt(os.urandom(size), [key.to_public()])
    last = len(sealed) - (SEALED if size % CHUNK == 0 else size % CHUNK + 16)
    for wrong in (sealed[:-1], sealed[:last], sealed[:last - SEALED], sealed + b"\0",
                  sealed + sealed[last:], sealed[:sealed.index(b"\n---")]):
        with pytest.raises(agestream.Invalid):
            decrypted(wrong, [key])


def test_an_armored_or_foreign_file_is_refused(key):
    armored = pyrage.encrypt(b"x", [key.to_public()], armored=True)
    for wrong in (armored, b"", b"PK\x03\x04" + os.urandom(100), b"age-encryption.org/v1\n",
                  b"age-encryption.org/v1\n" + b"-> X25519 " + b"A" * (1 << 20)):
        with pytest.raises(agestream.Invalid):
            decrypted(wrong, [key])


def test_a_part_written_before_an_alteration_was_authenticated(key):
    plain = os.urandom(3 << 20)
    sealed = bytearray(pyrage.encrypt(plain, [key.to_public()]))
    sealed[-100] ^= 1
    out = bytearray()
    with pytest.raises(agestream.Invalid):
        agestream.decrypt(io.BytesIO(bytes(sealed)).read, out.extend, [key])
    assert len(out) < len(plain) and plain.startswith(bytes(out))


@pytest.mark.parametrize("sizes", [(1 << 20,), (4096,)], ids=["one-read", "small-reads"])
def test_a_header_over_the_bound_is_refused_however_it_is_read(key, sizes):
    many = [x25519.Identity.generate().to_public() for _ in range(800)]  # ~100 bytes each
    sealed = pyrage.encrypt(b"x", [key.to_public(), *many])
    assert sealed.index(b"\n---") > agestream.MAX_HEADER
    with pytest.raises(agestream.Invalid):
        decrypted(sealed, [key], sizes)


# --- a small file sealed with a passphrase (a target's identity) -----------------------------

PASSPHRASE = "correct horse battery staple"


def sealed_by_hand(plain: bytes, passphrase: str, work_factor: int) -> bytes:
    return agestream.seal_with_passphrase(plain, passphrase, work_factor=work_factor)


def test_a_passphrase_file_pyrage_sealed_opens():
    sealed = pyrage.passphrase.encrypt(b"the identity", PASSPHRASE)

    assert agestream.open_with_passphrase(sealed, PASSPHRASE) == b"the identity"


def test_a_passphrase_file_berth_sealed_opens_here_and_in_pyrage():
    sealed = sealed_by_hand(b"the identity", PASSPHRASE, 15)

    assert agestream.open_with_passphrase(sealed, PASSPHRASE) == b"the identity"
    assert pyrage.passphrase.decrypt(sealed, PASSPHRASE) == b"the identity"


def test_a_wrong_passphrase_or_an_altered_file_is_refused():
    sealed = sealed_by_hand(b"the identity", PASSPHRASE, 12)
    with pytest.raises(agestream.Invalid, match="passphrase does not open"):
        agestream.open_with_passphrase(sealed, "another passphrase entirely")
    altered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(agestream.Invalid, match="altered"):
        agestream.open_with_passphrase(altered, PASSPHRASE)


def test_a_passphrase_file_asking_for_more_work_than_the_cap_is_refused_unopened():
    sealed = sealed_by_hand(b"the identity", PASSPHRASE, 12)
    greedy = sealed.replace(b" 12\n", b" 23\n", 1)

    with pytest.raises(agestream.Invalid, match="more work"):
        agestream.open_with_passphrase(greedy, PASSPHRASE)
    with pytest.raises(agestream.Invalid, match="more work"):
        agestream.open_with_passphrase(sealed, PASSPHRASE, max_work_factor=11)


def test_a_file_for_identities_is_not_opened_with_a_passphrase():
    identity = x25519.Identity.generate()
    sealed = pyrage.encrypt(b"data", [identity.to_public()])

    with pytest.raises(agestream.Invalid, match="not sealed with a passphrase"):
        agestream.open_with_passphrase(sealed, PASSPHRASE)
