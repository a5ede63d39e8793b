"""Rollback of code and configuration (issue #15): what a deploy records, the diff, setting
it back, and the secret versions it keeps and prunes."""

from __future__ import annotations

import io
import json
import socket
import subprocess

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import override_settings

from engine import deploys, rollbacks
from lib import runtime
from tests.fixtures import images
from workloads import configuration
from workloads.models import (
    DeployInProgress,
    DeployRecord,
    EnvVar,
    PortMapping,
    SecretVersion,
    Workload,
)

pytestmark = pytest.mark.django_db
Reason, Outcome, Restored = DeployRecord.Reason, DeployRecord.Outcome, DeployRecord.RollbackRestored
EVERY_ADDRESS = "0.0.0.0"  # noqa: S104 - an address a port is recorded with, never bound here
OLD_SECRET, NEW_SECRET = "old-secret-4b1d7e", "new-secret-9c2a55"  # noqa: S105 - under test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_env(workload: Workload, name: str, value: str, *, secret: bool = False) -> None:
    env, _created = EnvVar.objects.get_or_create(workload=workload, name=name)
    env.set_value(value, secret=secret)
    env.save()


def configure(workload: Workload, *, image: str, mode: str, token: str, port: int | None,
              replicas: int) -> Workload:
    """Set what the issue's test changes between two deploys: image, env, ports, replicas."""
    workload.ports.all().delete()
    Workload.objects.filter(pk=workload.pk).update(image=image, replicas=replicas)
    workload.refresh_from_db()
    set_env(workload, "MODE", mode)
    set_env(workload, "TOKEN", token, secret=True)
    if port is not None:
        PortMapping.objects.create(workload=workload, host_port=port, container_port=80)
    return workload


def recorded(workload: Workload, *, pinned: str = f"{images.HTTPD}@sha256:{'a' * 64}",
             outcome: str = Outcome.SUCCEEDED) -> DeployRecord:
    """A finished ledger row that recorded the workload's configuration as it is now,
    without running a deploy (what the deploy body records, engine/locked/deploy.py)."""
    record = DeployRecord.open(workload=workload, reason=Reason.MANUAL)
    configuration.record(workload, record)
    DeployRecord.objects.filter(pk=record.pk).update(outcome=outcome, pinned_reference=pinned)
    record.refresh_from_db()
    return record


def inspect(container_id: str) -> dict:
    out = subprocess.run(["docker", "inspect", container_id], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)[0]


# --- the test, on the real engine --------------------------------------

