"""Rollback of code and configuration through the API and the pages: GET …/deploys/{id}/diff,
POST …/rollback with `configuration` and `secrets`, the rollback dialog, and no secret in
clear anywhere.

The queued deploys do not run here (their task is queued after a commit the
test's transaction never makes): tests/workloads/test_rollback_configuration.py
runs them on the real engine.
"""

from __future__ import annotations

import pytest
from django.test import Client

from tests.fixtures import images
from tests.workloads.test_rollback_configuration import (
    NEW_SECRET,
    OLD_SECRET,
    configure,
    recorded,
    set_env,
)
from tests.workloads.test_secrets import tables_containing
from workloads.models import DeployRecord, EnvVar, SecretVersion, Workload

pytestmark = pytest.mark.django_db
Outcome, Restored = DeployRecord.Outcome, DeployRecord.RollbackRestored


def changed_since(workload: Workload) -> DeployRecord:
    """A recorded deploy of the workload, after which its image, env and replicas changed."""
    configure(workload, image=images.HTTPD_V1, mode="one", token=OLD_SECRET, port=None,
              replicas=1)
    target = recorded(workload)
    configure(workload, image=images.HTTPD_V2, mode="two", token=NEW_SECRET, port=None,
              replicas=2)
    return target


def diff_url(workload: Workload, target: DeployRecord) -> str:
    return f"/api/workloads/{workload.pk}/deploys/{target.pk}/diff"


def post_rollback(client, workload: Workload, **body):
    return client.post(f"/api/workloads/{workload.pk}/rollback", body, format="json")


def as_user(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- the diff -----------------------------------------------------------------------

def test_the_diff_says_what_a_rollback_changes(api_as, operator, workload):
    target = changed_since(workload)

    response = api_as(operator).get(diff_url(workload, target))

    assert response.status_code == 200
    body = response.json()
    assert body["deploy"] == target.pk and body["configuration_recorded"] is True
    assert (body["configured"], body["code"]) == (images.HTTPD_V2, target.pinned_reference)
    assert body["missing_secrets"] == []
    assert (body["pre_deploy_snapshot"], body["snapshot_age_seconds"]) == (None, None)
    by_name = {c["name"]: c for c in body["changes"]}
    assert set(by_name) == {"replicas", "MODE", "TOKEN"}
    assert by_name["replicas"] | {"label": ""} == {
        "part": "setting", "name": "replicas", "label": "", "change": "changed",
        "secret": False, "current": 2, "target": 1}
    assert (by_name["MODE"]["current"], by_name["MODE"]["target"]) == ("two", "one")
    assert by_name["TOKEN"] == {"part": "env", "name": "TOKEN", "label": "",
                                "change": "changed", "secret": True, "current": None,
                                "target": None}


def test_the_diff_of_a_row_from_before_says_not_recorded(api_as, viewer, operator, workload):
    old = DeployRecord.open(workload=workload, reason=DeployRecord.Reason.MANUAL)
    body = api_as(operator).get(diff_url(workload, old)).json()
    assert (body["configuration_recorded"], body["changes"]) == (False, [])
    deploy = api_as(viewer).get(f"/api/deploys/{old.pk}").json()
    assert deploy["configuration_recorded"] is False


@pytest.mark.parametrize(("who", "status"), [(None, 401), ("outsider", 403), ("viewer", 403),
                                             ("operator", 200)])
def test_the_diff_permission_matrix(request, api, api_as, workload, who, status):
    target = recorded(workload)
    client = api_as(request.getfixturevalue(who)) if who else api
    assert client.get(diff_url(workload, target)).status_code == status


def test_the_diff_of_another_workloads_deploy_is_404(api_as, operator, make_workload):
    mine, theirs = make_workload(), make_workload()
    assert api_as(operator).get(diff_url(mine, recorded(theirs))).status_code == 404


# --- the rollback -----------------------------------------------------------------

def test_a_rollback_sets_the_configuration_back_by_default(api_as, operator, workload):
    target = changed_since(workload)

    response = post_rollback(api_as(operator), workload, deploy_id=target.pk)

    assert response.status_code == 202, response.content
    assert response.json()["rollback_restored"] == Restored.CODE_CONFIGURATION
    workload.refresh_from_db()
    assert (workload.image, workload.replicas) == (target.pinned_reference, 1)
    assert EnvVar.objects.get(workload=workload, name="TOKEN").get_value() == OLD_SECRET
    assert EnvVar.objects.get(workload=workload, name="MODE").value == "one"


def test_configuration_false_rolls_back_the_code_only(api_as, operator, workload):
    target = changed_since(workload)

    response = post_rollback(api_as(operator), workload, deploy_id=target.pk,
                             configuration=False)

    assert response.status_code == 202, response.content
    assert response.json()["rollback_restored"] == Restored.CODE
    workload.refresh_from_db()
    assert (workload.image, workload.replicas) == (images.HTTPD_V2, 2)


def test_a_gone_secret_is_refused_by_name_unless_supplied(api_as, operator, workload):
    target = changed_since(workload)
    target.secret_versions.all().delete()
    client = api_as(operator)

    refused = post_rollback(client, workload, deploy_id=target.pk)

    assert refused.status_code == 400
    assert "TOKEN" in refused.json()["secrets"][0]
    assert workload.deploys.count() == 1
    workload.refresh_from_db()
    assert workload.image == images.HTTPD_V2
    assert client.get(diff_url(workload, target)).json()["missing_secrets"] == ["TOKEN"]

    accepted = post_rollback(client, workload, deploy_id=target.pk,
                             secrets={"TOKEN": "typed-again-77"})
    assert accepted.status_code == 202, accepted.content
    assert EnvVar.objects.get(workload=workload, name="TOKEN").get_value() == "typed-again-77"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [({"data": "yes"}, 400, "data"), ({"configuration": "maybe"}, 400, "configuration"),
     ({"secrets": ["TOKEN"]}, 400, "secrets")],
    ids=["data-not-a-boolean", "configuration-not-a-boolean", "secrets-not-a-map"])
