"""Recovery from a target, in one instance: the catalogue, hostile objects, bad input.

What is on a target is untrusted. Objects are planted in the bucket the way
an attacker with write access to it could: encrypted to the operator's own
recipient, under names that look like Berth's. Real parts: moto's S3 server
over HTTP; Docker where a workload runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os

import pytest

from backups import sidecar
from backups.models import BackupRecovery, BackupTarget
from engine import disaster, sweep
from lib import agecrypt, crypto
from snapshots.models import Snapshot
from tests.backups.conftest import s3_client, s3_target
from tests.conftest import dead_owner
from tests.fixtures import images
from tests.snapshots import hostile
from tests.snapshots.conftest import fill, leftovers
from tests.snapshots.hostile import member
from tests.snapshots.trees import describe
from workloads.models import EventLog, Project, Workload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]

def seal(data: bytes, recipient: str) -> bytes:
    out = io.BytesIO()
    agecrypt.encrypt_stream(io.BytesIO(data), out, [recipient])
    return out.getvalue()


def plant(bucket: str, key: str, archive: bytes, document: dict, recipient: str) -> None:
    """An archive and its sidecar, encrypted to `recipient`, as if Berth had put them there."""
    client = s3_client()
    client.put_object(Bucket=bucket, Key=f"berth/{key}", Body=seal(archive, recipient))
    client.put_object(Bucket=bucket, Key=f"berth/{sidecar.sidecar_name(key, encrypted=True)}",
                      Body=seal(json.dumps(document).encode(), recipient))


def document_for(archive: bytes, *, slug: str = "planted", **snapshot) -> dict:
    return {
        "format": sidecar.FORMAT, "version": sidecar.VERSION,
        "snapshot": {"id": 7, "kind": "manual", "created": "2026-12-01T10:00:00+00:00",
                     "imported": False, "size": len(archive),
                     "sha256": hashlib.sha256(archive).hexdigest(), "data_bytes": 5,
                     "file_count": 1, "volume_count": 1} | snapshot,
        "workload": {
            "project": {"slug": "evil", "name": "Evil"}, "stage": {"slug": "prod", "name": "P"},
            "slug": slug, "name": "Planted", "source_kind": "image",
            "image": "127.0.0.1:5000/berth-test/httpd:v1", "running_reference": "",
            "git_url": "", "git_ref": "main", "git_dockerfile": "Dockerfile",
            "git_context": ".", "build_args": {}, "replicas": 1,
            "snapshot_consistency": "stop",
            "volumes": [{"scope": "stage", "source": "data0", "target": "/data0",
                         "read_only": False}],
            "ports": [], "env": [],
        },
    }


def nothing_left() -> None:
    assert not Project.objects.filter(slug="evil").exists()
    assert not Workload.objects.filter(slug="planted").exists()
    assert leftovers() == []


KEY = "evil/prod/planted/20261201T100000Z-manual-7-c7.tar.zst.age"


def test_the_catalogue_lists_copies_from_their_sidecars(copy_of, identity):
    row, _volume = copy_of
    target = BackupTarget.objects.get(pk=row.target_id)
    [entry] = disaster.catalogue(target, [identity])
    workload = row.workload
    assert entry.key == row.remote_key
    assert entry.workload_path == f"{workload.stage.project.slug}/prod/web"
    assert entry.described.snapshot["sha256"] == row.snapshot.sha256
    assert entry.described.workload["volumes"][0]["target"] == "/data"


def test_the_catalogue_lists_an_unreadable_sidecar_with_its_problem(copy_of, identity, bucket,
                                                                    recipient):
    row, _volume = copy_of
    client = s3_client()
    client.put_object(Bucket=bucket, Key="berth/x/y/z/bad.json.age",
                      Body=seal(b"{not json", recipient))
    client.put_object(Bucket=bucket, Key="berth/x/y/z/bad.tar.zst.age", Body=b"whatever")
    client.put_object(Bucket=bucket, Key="berth/x/y/z/orphan.json.age", Body=b"no archive")
    target = BackupTarget.objects.get(pk=row.target_id)
    entries = {e.key: e for e in disaster.catalogue(target, [identity])}
    assert set(entries) == {row.remote_key, "x/y/z/bad.tar.zst.age"}
    assert entries["x/y/z/bad.tar.zst.age"].described is None
    assert "not valid JSON" in entries["x/y/z/bad.tar.zst.age"].problem
    # Without the identity every encrypted sidecar says so.
    assert {e.problem for e in disaster.catalogue(target, [])} == {
        "The copy is encrypted: give the age identity to read it."}


def test_recovery_onto_an_existing_workload_restores_its_data(copy_of, identity):
    row, volume = copy_of
    workload = Workload.objects.get(pk=row.workload_id)
    before = describe(volume)
    fill(volume, {"index.html": b"<h1>damaged</h1>", "junk.bin": b"x" * 100})
    target = BackupTarget.objects.get(pk=row.target_id)

    result = disaster.recover(target=target, key=row.remote_key, identities=[identity],
                              into=workload)

    assert result.restore.outcome == result.restore.Outcome.SUCCEEDED, result.restore.reason
    assert not result.created and result.deploy is None
    assert describe(volume) == before
    assert result.snapshot.imported and result.snapshot.sha256 == row.snapshot.sha256
    assert EventLog.objects.filter(workload=workload,
                                   message__startswith="Recovered snapshot").exists()


def test_recovering_a_workload_that_exists_is_refused(copy_of, identity):
    row, _volume = copy_of
    target = BackupTarget.objects.get(pk=row.target_id)
    snapshots = Snapshot.objects.count()
    with pytest.raises(disaster.RecoveryError) as caught:
        disaster.recover(target=target, key=row.remote_key, identities=[identity])
    assert caught.value.code == "exists"
    assert Snapshot.objects.count() == snapshots and leftovers() == []


def test_a_wrong_identity_is_refused(copy_of):
    from pyrage import x25519

    row, _volume = copy_of
    target = BackupTarget.objects.get(pk=row.target_id)
    with pytest.raises(disaster.RecoveryError) as caught:
        disaster.recover(target=target, key=row.remote_key,
                         identities=[x25519.Identity.generate()])
    assert caught.value.code == "wrong_identity"


@pytest.mark.parametrize("case", [
    "symlink", "hardlink-to-canary", "character-device",
], ids=str)
def test_a_hostile_archive_under_a_valid_looking_key_is_refused_leaving_nothing(
    case, bucket, recipient, identity, tmp_path
):
    canary = tmp_path / "canary"
    canary.mkdir()
    [attack] = [c for c in hostile.corpus(str(canary)) if c.name == case]
    plant(bucket, KEY, attack.data, document_for(attack.data), recipient)
    target = s3_target(bucket, recipient)

    with pytest.raises(disaster.RecoveryError) as caught:
        disaster.recover(target=target, key=KEY, identities=[identity])

    assert caught.value.code == "refused", caught.value
    nothing_left()
    assert list(canary.iterdir()) == []


def test_a_sidecar_that_lies_about_the_archive_is_caught_by_the_checksum(
    copy_of, bucket, recipient, identity
):
    row, _volume = copy_of
    real = s3_client().get_object(Bucket=bucket, Key=f"berth/{row.remote_key}")["Body"].read()
    archive = io.BytesIO()
    agecrypt.decrypt_stream(io.BytesIO(real), archive, [identity])
    archive = archive.getvalue()
    # The archive is a valid Berth archive; the sidecar gives another one's checksum,
    # then a smaller size: either way it is not the copy the sidecar describes.
    for lie in ({"sha256": hashlib.sha256(b"another").hexdigest()},
                {"size": len(archive) // 2}):
        plant(bucket, KEY, archive, document_for(archive, **lie), recipient)
        with pytest.raises(disaster.RecoveryError) as caught:
            disaster.recover(target=BackupTarget.objects.get(pk=row.target_id), key=KEY,
                             identities=[identity])
        assert caught.value.code == "mismatch", lie
        nothing_left()


@pytest.mark.parametrize(("change", "reason"), [
    ({"format": "something-else"}, "not a Berth sidecar"),
    ({"version": 99}, "unknown sidecar version"),
    ({"snapshot": {"size": -1}}, "snapshot.size"),
    ({"workload": {"volumes": [{"scope": "stage"}]}}, "workload.volumes"),
    ({"workload": {"env": "x"}}, "workload.env"),
])
def test_a_malformed_sidecar_is_refused(change, reason, bucket, recipient, identity):
    archive = hostile.archive()
    document = document_for(archive)
    for part, value in change.items():
        if isinstance(value, dict):
            document[part] = document[part] | value
        else:
            document[part] = value
    plant(bucket, KEY, archive, document, recipient)
    with pytest.raises(disaster.RecoveryError) as caught:
        disaster.recover(target=s3_target(bucket, recipient), key=KEY, identities=[identity])
    assert caught.value.code == "bad_sidecar" and reason in str(caught.value)
    nothing_left()


def test_a_definition_this_host_refuses_is_refused_leaving_nothing(
    bucket, recipient, identity, settings
):
    archive = hostile.archive()
    document = document_for(archive)
    document["workload"]["volumes"] = [{"scope": "absolute", "source": "/etc",
                                        "target": "/data0", "read_only": False}]
    plant(bucket, KEY, archive, document, recipient)
    with pytest.raises(disaster.RecoveryError) as caught:
        disaster.recover(target=s3_target(bucket, recipient), key=KEY, identities=[identity])
    assert caught.value.code == "invalid_definition"
    assert "source" in str(caught.value)
    nothing_left()


def test_a_name_that_is_not_a_copy_is_refused(bucket, recipient, identity):
    with pytest.raises(disaster.RecoveryError) as caught:
        disaster.recover(target=s3_target(bucket, recipient), key="../../etc/passwd",
                         identities=[identity])
    assert caught.value.code == "not_a_copy"


def test_the_sweep_fails_a_recovery_whose_worker_died_and_erases_its_identity(
    bucket, recipient, identity
):
    row = BackupRecovery.objects.create(
        target=s3_target(bucket, recipient), remote_key=KEY, state="running",
        owner=dead_owner(), identity_encrypted=crypto.encrypt(str(identity)))
    sweep.recover_all()
    row.refresh_from_db()
    assert (row.state, row.failure_code, row.identity_encrypted) == ("failed", "interrupted", "")
    assert "interrupted" in row.failure_text


# --- what an adversarial review found ----------------------------------------------------


def test_a_failed_recovery_removes_only_what_it_created(bucket, recipient, identity,
                                                        make_workload):
    archive = hostile.archive(member("volumes/0/link", typeflag=b"2", linkname=b"/etc"))
    plant(bucket, KEY, archive, document_for(archive), recipient)
    added = []

    def meanwhile(done: int, total: int) -> None:
        # While it downloads, an operator (or another recovery) adds a workload to the
        # project and stage this recovery created.
        if not added:
            stage = Workload.objects.get(slug="planted").stage
            added.append(Workload.objects.create(stage=stage, slug="other", name="Other",
                                                 image=images.HTTPD_V1))

    with pytest.raises(disaster.RecoveryError) as caught:
        disaster.recover(target=s3_target(bucket, recipient), key=KEY, identities=[identity],
                         progress=meanwhile)
    assert caught.value.code == "refused"
    assert not Workload.objects.filter(slug="planted").exists()
    assert Workload.objects.filter(pk=added[0].pk).exists()  # with its stage and project


@pytest.mark.parametrize("volume", [
    {"scope": "absolute", "source": "{data}", "target": "/d", "read_only": False},
    {"scope": "stage", "source": "data0", "target": "/d", "read_only": False},
], ids=["absolute-with-data", "stage-directory-with-data"])
def test_a_definition_may_not_take_over_data_already_on_the_host(
    volume, bucket, recipient, identity, tmp_path, settings
):
    from lib import paths

    existing = tmp_path / "payroll"
    existing.mkdir()
    (existing / "ledger.sql").write_text("precious")
    settings.BERTH_ABSOLUTE_VOLUME_ROOTS = [str(tmp_path)]
    volume = {k: v.format(data=existing) if isinstance(v, str) else v for k, v in volume.items()}
    if volume["scope"] == "stage":
        stage_dir = paths.host_path("stage", "evil", "prod", "data0")
        os.makedirs(stage_dir)
        with open(os.path.join(stage_dir, "kept.txt"), "w") as fh:
            fh.write("kept")
    archive = hostile.archive(volumes=[(0, 1, 0)])
    document = document_for(archive)
    document["workload"]["volumes"] = [volume]
    plant(bucket, KEY, archive, document, recipient)

    with pytest.raises(disaster.RecoveryError) as caught:
        disaster.recover(target=s3_target(bucket, recipient), key=KEY, identities=[identity])

    assert caught.value.code == "invalid_definition"
    assert "holds data" in str(caught.value)
    nothing_left()
    assert (existing / "ledger.sql").read_text() == "precious"


def test_a_definition_may_not_share_another_workloads_volume(bucket, recipient, identity,
                                                             make_workload):
    victim = make_workload()
    victim.volumes.create(scope="project", source="shared", target="/s")
    archive = hostile.archive(volumes=[(0, 1, 0)])
    document = document_for(archive)
    document["workload"]["project"]["slug"] = victim.stage.project.slug
    document["workload"]["volumes"] = [{"scope": "project", "source": "shared",
                                        "target": "/s", "read_only": False}]
    plant(bucket, KEY, archive, document, recipient)
    with pytest.raises(disaster.RecoveryError) as caught:
        disaster.recover(target=s3_target(bucket, recipient), key=KEY, identities=[identity])
    assert caught.value.code == "invalid_definition"
    assert "is a volume of workload" in str(caught.value)
    assert Workload.objects.count() == 1


@pytest.mark.parametrize("reference", [
    "127.0.0.1:5000/berth-test/slowstop@sha256:" + "a" * 64,  # another image
    "127.0.0.1:5000/berth-test/httpd:v2",                     # a tag: whatever it is now
    "127.0.0.1:5000/berth-test/httpd@sha256:short",
])
def test_what_the_sidecar_says_ran_must_be_its_own_image_pinned(reference, bucket, recipient,
                                                                identity):
    archive = hostile.archive(volumes=[(0, 1, 0)])
    document = document_for(archive)
    document["workload"]["running_reference"] = reference
    plant(bucket, KEY, archive, document, recipient)
    with pytest.raises(disaster.RecoveryError) as caught:
        disaster.recover(target=s3_target(bucket, recipient), key=KEY, identities=[identity])
    assert caught.value.code == "invalid_definition" and "running_reference" in str(caught.value)
    nothing_left()


def test_a_copy_in_clear_on_an_encrypted_target_is_not_berths(bucket, recipient, identity):
    archive = hostile.archive(volumes=[(0, 1, 0)])
    clear = "evil/prod/planted/20261201T100000Z-manual-7-c7.tar.zst"
    client = s3_client()
    client.put_object(Bucket=bucket, Key=f"berth/{clear}", Body=archive)
    client.put_object(Bucket=bucket, Key="berth/evil/prod/planted/20261201T100000Z-manual-7-c7"
                      ".json", Body=json.dumps(document_for(archive)).encode())
    target = s3_target(bucket, recipient)
    [entry] = disaster.catalogue(target, [identity])
    assert entry.described is None and "not encrypted" in entry.problem
    with pytest.raises(disaster.RecoveryError) as caught:
        disaster.recover(target=target, key=clear, identities=[identity])
    assert caught.value.code == "not_encrypted"
    nothing_left()


def test_a_sidecar_claiming_more_than_the_cap_or_the_free_space_is_refused_first(
    bucket, recipient, identity, settings
):
    archive = hostile.archive(volumes=[(0, 1, 0)])
    plant(bucket, KEY, archive, document_for(archive, size=1 << 50), recipient)
    with pytest.raises(disaster.RecoveryError) as caught:
        disaster.recover(target=s3_target(bucket, recipient), key=KEY, identities=[identity])
    assert caught.value.code == "too_large"
    settings.BERTH_SNAPSHOT_MAX_UPLOAD_BYTES = 1 << 60
    with pytest.raises(disaster.RecoveryError) as caught:
        disaster.recover(target=BackupTarget.objects.get(), key=KEY, identities=[identity])
    assert caught.value.code == "no_space"
    nothing_left()


def test_recovering_onto_a_workload_being_restored_is_busy(copy_of, identity):
    from snapshots.models import RestoreJob

    row, _volume = copy_of
    RestoreJob.objects.create(workload=row.workload, snapshot=row.snapshot)  # queued
    target = BackupTarget.objects.get(pk=row.target_id)
    for ask in (disaster.request_recovery, disaster.recover):
        with pytest.raises(disaster.RecoveryError) as caught:
            kwargs = {"identity": str(identity)} if ask is disaster.request_recovery \
                else {"identities": [identity]}
            ask(target=target, key=row.remote_key, into=row.workload, **kwargs)
        assert caught.value.code == "busy"
    assert BackupRecovery.objects.count() == 0


@pytest.mark.django_db(transaction=True)  # the forked worker reads the rows
def test_a_recovery_killed_mid_download_is_cleaned_by_the_sweep_and_can_be_retried(
    bucket, recipient, identity
):
    import signal

    from tests.fixtures import forking

    archive = hostile.archive(volumes=[(0, 1, 0)])
    plant(bucket, KEY, archive, document_for(archive), recipient)
    target = s3_target(bucket, recipient)
    row = disaster.request_recovery(target=target, key=KEY, identity=str(identity),
                                    queued=False)

    def killed_mid_download() -> None:
        disaster.run_recovery(BackupRecovery.objects.get(pk=row.pk),
                              progress=lambda done, total: os.kill(os.getpid(), signal.SIGKILL))

    child = forking.fork(killed_mid_download)
    assert child.wait(timeout=60) == -signal.SIGKILL
    row.refresh_from_db()
    assert row.state == BackupRecovery.State.RUNNING and row.created_rows
    assert Workload.objects.filter(slug="planted").exists()  # what the kill left

    sweep.recover_all()

    row.refresh_from_db()
    assert (row.state, row.failure_code, row.identity_encrypted) == ("failed", "interrupted", "")
    nothing_left()
    again = disaster.request_recovery(target=target, key=KEY, identity=str(identity),
                                      queued=False)
    result = disaster.run_recovery(again)
    again.refresh_from_db()
    assert result is not None and again.state == "succeeded", again.failure_text


def test_a_copy_rule_added_meanwhile_keeps_the_project(bucket, recipient, identity):
    from backups.models import CopyRule

    archive = hostile.archive(member("volumes/0/link", typeflag=b"2", linkname=b"/etc"))
    plant(bucket, KEY, archive, document_for(archive), recipient)
    target = s3_target(bucket, recipient)

    def meanwhile(done: int, total: int) -> None:
        # The runbook's last step, done early: copies set up for the new project.
        project = Project.objects.get(slug="evil")
        CopyRule.objects.get_or_create(project=project, target=target,
                                       defaults={"kinds": ["manual"]})

    with pytest.raises(disaster.RecoveryError):
        disaster.recover(target=target, key=KEY, identities=[identity], progress=meanwhile)
    assert not Workload.objects.filter(slug="planted").exists()
    assert CopyRule.objects.filter(project__slug="evil").exists()


def test_two_volumes_of_a_definition_may_not_share_a_directory(bucket, recipient, identity):
    archive = hostile.archive(volumes=[(0, 1, 0), (0, 1, 0)])
    document = document_for(archive)
    document["workload"]["volumes"] = [
        {"scope": "project", "source": "same", "target": f"/d{i}", "read_only": False}
        for i in range(2)]
    plant(bucket, KEY, archive, document, recipient)
    with pytest.raises(disaster.RecoveryError) as caught:
        disaster.recover(target=s3_target(bucket, recipient), key=KEY, identities=[identity])
    assert caught.value.code == "invalid_definition"
    nothing_left()


def test_a_restore_waits_out_a_recovery_onto_the_same_workload(copy_of, identity):
    from engine import restores

    row, _volume = copy_of
    target = BackupTarget.objects.get(pk=row.target_id)
    disaster.request_recovery(target=target, key=row.remote_key, identity=str(identity),
                              into=row.workload, queued=False)
    with pytest.raises(restores.RestoreBusy):
        restores.request_restore(workload=row.workload, snapshot=row.snapshot)


def test_a_workload_is_not_removed_while_a_recovery_onto_it_is_active(
    client, admin_client, operator, workload, bucket
):
    from django.contrib.messages import get_messages
    from rest_framework.authtoken.models import Token

    from engine import deploys

    recovery = BackupRecovery.objects.create(target=s3_target(bucket), remote_key="k",
                                             into=workload, onto_existing=True)  # queued

    with pytest.raises(deploys.RemovalRefused):
        deploys.remove_workload(workload=workload)
    client.force_login(operator)
    page = client.post(f"/workloads/{workload.pk}/delete", {"confirm": workload.path})
    token = Token.objects.create(user=operator)
    api = client.delete(f"/api/workloads/{workload.pk}",
                        headers={"Authorization": f"Token {token.key}",
                                 "X-Confirm-Delete": workload.path})
    admin = admin_client.post(f"/admin/workloads/workload/{workload.pk}/delete/",
                              {"post": "yes", "confirm": workload.path})

    assert page.status_code == 409 and "recovery from backup" in page.content.decode()
    assert api.status_code == 409 and "recovery from backup" in api.json()["detail"]
    assert "recovery from backup" in " ".join(str(m) for m in get_messages(admin.wsgi_request))
    assert Workload.objects.filter(pk=workload.pk).exists()
    # Once it has ended, the workload is removed as any other.
    BackupRecovery.objects.filter(pk=recovery.pk).update(state=BackupRecovery.State.FAILED)
    deploys.remove_workload(workload=workload)
    assert not Workload.objects.filter(pk=workload.pk).exists()


def test_the_page_delete_waits_for_a_queued_recovery_which_then_restores(
    client, operator, copy_of, identity
):
    row, volume = copy_of
    workload = row.workload
    before = describe(volume)
    target = BackupTarget.objects.get(pk=row.target_id)
    recovery = disaster.request_recovery(target=target, key=row.remote_key,
                                         identity=str(identity), into=workload, queued=False)
    assert recovery.onto_existing
    client.force_login(operator)

    refused = client.post(f"/workloads/{workload.pk}/delete", {"confirm": workload.path})
    result = disaster.run_recovery(recovery)

    assert refused.status_code == 409
    recovery.refresh_from_db()
    assert recovery.state == "succeeded", recovery.failure_text
    assert result.workload.pk == workload.pk and not result.created
    assert describe(volume) == before


def test_a_recovery_onto_a_workload_deleted_meanwhile_fails_and_never_recreates_it(
    copy_of, identity
):
    import shutil

    row, volume = copy_of
    workload = row.workload
    path = (workload.stage.project.slug, workload.stage.slug, workload.slug)
    target = BackupTarget.objects.get(pk=row.target_id)
    recovery = disaster.request_recovery(target=target, key=row.remote_key,
                                         identity=str(identity), into=workload, queued=False)
    # The delete came first: it found no recovery yet (request_recovery takes no lock).
    workload.delete()
    shutil.rmtree(volume)  # the operator cleared its files too: re-creating it would work
    recovery.refresh_from_db()
    assert recovery.into_id is None

    assert disaster.run_recovery(recovery) is None

    recovery.refresh_from_db()
    assert (recovery.state, recovery.failure_code, recovery.identity_encrypted) == (
        "failed", "workload_gone", "")
    assert not Workload.objects.filter(stage__project__slug=path[0], stage__slug=path[1],
                                       slug=path[2]).exists()
    assert recovery.snapshot_id is None and leftovers() == []
