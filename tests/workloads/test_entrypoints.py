"""The `deploy` command, the task and the admin-facing helpers all go through dispatch()."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from engine import deploys, tasks
from workloads.models import DeployRecord

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]


@pytest.fixture
def dispatch_calls(monkeypatch) -> list[dict]:
    """Record every dispatch() call, then run the real one."""
    calls: list[dict] = []
    real = deploys.dispatch

    def recording(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(deploys, "dispatch", recording)
    return calls


def test_the_deploy_command_goes_through_dispatch(docker, current_tag, workload, dispatch_calls):
    out = io.StringIO()
    call_command("deploy", str(workload), stdout=out)

    assert [c["workload"].pk for c in dispatch_calls] == [workload.pk]
    assert dispatch_calls[0]["reason"] == DeployRecord.Reason.MANUAL
    record = workload.deploys.get()
    assert record.outcome == DeployRecord.Outcome.SUCCEEDED
    assert record.pinned_reference in out.getvalue()


def test_the_deploy_command_reports_a_failure(workload, dispatch_calls, monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/closed.sock")
    with pytest.raises(CommandError, match="The Docker engine is unreachable"):
        call_command("deploy", str(workload.pk), stdout=io.StringIO())
    assert len(dispatch_calls) == 1
    assert workload.deploys.get().failure_code == DeployRecord.Failure.ENGINE_UNREACHABLE


@pytest.mark.parametrize("ref", ["999999", "a/b", "no/such/workload"])
def test_the_deploy_command_refuses_unknown_workloads(db, ref, dispatch_calls):
    with pytest.raises(CommandError):
        call_command("deploy", ref, stdout=io.StringIO())
    assert dispatch_calls == []
    assert not DeployRecord.objects.exists()


def test_the_task_goes_through_dispatch_once(docker, current_tag, workload, dispatch_calls):
    record = DeployRecord.objects.create(
        workload=workload, reason=DeployRecord.Reason.API, source_kind="image"
    )

    tasks.run_deploy(record.pk)
    tasks.run_deploy(record.pk)  # a duplicate delivery finds the row already claimed

    assert len(dispatch_calls) == 1
    assert dispatch_calls[0]["record"].pk == record.pk
    record.refresh_from_db()
    assert record.outcome == DeployRecord.Outcome.SUCCEEDED
    assert record.started and record.finished


def test_the_task_ignores_a_deleted_deploy(workload, dispatch_calls):
    record = DeployRecord.objects.create(workload=workload, reason="api", source_kind="image")
    workload.delete()
    tasks.run_deploy(record.pk)
    assert dispatch_calls == []


def test_request_deploy_queues_then_runs_on_commit(docker, current_tag, workload, dispatch_calls):
    user = User.objects.create_user("deployer")
    record = deploys.request_deploy(workload=workload, reason="manual", user=user)
    record.refresh_from_db()
    # Sync task mode: the task ran when the surrounding (auto)commit happened.
    assert record.outcome == DeployRecord.Outcome.SUCCEEDED
    assert record.user == user
    assert len(dispatch_calls) == 1


def test_createadmin_makes_one_operator_and_prints_the_password_once(db):
    out = io.StringIO()
    call_command("createadmin", stdout=out)
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.groups.filter(name="operators").exists()
    password = out.getvalue().split("after logging in): ")[1].strip()
    assert admin.check_password(password)

    again = io.StringIO()
    call_command("createadmin", "--if-none", stdout=again)
    assert User.objects.filter(is_superuser=True).count() == 1
    assert "Password" not in again.getvalue()


@pytest.mark.parametrize("command", ["recover", "recover_restores"])
def test_recover_finds_nothing_to_do_under_either_name(db, settings, command):
    out = io.StringIO()
    call_command(command, stdout=out)
    assert "Nothing was interrupted." in out.getvalue()


def test_recover_restores_refuses_journals_it_cannot_read(db, settings):
    journal_dir = settings.DATA_DIR / "restore-journal"
    journal_dir.mkdir(exist_ok=True)
    (journal_dir / "workload-1-job-1.json").write_text("{}")
    try:
        with pytest.raises(CommandError, match="cannot be read"):
            call_command("recover", stdout=io.StringIO())
    finally:
        (journal_dir / "workload-1-job-1.json").unlink()