def test_bad_rollback_bodies_change_nothing(api_as, operator, workload, body, status, field):
    target = changed_since(workload)
    response = post_rollback(api_as(operator), workload, deploy_id=target.pk, **body)
    assert response.status_code == status
    assert field in response.json()
    assert workload.deploys.count() == 1
    workload.refresh_from_db()
    assert workload.image == images.HTTPD_V2


def test_a_configuration_rollback_to_a_row_from_before_is_409(api_as, operator, workload):
    old = DeployRecord.open(workload=workload, reason=DeployRecord.Reason.MANUAL)
    DeployRecord.objects.filter(pk=old.pk).update(
        outcome=Outcome.SUCCEEDED, pinned_reference=f"{images.HTTPD}@sha256:{'e' * 64}")
    client = api_as(operator)

    refused = post_rollback(client, workload, deploy_id=old.pk)
    assert refused.status_code == 409
    assert "not recorded" in refused.json()["detail"]
    assert post_rollback(client, workload, deploy_id=old.pk,
                         configuration=False).status_code == 202


@pytest.mark.parametrize(("who", "status"), [(None, 401), ("outsider", 403), ("viewer", 403)])
def test_a_rollback_needs_its_permission(request, api, api_as, workload, who, status):
    target = changed_since(workload)
    client = api_as(request.getfixturevalue(who)) if who else api
    assert post_rollback(client, workload, deploy_id=target.pk).status_code == status
    assert workload.deploys.count() == 1
    workload.refresh_from_db()
    assert workload.image == images.HTTPD_V2


# --- the pages -------------------------------------------------------------------

def test_the_dialog_shows_the_diff_and_the_choices(operator, workload):
    target = changed_since(workload)

    html = as_user(operator).get(
        f"/workloads/{workload.pk}/deploys/{target.pk}/rollback").content.decode()

    assert 'data-recorded="true"' in html
    assert 'data-name="TOKEN" data-change="changed"' in html
    assert 'data-name="MODE" data-change="changed"' in html
    assert 'name="restore" value="configuration"' in html
    assert 'name="restore" value="code"' in html
    assert 'name="secret-' not in html  # every secret's value is still kept