@pytest.mark.usefixtures("commits_as_in_production")
def test_a_rollback_with_configuration_runs_the_old_env_and_ports_and_stays_there(
        docker, workload):
    old_port = free_port()
    configure(workload, image=images.HTTPD_V1, mode="one", token=OLD_SECRET, port=old_port,
              replicas=1)
    first = deploys.dispatch(workload=workload, reason=Reason.MANUAL)
    assert first.outcome == Outcome.SUCCEEDED, first.failure_code
    configure(workload, image=images.HTTPD_V2, mode="two", token=NEW_SECRET, port=None,
              replicas=2)
    second = deploys.dispatch(workload=workload, reason=Reason.MANUAL)
    assert second.outcome == Outcome.SUCCEEDED, second.failure_code
    assert len(runtime.list_containers(workload.pk)) == 2

    rolled = deploys.rollback(workload=workload, deploy_id=first.pk)

    assert rolled.outcome == Outcome.SUCCEEDED, rolled.failure_code
    assert rolled.rollback_restored == Restored.CODE_CONFIGURATION
    [container] = runtime.list_containers(workload.pk)
    found = inspect(container.id)
    assert {"MODE=one", f"TOKEN={OLD_SECRET}"} <= set(found["Config"]["Env"])
    assert found["HostConfig"]["PortBindings"] == {
        "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(old_port)}]}
    assert found["Config"]["Image"] == first.pinned_reference
    workload.refresh_from_db()
    assert workload.image == first.pinned_reference
    assert workload.replicas == 1
    assert EnvVar.objects.get(workload=workload, name="TOKEN").get_value() == OLD_SECRET
    # The next plain deploy does not go forward by surprise.
    after = deploys.dispatch(workload=workload, reason=Reason.MANUAL)
    assert after.outcome == Outcome.SUCCEEDED, after.failure_code
    assert after.pinned_reference == first.pinned_reference != second.pinned_reference
    # The rollback's own row recorded what it ran: the first deploy's configuration.
    rolled.refresh_from_db()
    assert configuration.diff(rolled.configuration, first.configuration) == []


@pytest.mark.usefixtures("commits_as_in_production")
def test_a_code_only_rollback_keeps_todays_configuration(docker, workload):
    configure(workload, image=images.HTTPD_V1, mode="one", token=OLD_SECRET, port=None,
              replicas=1)
    first = deploys.dispatch(workload=workload, reason=Reason.MANUAL)
    configure(workload, image=images.HTTPD_V2, mode="two", token=NEW_SECRET, port=None,
              replicas=1)
    deploys.dispatch(workload=workload, reason=Reason.MANUAL)

    call_command("rollback", str(workload.pk), str(first.pk), "--no-configuration",
                 stdout=io.StringIO())

    rolled = workload.deploys.first()
    assert (rolled.outcome, rolled.rollback_restored) == (Outcome.SUCCEEDED, Restored.CODE)
    [container] = runtime.list_containers(workload.pk)
    found = inspect(container.id)
    assert found["Config"]["Image"] == first.pinned_reference
    assert {"MODE=two", f"TOKEN={NEW_SECRET}"} <= set(found["Config"]["Env"])
    workload.refresh_from_db()
    assert workload.image == images.HTTPD_V2


# --- what a deploy records ---------------------------------------------------------

def test_the_record_holds_no_secret_and_shares_one_version_per_value(workload):
    configure(workload, image=images.HTTPD_V1, mode="one", token=OLD_SECRET, port=None,
              replicas=1)
    first, second = recorded(workload), recorded(workload)
    set_env(workload, "TOKEN", NEW_SECRET, secret=True)
    third = recorded(workload)

    token = next(e for e in first.configuration["env"] if e["name"] == "TOKEN")
    assert set(token) == {"name", "secret", "version", "fingerprint"}
    assert OLD_SECRET not in json.dumps(first.configuration)
    assert {"name": "MODE", "value": "one"} in first.configuration["env"]
    versions = SecretVersion.objects.filter(workload=workload)
    assert versions.count() == 2
    assert set(first.secret_versions.all()) == set(second.secret_versions.all())
    assert third.secret_versions.get().get_value() == NEW_SECRET
    assert first.configuration["settings"]["replicas"] == 1


def test_pruned_rows_take_the_secret_versions_only_they_used(workload):
    configure(workload, image=images.HTTPD_V1, mode="one", token=OLD_SECRET, port=None,
              replicas=1)
    with override_settings(BERTH_DEPLOY_HISTORY_KEEP=2):
        recorded(workload)
        set_env(workload, "TOKEN", NEW_SECRET, secret=True)
        recorded(workload)
        assert SecretVersion.objects.filter(workload=workload).count() == 2
        recorded(workload)  # the old value's row is kept: two finished rows remain
        assert SecretVersion.objects.filter(workload=workload).count() == 2
        DeployRecord.open(workload=workload, reason=Reason.MANUAL)  # prunes the oldest

    [kept] = SecretVersion.objects.filter(workload=workload)
    assert kept.get_value() == NEW_SECRET


def test_a_workload_is_deleted_with_its_secret_versions(workload):
    set_env(workload, "TOKEN", OLD_SECRET, secret=True)
    recorded(workload)
    workload.delete()
    assert not SecretVersion.objects.exists()


# --- the diff ------------------------------------------------------------------------

def test_the_diff_lists_exactly_what_changed_and_a_secret_only_as_changed(workload):
    port = free_port()
    configure(workload, image=images.HTTPD_V1, mode="one", token=OLD_SECRET, port=port,
              replicas=1)
    set_env(workload, "GONE", "x")
    target = recorded(workload)
    configure(workload, image=images.HTTPD_V2, mode="two", token=NEW_SECRET, port=None,
              replicas=2)
    EnvVar.objects.filter(workload=workload, name="GONE").delete()
    set_env(workload, "NEW", "y")
    Workload.objects.filter(pk=workload.pk).update(memory_limit_mib=64)
    workload.refresh_from_db()

    preview = rollbacks.preview(workload=workload, target=target)

    C = configuration.Change
    assert preview.changes == [
        C("setting", "replicas", "changed", label="replicas", current=2, target=1),
        C("setting", "memory_limit_mib", "changed", label="memory limit (MiB)", current=64,
          target=None),
        C("env", "GONE", "added", target="x"),
        C("env", "MODE", "changed", current="two", target="one"),
        C("env", "NEW", "removed", current="y"),
        C("env", "TOKEN", "changed", secret=True),
        C("port", f"127.0.0.1:{port}→80/tcp", "added", target=f"127.0.0.1:{port}→80/tcp"),
    ]
    assert (preview.configured, preview.code) == (images.HTTPD_V2, target.pinned_reference)
    assert preview.recorded and preview.missing_secrets == [] and preview.snapshot is None


def test_the_same_configuration_has_no_diff_and_code_is_compared_apart(workload):
    set_env(workload, "TOKEN", OLD_SECRET, secret=True)
    target = recorded(workload)
    assert rollbacks.preview(workload=workload, target=target).changes == []


# --- setting it back: refusals change nothing -----------------------------------------

def test_a_secret_whose_version_is_gone_blocks_unless_supplied(workload):
    configure(workload, image=images.HTTPD_V1, mode="one", token=OLD_SECRET, port=None,
              replicas=1)
    target = recorded(workload)
    configure(workload, image=images.HTTPD_V2, mode="two", token=NEW_SECRET, port=None,
              replicas=1)
    target.secret_versions.all().delete()
    rows = DeployRecord.objects.count()

    assert rollbacks.preview(workload=workload, target=target).missing_secrets == ["TOKEN"]
    with pytest.raises(ValidationError, match="TOKEN"):
        deploys.request_rollback(workload=workload, deploy_id=target.pk)
    workload.refresh_from_db()
    assert (workload.image, DeployRecord.objects.count()) == (images.HTTPD_V2, rows)
    assert EnvVar.objects.get(workload=workload, name="MODE").value == "two"

    record = deploys.request_rollback(workload=workload, deploy_id=target.pk,
                                      secrets={"TOKEN": "typed-again"})
    assert record.rollback_restored == Restored.CODE_CONFIGURATION
    assert EnvVar.objects.get(workload=workload, name="TOKEN").get_value() == "typed-again"
    assert EnvVar.objects.get(workload=workload, name="MODE").value == "one"
    workload.refresh_from_db()
    assert workload.image == target.pinned_reference


def test_a_value_for_a_name_that_is_no_secret_is_refused(workload):
    set_env(workload, "MODE", "one")
    target = recorded(workload)
    with pytest.raises(ValidationError, match="MODE: not a secret variable"):
        deploys.request_rollback(workload=workload, deploy_id=target.pk,
                                 secrets={"MODE": "x"})


def test_a_row_from_before_says_not_recorded_and_rolls_back_the_code_only(workload):
    target = DeployRecord.open(workload=workload, reason=Reason.MANUAL)
    DeployRecord.objects.filter(pk=target.pk).update(
        outcome=Outcome.SUCCEEDED, pinned_reference=f"{images.HTTPD}@sha256:{'c' * 64}")
    target.refresh_from_db()
    assert target.configuration is None

    preview = rollbacks.preview(workload=workload, target=target)
    assert (preview.recorded, preview.changes) == (False, [])
    with pytest.raises(deploys.RollbackRefused, match="was not recorded"):
        deploys.request_rollback(workload=workload, deploy_id=target.pk)
    assert workload.deploys.count() == 1

    record = deploys.request_rollback(workload=workload, deploy_id=target.pk,
                                      configuration=False)
    assert (record.reason, record.rollback_restored) == (Reason.ROLLBACK, Restored.CODE)
    workload.refresh_from_db()
    assert workload.image == images.HTTPD_CURRENT  # code only: the configured image stays


def test_a_recorded_configuration_todays_rules_refuse_is_not_set_back(workload):
    with override_settings(BERTH_PORT_ADDRESSES=[EVERY_ADDRESS]):
        PortMapping.objects.create(workload=workload, host_ip=EVERY_ADDRESS, host_port=free_port(),
                                   container_port=80)
        target = recorded(workload)
    workload.ports.all().delete()

    with pytest.raises(ValidationError, match="not allowed any more.*0.0.0.0"):
        deploys.request_rollback(workload=workload, deploy_id=target.pk)

    assert not workload.ports.exists()
    assert workload.deploys.count() == 1


def test_a_rollback_while_a_deploy_is_active_changes_no_configuration(workload):
    set_env(workload, "MODE", "one")
    target = recorded(workload)
    set_env(workload, "MODE", "two")
    DeployRecord.open(workload=workload, reason=Reason.API)

    with pytest.raises(DeployInProgress):
        deploys.request_rollback(workload=workload, deploy_id=target.pk)

    assert EnvVar.objects.get(workload=workload, name="MODE").value == "two"
    workload.refresh_from_db()
    assert workload.image == images.HTTPD_CURRENT


def test_the_command_refuses_a_gone_secret_and_a_missing_variable(workload, monkeypatch):
    monkeypatch.delenv("TOKEN", raising=False)
    set_env(workload, "TOKEN", OLD_SECRET, secret=True)
    target = recorded(workload)
    SecretVersion.objects.all().delete()

    with pytest.raises(CommandError, match="TOKEN"):
        call_command("rollback", str(workload.pk), str(target.pk), stdout=io.StringIO())
    with pytest.raises(CommandError, match="no such environment variable"):
        call_command("rollback", str(workload.pk), str(target.pk), "--secret", "TOKEN",
                     stdout=io.StringIO())
    assert workload.deploys.count() == 1


def test_a_setting_the_target_did_not_record_is_neither_listed_nor_changed(workload):
    """A field added to SETTINGS after the deploy ran: the rollback leaves it as it is."""
    target = recorded(workload)
    snapshot = target.configuration
    del snapshot["settings"]["memory_limit_mib"]
    DeployRecord.objects.filter(pk=target.pk).update(configuration=snapshot)
    target.refresh_from_db()
    Workload.objects.filter(pk=workload.pk).update(memory_limit_mib=64)
    workload.refresh_from_db()

    assert rollbacks.preview(workload=workload, target=target).changes == []
    deploys.request_rollback(workload=workload, deploy_id=target.pk)
    workload.refresh_from_db()
    assert workload.memory_limit_mib == 64


def test_the_health_check_is_recorded_and_set_back(workload):
    Workload.objects.filter(pk=workload.pk).update(health_command="true", health_retries=5)
    workload.refresh_from_db()
    target = recorded(workload)
    Workload.objects.filter(pk=workload.pk).update(health_command="", health_retries=3)
    workload.refresh_from_db()

    changes = rollbacks.preview(workload=workload, target=target).changes
    assert [(c.name, c.current, c.target) for c in changes] == [
        ("health_command", "", "true"), ("health_retries", 3, 5)]
    deploys.request_rollback(workload=workload, deploy_id=target.pk)
    workload.refresh_from_db()
    assert (workload.health_command, workload.health_retries) == ("true", 5)
