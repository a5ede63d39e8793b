"""A passphrase on a target: an identity sealed with it on the target, its recipient on
every copy (engine/backups.py, lib/agecrypt.py), on the real S3 server and a directory."""

from __future__ import annotations

import io
import os
import pty
import select
import shutil
import time

import pytest
from pyrage import x25519

from backups.models import BackupTarget
from engine import backups, copies
from lib import agecrypt
from tests.backups.conftest import objects, s3_client
from tests.backups.test_copies import copied, s3_target
from tests.snapshots.restoring import snapshot_from_bytes
from tests.snapshots.trees import archive_of

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]

PASSPHRASE = "correct horse battery staple"
AGE = shutil.which("age")


@pytest.fixture
def archive(tmp_path) -> bytes:
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "data.bin").write_bytes(os.urandom(300 << 10))
    return archive_of([volume])


@pytest.fixture
def snapshot(make_workload, archive):
    volumes = [{"scope": "absolute", "source": "/v", "target": "/v", "bytes": len(archive),
                "files": 1}]
    return snapshot_from_bytes(make_workload(), archive, {"volumes": volumes})


def restored(row, identities) -> bytes:
    out = io.BytesIO()
    copies.download(row, out, identities=identities)
    return out.getvalue()


# --- lib/agecrypt ----------------------------------------------------------------------------

def test_an_identity_sealed_with_a_passphrase_opens_with_it_only(identity):
    sealed = agecrypt.wrap_identity(identity, PASSPHRASE, work_factor=18)  # production's
    assert b"-> scrypt " in sealed and b" 18\n" in sealed
    assert str(identity) not in sealed.decode("latin-1")
    assert str(agecrypt.unwrap_identity(sealed, PASSPHRASE)) == str(identity)
    with pytest.raises(agecrypt.AgeError, match="does not open"):
        agecrypt.unwrap_identity(sealed, PASSPHRASE + "!")
    with pytest.raises(agecrypt.AgeError, match="at least 12"):
        agecrypt.wrap_identity(identity, "short", work_factor=10)


def test_the_passphrase_recipient_is_one_marked_line_among_the_recipients(recipient):
    first, second = (str(x25519.Identity.generate().to_public()) for _ in range(2))
    text = agecrypt.with_passphrase_recipient(f"# office\n{recipient}\n\n", first)
    assert agecrypt.passphrase_recipient(text) == first
    assert agecrypt.parse_recipients(text) == [recipient, first]
    again = agecrypt.with_passphrase_recipient(text, second)
    assert agecrypt.parse_recipients(again) == [recipient, second]
    assert again.count(agecrypt.SEALED_IDENTITY_MARK) == 1 and "# office" in again
    assert agecrypt.passphrase_recipient(f"{recipient}\n") == ""


# --- engine: set_passphrase, identities_from_passphrase --------------------------------------

def test_a_copy_to_a_passphrase_target_opens_with_the_passphrase_alone(snapshot, archive, bucket,
                                                                       identity, recipient):
    target = backups.set_passphrase(target=s3_target(bucket, recipient), passphrase=PASSPHRASE)
    target.refresh_from_db()
    marked = target.passphrase_recipient
    assert marked and target.recipient_list == [recipient, marked]
    assert "berth/berth-identity.age" in objects(bucket)
    # Berth keeps neither the passphrase nor the identity: only the public key.
    assert PASSPHRASE not in str(BackupTarget.objects.filter(pk=target.pk).values().get())

    row = copied(snapshot, target)
    fresh = BackupTarget.objects.get(pk=target.pk)  # what a restore starts from
    keys = backups.identities_from_passphrase(fresh, PASSPHRASE)
    assert [agecrypt.recipient_of(k) for k in keys] == [marked]
    assert restored(row, keys) == archive
    assert restored(row, [identity]) == archive  # the operator's own key still opens it


def test_a_wrong_passphrase_is_a_clear_error(snapshot, bucket, recipient):
    target = backups.set_passphrase(target=s3_target(bucket, recipient), passphrase=PASSPHRASE)
    with pytest.raises(agecrypt.AgeError, match="passphrase does not open"):
        backups.identities_from_passphrase(target, "not the passphrase at all")


def test_a_target_without_a_sealed_identity_says_so(bucket, recipient):
    with pytest.raises(agecrypt.AgeError, match="holds no identity"):
        backups.identities_from_passphrase(s3_target(bucket, recipient), PASSPHRASE)