def test_the_dialog_asks_for_a_gone_secret_and_the_page_takes_it(operator, workload):
    target = changed_since(workload)
    target.secret_versions.all().delete()
    client = as_user(operator)

    html = client.get(f"/workloads/{workload.pk}/deploys/{target.pk}/rollback").content.decode()
    assert 'name="secret-TOKEN"' in html

    refused = client.post(f"/workloads/{workload.pk}/rollback", {"deploy_id": target.pk},
                          headers={"HX-Request": "true"})
    assert "TOKEN" in refused.content.decode() and workload.deploys.count() == 1
    done = client.post(f"/workloads/{workload.pk}/rollback",
                       {"deploy_id": target.pk, "restore": "configuration",
                        "secret-TOKEN": "from-the-page-31"}, headers={"HX-Request": "true"})
    # The settings and env the page shows changed too: it reloads, not only its panels.
    assert done.headers.get("HX-Refresh") == "true"
    rollback = workload.deploys.first()
    assert rollback.rollback_restored == Restored.CODE_CONFIGURATION
    assert EnvVar.objects.get(workload=workload, name="TOKEN").get_value() == "from-the-page-31"


def test_the_page_rolls_back_the_code_only_when_asked(operator, workload):
    target = changed_since(workload)
    panels = as_user(operator).post(f"/workloads/{workload.pk}/rollback",
                                    {"deploy_id": target.pk, "restore": "code"},
                                    headers={"HX-Request": "true"})
    assert "HX-Refresh" not in panels.headers  # only the panels change
    assert workload.deploys.first().rollback_restored == Restored.CODE
    workload.refresh_from_db()
    assert workload.image == images.HTTPD_V2


def test_the_dialog_needs_the_rollback_permission(viewer, workload):
    target = recorded(workload)
    url = f"/workloads/{workload.pk}/deploys/{target.pk}/rollback"
    assert as_user(viewer).get(url).status_code == 403


def test_the_deploy_page_shows_the_recorded_configuration_or_says_not_recorded(
        viewer, workload):
    target = changed_since(workload)
    old = DeployRecord.open(workload=workload, reason=DeployRecord.Reason.MANUAL)
    DeployRecord.objects.filter(pk=old.pk).update(outcome=Outcome.SUCCEEDED)
    client = as_user(viewer)

    page = client.get(f"/deploys/{target.pk}/").content.decode()
    assert 'data-env="MODE">MODE=one' in page and 'data-env="TOKEN"' in page
    assert "Configuration not recorded" in client.get(f"/deploys/{old.pk}/").content.decode()


# --- no secret in clear anywhere --------------------------------------------------------

def test_no_secret_value_reaches_the_database_the_api_or_a_page(
        api_as, operator, django_user_model, workload):
    target = changed_since(workload)
    set_env(workload, "TOKEN", NEW_SECRET, secret=True)
    later = recorded(workload)
    admin = django_user_model.objects.create_superuser("root", password="correct horse battery")
    client = as_user(admin)
    api = api_as(operator)
    api_responses = [
        api.get(diff_url(workload, target)), api.get(diff_url(workload, later)),
        api.get(f"/api/workloads/{workload.pk}/deploys"), api.get(f"/api/deploys/{target.pk}"),
        api.get(f"/api/workloads/{workload.pk}"),
        post_rollback(api, workload, deploy_id=target.pk),
    ]
    pages = [client.get(url) for url in (
        f"/workloads/{workload.pk}/", f"/workloads/{workload.pk}/deploys/{target.pk}/rollback",
        f"/workloads/{workload.pk}/deploys/{later.pk}/rollback", f"/deploys/{target.pk}/",
        f"/deploys/{later.pk}/", f"/admin/workloads/deployrecord/{target.pk}/change/",
    )]

    assert SecretVersion.objects.filter(workload=workload).count() == 2
    for response in api_responses + pages:
        assert response.status_code in (200, 202), response.request
        for secret in (OLD_SECRET, NEW_SECRET):
            assert secret.encode() not in response.content, response.request
    for secret in (OLD_SECRET, NEW_SECRET):
        assert tables_containing(secret) == [], secret
