"""Copy rules through the API (/api/copy-rules) and the admin: permissions and bad input."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from backups.models import BackupTarget, CopyRule

pytestmark = pytest.mark.django_db

URL = "/api/copy-rules"


@pytest.fixture
def target(db, roots) -> BackupTarget:
    return BackupTarget.objects.create(name="nas", kind="directory", directory=str(roots),
                                       unencrypted=True)


@pytest.fixture
def keeper(operator):
    """An operator who may also manage copy rules."""
    operator.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="backups", codename__endswith="_copyrule"))
    return operator


def test_it_creates_lists_changes_and_deletes_a_workload_rule(api_as, keeper, target,
                                                              make_workload):
    workload = make_workload()
    api = api_as(keeper)

    made = api.post(URL, {"workload": workload.pk, "target": target.pk,
                          "kinds": ["scheduled", "manual", "manual"]}, format="json")

    assert made.status_code == 201, made.content
    body = made.json()
    assert (body["workload"], body["project"], body["target_name"]) == (workload.pk, None, "nas")
    assert body["kinds"] == ["manual", "scheduled"]  # one of each, in the usual order
    assert body["url"].endswith(f"/api/copy-rules/{body['id']}")
    assert [r["id"] for r in api.get(f"{URL}?workload={workload.pk}").json()["results"]] == [
        body["id"]]
    assert api.get(f"{URL}?workload={workload.pk + 1}").json()["results"] == []

    changed = api.patch(body["url"], {"kinds": ["imported"]}, format="json")
    assert changed.status_code == 200 and changed.json()["kinds"] == ["imported"]
    assert api.delete(body["url"]).status_code == 204
    assert not CopyRule.objects.exists()


def test_a_project_rule_is_the_default(api_as, keeper, target, make_workload):
    project = make_workload().stage.project
    made = api_as(keeper).post(URL, {"project": project.pk, "target": target.pk,
                                     "kinds": ["pre_deploy"]}, format="json")
    assert made.status_code == 201, made.content
    assert CopyRule.objects.get().project == project


@pytest.mark.parametrize("body, field", [
    ({"target": 999, "kinds": ["manual"]}, "target"),
    ({"kinds": ["manual"]}, "target"),
    ({"target": "TARGET", "kinds": []}, "kinds"),
    ({"target": "TARGET", "kinds": ["hourly"]}, "kinds"),
    ({"target": "TARGET", "kinds": "manual"}, "kinds"),
])
def test_bad_input_is_refused_and_changes_nothing(api_as, keeper, target, make_workload, body,
                                                  field):
    body = {"workload": make_workload().pk, **body}
    if body.get("target") == "TARGET":
        body["target"] = target.pk
    answer = api_as(keeper).post(URL, body, format="json")
    assert answer.status_code == 400 and field in answer.json(), answer.content
    assert not CopyRule.objects.exists()


def test_a_rule_has_one_owner_and_one_rule_per_owner_and_target(api_as, keeper, target,
                                                                make_workload):
    workload = make_workload()
    api = api_as(keeper)
    both = api.post(URL, {"workload": workload.pk, "project": workload.stage.project_id,
                          "target": target.pk, "kinds": ["manual"]}, format="json")
    neither = api.post(URL, {"target": target.pk, "kinds": ["manual"]}, format="json")
    unknown = api.post(URL, {"workload": 999, "target": target.pk, "kinds": ["manual"]},
                       format="json")
    assert (both.status_code, neither.status_code, unknown.status_code) == (400, 400, 400)
    assert "project or to a workload" in str(both.json()) and "workload" in unknown.json()
    assert not CopyRule.objects.exists()

    assert api.post(URL, {"workload": workload.pk, "target": target.pk, "kinds": ["manual"]},
                    format="json").status_code == 201
    twice = api.post(URL, {"workload": workload.pk, "target": target.pk, "kinds": ["scheduled"]},
                     format="json")
    assert twice.status_code == 400 and "already has a rule" in str(twice.json())
    assert CopyRule.objects.get().kinds == ["manual"]


def test_rules_need_their_own_permissions(api, api_as, operator, viewer, outsider, keeper,
                                          target, make_workload):
    rule = CopyRule.objects.create(workload=make_workload(), target=target, kinds=["manual"])
    assert api.get(URL).status_code in (401, 403)
    for user in (viewer, outsider):
        client = api_as(user)
        assert client.get(URL).status_code == 403
        assert client.post(URL, {}, format="json").status_code == 403
        assert client.delete(f"{URL}/{rule.pk}").status_code == 403
    assert api_as(keeper).get(f"{URL}/999").status_code == 404
    assert api_as(keeper).put(f"{URL}/{rule.pk}", {}, format="json").status_code == 405
    rule.refresh_from_db()
    assert rule.kinds == ["manual"]


def test_a_target_lists_its_keep_counts(api_as, operator, target):
    operator.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_backuptarget", "change_backuptarget"]))
    api = api_as(operator)
    changed = api.patch(f"/api/backup-targets/{target.pk}", {"keep_manual": 0}, format="json")
    assert changed.status_code == 200, changed.content
    assert (changed.json()["keep_manual"], changed.json()["keep_scheduled"]) == (0, 30)
    refused = api.patch(f"/api/backup-targets/{target.pk}", {"keep_manual": -1}, format="json")
    assert refused.status_code == 400 and "keep_manual" in refused.json()


# --- the admin -----------------------------------------------------------------------------

def test_the_admin_edits_rules(admin_client, target, make_workload):
    workload = make_workload()
    added = admin_client.post("/admin/backups/copyrule/add/", {
        "workload": workload.pk, "project": "", "target": target.pk,
        "kinds": ["pre_deploy", "manual"]})
    assert added.status_code == 302, added.content.decode()[:2000]
    rule = CopyRule.objects.get()
    assert (rule.workload, rule.kinds) == (workload, ["manual", "pre_deploy"])
    listing = admin_client.get("/admin/backups/copyrule/").content.decode()
    assert "Manual, Before deploy" in listing

    both = admin_client.post("/admin/backups/copyrule/add/", {
        "workload": workload.pk, "project": workload.stage.project_id, "target": target.pk,
        "kinds": ["manual"]})
    assert both.status_code == 200 and "not both" in both.content.decode()
    assert CopyRule.objects.count() == 1