@pytest.mark.slow  # scrypt: about a second per passphrase, several here
def test_a_changed_passphrase_keeps_the_identity_so_earlier_copies_still_open(
    snapshot, archive, bucket, recipient
):
    target = backups.set_passphrase(target=s3_target(bucket, recipient), passphrase=PASSPHRASE)
    marked = target.passphrase_recipient
    row = copied(snapshot, target)
    with pytest.raises(agecrypt.AgeError, match="current passphrase"):
        backups.set_passphrase(target=target, passphrase="a new passphrase here",
                               current="a wrong current one")
    backups.set_passphrase(target=target, passphrase="a new passphrase here", current=PASSPHRASE)
    target.refresh_from_db()
    assert target.passphrase_recipient == marked
    assert restored(row, backups.identities_from_passphrase(target, "a new passphrase here")) \
        == archive
    with pytest.raises(agecrypt.AgeError, match="passphrase does not open"):
        backups.identities_from_passphrase(target, PASSPHRASE)


@pytest.mark.slow  # scrypt: about a second per passphrase, several here
def test_a_fresh_berth_takes_over_the_sealed_identity_and_never_replaces_it(bucket, recipient):
    first = backups.set_passphrase(target=s3_target(bucket, recipient), passphrase=PASSPHRASE)
    sealed = s3_client().get_object(Bucket=bucket, Key="berth/berth-identity.age")["Body"].read()
    BackupTarget.objects.filter(pk=first.pk).delete()  # the database was lost

    again = s3_target(bucket, recipient)
    with pytest.raises(agecrypt.AgeError, match="another passphrase"):
        backups.set_passphrase(target=again, passphrase="some other passphrase")
    backups.set_passphrase(target=again, passphrase=PASSPHRASE)
    again.refresh_from_db()
    assert again.passphrase_recipient == first.passphrase_recipient
    assert s3_client().get_object(Bucket=bucket,
                                  Key="berth/berth-identity.age")["Body"].read() == sealed


def test_an_unencrypted_target_with_a_passphrase_is_encrypted_from_then_on(snapshot, archive,
                                                                           roots):
    (roots / "nas").mkdir()
    target = BackupTarget(name="nas", kind="directory", directory=str(roots / "nas"),
                          unencrypted=True)
    target.full_clean()
    target.save()
    backups.set_passphrase(target=target, passphrase=PASSPHRASE)
    target = BackupTarget.objects.get(pk=target.pk)
    target.full_clean()
    assert target.encrypted and (roots / "nas" / "berth-identity.age").exists()
    row = copied(snapshot, target)
    assert row.encrypted and row.remote_key.endswith(".age")
    assert restored(row, backups.identities_from_passphrase(target, PASSPHRASE)) == archive


def _age_with_passphrase(args: list[str], passphrase: str) -> tuple[int, bytes]:
    """Run Debian's age in a pseudo-terminal (it reads passphrases from the terminal only)
    and type `passphrase` when it asks."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child becomes age
        os.execv(AGE, [AGE, *args])  # noqa: S606 - age's own argv, no shell
    said, typed, deadline = b"", False, time.monotonic() + 60
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], 1)[0]:
            continue
        try:
            data = os.read(fd, 1024)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        said += data
        if not typed and b"passphrase" in said.lower():
            os.write(fd, passphrase.encode() + b"\n")
            typed = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), said


@pytest.mark.slow  # scrypt: about a second per passphrase, several here
@pytest.mark.skipif(AGE is None, reason="SKIPPED FOR LACK OF age (run `make host`)")
def test_the_age_cli_opens_a_copy_with_the_sealed_identity_and_the_passphrase(
    snapshot, archive, bucket, recipient, tmp_path
):
    target = backups.set_passphrase(target=s3_target(bucket, recipient), passphrase=PASSPHRASE)
    row = copied(snapshot, target)
    client = s3_client()
    sealed, copy, plain = (tmp_path / n for n in ("berth-identity.age", "copy.age", "copy"))
    sealed.write_bytes(client.get_object(Bucket=bucket,
                                         Key="berth/berth-identity.age")["Body"].read())
    copy.write_bytes(client.get_object(Bucket=bucket, Key=f"berth/{row.remote_key}")["Body"]
                     .read())
    code, said = _age_with_passphrase(["-d", "-i", str(sealed), "-o", str(plain), str(copy)],
                                      PASSPHRASE)
    assert code == 0, said
    assert plain.read_bytes() == archive

