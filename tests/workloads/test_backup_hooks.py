"""A workload's backup hook settings: the model's rules, the API and the admin."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from tests.workloads.test_admin import change_form
from tests.workloads.test_api_workloads import payload, stage  # noqa: F401 - a fixture
from workloads.models import EnvVar, HookFailure, Workload
from workloads.models.workloads import HOOK_TIMEOUT_DEFAULT, HOOK_TIMEOUT_MAX

pytestmark = pytest.mark.django_db


def test_it_defaults_to_no_hooks_five_minutes_and_abort(workload):
    assert workload.pre_backup_hook == workload.post_backup_hook == ""
    assert workload.backup_hook_timeout == HOOK_TIMEOUT_DEFAULT == 300
    assert workload.pre_hook_failure == HookFailure.ABORT
    assert not workload.has_backup_hooks


@pytest.mark.parametrize(("field", "value"), [
    ("backup_hook_timeout", 0),
    ("backup_hook_timeout", HOOK_TIMEOUT_MAX + 1),
    ("pre_hook_failure", "ignore"),
    ("pre_backup_hook", "pg_dump\x00 -f x"),
    ("post_backup_hook", "x" * 2001),
])
def test_clean_refuses_bad_hook_settings(workload, field, value):
    setattr(workload, field, value)
    with pytest.raises(ValidationError) as caught:
        workload.clean()
    assert field in caught.value.message_dict


def test_clean_empties_a_blank_command(workload):
    workload.pre_backup_hook = "   \n "
    workload.clean()
    assert workload.pre_backup_hook == ""


def test_it_sets_and_shows_hooks_through_the_api(api_as, operator, stage):  # noqa: F811
    client = api_as(operator)
    body = payload(stage, pre_backup_hook="pg_dump -f /data/dump.sql",
                   post_backup_hook="rm /data/dump.sql", backup_hook_timeout=60,
                   pre_hook_failure="continue")

    r = client.post("/api/workloads", body, format="json")

    assert r.status_code == 201, r.json()
    workload = Workload.objects.get(pk=r.json()["id"])
    assert (workload.pre_backup_hook, workload.post_backup_hook) == (
        "pg_dump -f /data/dump.sql", "rm /data/dump.sql")
    assert (workload.backup_hook_timeout, workload.pre_hook_failure) == (60, "continue")
    shown = client.get(f"/api/workloads/{workload.pk}").json()
    assert shown["pre_backup_hook"] == "pg_dump -f /data/dump.sql"
    assert shown["backup_hook_timeout"] == 60 and shown["pre_hook_failure"] == "continue"

    r = client.patch(f"/api/workloads/{workload.pk}", {"pre_hook_failure": "abort"},
                     format="json")

    assert r.status_code == 200, r.json()
    workload.refresh_from_db()
    assert workload.pre_hook_failure == "abort"
    assert workload.pre_backup_hook == "pg_dump -f /data/dump.sql"


@pytest.mark.parametrize(("field", "value"), [
    ("backup_hook_timeout", 0),
    ("backup_hook_timeout", 3601),
    ("backup_hook_timeout", "soon"),
    ("pre_hook_failure", "ignore"),
    ("pre_backup_hook", "x" * 2001),
])
def test_the_api_refuses_bad_hook_settings_and_changes_nothing(
    api_as, operator, workload, field, value
):
    r = api_as(operator).patch(f"/api/workloads/{workload.pk}", {field: value}, format="json")

    assert r.status_code == 400
    assert field in r.json()
    workload.refresh_from_db()
    assert (workload.pre_backup_hook, workload.backup_hook_timeout,
            workload.pre_hook_failure) == ("", 300, "abort")


def test_a_viewer_cannot_change_hooks(api_as, viewer, workload):
    r = api_as(viewer).patch(f"/api/workloads/{workload.pk}", {"pre_backup_hook": "id"},
                             format="json")

    assert r.status_code == 403
    workload.refresh_from_db()
    assert workload.pre_backup_hook == ""


def test_the_admin_edits_hooks(admin_client, workload):
    env = EnvVar(workload=workload, name="API_TOKEN")
    env.set_value("s3cret-value", secret=True)
    env.save()
    data = change_form(workload, env, value="") | {
        "pre_backup_hook": "pg_dump -f /data/dump.sql", "backup_hook_timeout": "30",
        "pre_hook_failure": "continue",
    }

    r = admin_client.post(f"/admin/workloads/workload/{workload.pk}/change/", data)

    assert r.status_code == 302, r.context and r.context["errors"]
    workload.refresh_from_db()
    assert workload.pre_backup_hook == "pg_dump -f /data/dump.sql"
    assert (workload.backup_hook_timeout, workload.pre_hook_failure) == (30, "continue")
    page = admin_client.get(f"/admin/workloads/workload/{workload.pk}/change/")
    assert b"Backup hooks" in page.content


def test_the_admin_refuses_a_timeout_out_of_bounds(admin_client, workload):
    env = EnvVar(workload=workload, name="API_TOKEN")
    env.set_value("s3cret-value", secret=True)
    env.save()
    data = change_form(workload, env, value="") | {"backup_hook_timeout": "0"}

    r = admin_client.post(f"/admin/workloads/workload/{workload.pk}/change/", data)

    assert r.status_code == 200
    workload.refresh_from_db()
    assert workload.backup_hook_timeout == 300


def test_setting_a_hook_takes_the_permission_to_deploy(api_as, workload):
    from django.contrib.auth.models import Permission, User

    editor = User.objects.create_user("eddie-editor", password="x")
    editor.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="workloads", codename__in=["change_workload", "view_workload"]))
    api = api_as(editor)
    url = f"/api/workloads/{workload.pk}"
    refused = api.patch(url, {"pre_backup_hook": "env > /data/stolen.txt"}, format="json")
    assert refused.status_code == 403
    workload.refresh_from_db()
    assert workload.pre_backup_hook == ""
    assert api.patch(url, {"replicas": 2}, format="json").status_code == 200  # the rest: yes
    editor.user_permissions.add(Permission.objects.get(codename="deploy_workload"))
    editor = User.objects.get(pk=editor.pk)  # a fresh permission cache
    answer = api_as(editor).patch(url, {"pre_backup_hook": "sync"}, format="json")
    assert answer.status_code == 200, answer.content
