"""age encryption: what Berth writes, Debian's age CLI reads, and the other way round."""

from __future__ import annotations

import io
import shutil
import subprocess

import pytest
from pyrage import x25519

from lib import agecrypt
from tests.snapshots.trees import archive_of, describe, extract_bytes

AGE = shutil.which("age")
needs_age = pytest.mark.skipif(AGE is None, reason="SKIPPED FOR LACK OF age (run `make host`)")


@pytest.fixture
def archive(tmp_path) -> bytes:
    volume = tmp_path / "volume"
    (volume / "sub").mkdir(parents=True)
    (volume / "index.html").write_bytes(b"<h1>hello</h1>")
    (volume / "sub" / "big.bin").write_bytes(bytes(range(256)) * 4096)
    return archive_of([volume])


def encrypted(data: bytes, *recipients: str) -> bytes:
    out = io.BytesIO()
    agecrypt.encrypt_stream(io.BytesIO(data), out, recipients)
    return out.getvalue()


@needs_age
def test_the_age_cli_decrypts_a_copy_into_a_valid_berth_archive(archive, tmp_path, identity,
                                                                recipient):
    sealed, key = tmp_path / "copy.tar.zst.age", tmp_path / "key.txt"
    sealed.write_bytes(encrypted(archive, recipient))
    key.write_text(str(identity) + "\n")
    key.chmod(0o600)

    plain = tmp_path / "copy.tar.zst"
    subprocess.run([AGE, "-d", "-i", str(key), "-o", str(plain), str(sealed)], check=True)

    assert plain.read_bytes() == archive
    subprocess.run(["zstd", "-q", "-t", str(plain)], check=True)
    # Berth's own validation: the safe extractor takes it, tree and all.
    extract_bytes(plain.read_bytes(), tmp_path / "staging", volume_count=1)
    assert describe(tmp_path / "staging" / "volumes" / "0") == describe(tmp_path / "volume")


@needs_age
def test_berth_decrypts_what_the_age_cli_encrypted(archive, tmp_path, identity, recipient):
    plain, sealed = tmp_path / "a.tar.zst", tmp_path / "a.tar.zst.age"
    plain.write_bytes(archive)
    subprocess.run([AGE, "-r", recipient, "-o", str(sealed), str(plain)], check=True)
    out = io.BytesIO()
    agecrypt.decrypt_stream(io.BytesIO(sealed.read_bytes()), out, [identity])
    assert out.getvalue() == archive


def test_every_recipient_can_decrypt(archive):
    first, second = x25519.Identity.generate(), x25519.Identity.generate()
    sealed = encrypted(archive, str(first.to_public()), str(second.to_public()))
    for key in (first, second):
        out = io.BytesIO()
        agecrypt.decrypt_stream(io.BytesIO(sealed), out, [key])
        assert out.getvalue() == archive


def test_a_wrong_identity_or_an_altered_byte_is_refused(archive, identity, recipient):
    sealed = bytearray(encrypted(archive, recipient))
    with pytest.raises(agecrypt.AgeError):
        agecrypt.decrypt_stream(io.BytesIO(bytes(sealed)), io.BytesIO(),
                                [x25519.Identity.generate()])
    sealed[len(sealed) // 2] ^= 0x01
    with pytest.raises(agecrypt.AgeError):
        agecrypt.decrypt_stream(io.BytesIO(bytes(sealed)), io.BytesIO(), [identity])


def test_recipients_are_parsed_one_per_line_with_comments(recipient):
    other = str(x25519.Identity.generate().to_public())
    text = f"# the office\n{recipient}\n\n  {other}  \n{recipient}\n"
    assert agecrypt.parse_recipients(text) == [recipient, other]


def test_identities_are_parsed_from_an_identity_file(identity):
    text = f"# created: 2026-12-06\n# public key: {identity.to_public()}\n{identity}\n"
    [parsed] = agecrypt.parse_identities(text)
    assert str(parsed) == str(identity)
    with pytest.raises(agecrypt.AgeError, match="No age identity"):
        agecrypt.parse_identities("# nothing here\n")
