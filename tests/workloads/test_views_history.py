"""The deploy history panel on the detail page and its rollback POST."""

from __future__ import annotations

import pytest
from django.test import Client

from engine import deploys
from tests.conftest import move_current_tag
from workloads.models import DeployRecord, Workload

Outcome, Reason = DeployRecord.Outcome, DeployRecord.Reason
PINNED = "127.0.0.1:5000/berth-test/httpd@sha256:" + "cd" * 32


def ledger_row(workload: Workload, *, outcome=Outcome.SUCCEEDED, pinned=PINNED, **fields):
    record = DeployRecord.open(workload=workload, reason=Reason.MANUAL)
    DeployRecord.objects.filter(pk=record.pk).update(
        outcome=outcome, pinned_reference=pinned, **fields
    )
    return record


def as_user(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def rollback(client: Client, workload: Workload, deploy_id, htmx: bool = True, **choices):
    headers = {"HX-Request": "true"} if htmx else {}
    return client.post(
        f"/workloads/{workload.pk}/rollback", {"deploy_id": deploy_id, **choices},
        headers=headers,
    )


@pytest.mark.django_db
def test_the_panel_lists_deploys_with_rollback_only_on_earlier_successes(operator, workload):
    older = ledger_row(workload)
    failed = ledger_row(workload, outcome=Outcome.FAILED, pinned="", failure_code="pull_failed")
    current = ledger_row(workload)

    html = as_user(operator).get(f"/workloads/{workload.pk}/").content.decode()

    assert f'id="rollback-dialog-{older.pk}"' in html
    assert f'id="rollback-dialog-{current.pk}"' not in html
    assert f'id="rollback-dialog-{failed.pk}"' not in html
    assert str(DeployRecord.Failure.PULL_FAILED.label) in html
    assert "httpd@sha256:" + "cd" * 6 in html  # the short reference


@pytest.mark.django_db
def test_a_viewer_sees_the_history_without_rollback_buttons(viewer, workload):
    ledger_row(workload)
    ledger_row(workload)
    html = as_user(viewer).get(f"/workloads/{workload.pk}/").content.decode()
    assert 'id="deploy-history"' in html
    assert "rollback-dialog" not in html


@pytest.mark.django_db
def test_the_panel_says_when_there_are_no_deploys(viewer, workload):
    html = as_user(viewer).get(f"/workloads/{workload.pk}/").content.decode()
    assert "No deploys yet." in html


@pytest.mark.django_db
@pytest.mark.parametrize(("who", "status"), [("viewer", 403), ("outsider", 403)])
def test_rollback_needs_the_permission(request, workload, who, status):
    target = ledger_row(workload)
    before = DeployRecord.objects.count()
    response = rollback(as_user(request.getfixturevalue(who)), workload, target.pk)
    assert response.status_code == status
    assert DeployRecord.objects.count() == before


@pytest.mark.django_db
def test_rollback_sends_anonymous_users_to_log_in(workload):
    target = ledger_row(workload)
    response = rollback(Client(), workload, target.pk)
    assert response.status_code == 302 and "/login/" in response["Location"]


@pytest.mark.django_db
def test_rollback_refuses_get(operator, workload):
    assert as_user(operator).get(f"/workloads/{workload.pk}/rollback").status_code == 405


@pytest.mark.django_db
def test_rollback_to_another_workloads_deploy_is_404(operator, make_workload):
    mine, theirs = make_workload(), make_workload()
    foreign = ledger_row(theirs)
    assert rollback(as_user(operator), mine, foreign.pk).status_code == 404
    assert not mine.deploys.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("deploy_id", ["", "x", "0"])
def test_rollback_needs_a_valid_deploy_id(operator, workload, deploy_id):
    assert rollback(as_user(operator), workload, deploy_id).status_code == 400
    assert not workload.deploys.exists()


@pytest.mark.django_db
def test_a_refused_rollback_shows_why_and_changes_nothing(operator, workload):
    failed = ledger_row(workload, outcome=Outcome.FAILED, pinned="")
    before = DeployRecord.objects.count()

    response = rollback(as_user(operator), workload, failed.pk)

    assert response.status_code == 200
    assert "only a successful deploy can be rolled back to" in response.content.decode()
    assert DeployRecord.objects.count() == before


@pytest.mark.django_db
def test_a_refused_rollback_without_htmx_redirects_with_a_message(operator, workload):
    failed = ledger_row(workload, outcome=Outcome.FAILED, pinned="")
    client = as_user(operator)
    response = rollback(client, workload, failed.pk, htmx=False)
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert "only a successful deploy can be rolled back to" in page


@pytest.mark.django_db
@pytest.mark.usefixtures("commits_as_in_production")
def test_a_rollback_from_the_page_replays_the_pinned_digest(
    docker, current_tag, operator, workload
):
    first = deploys.dispatch(workload=workload, reason=Reason.MANUAL)
    move_current_tag("v2")
    deploys.dispatch(workload=workload, reason=Reason.MANUAL)

    # The code only: the answer is the refreshed panels (with the configuration too, the
    # whole page reloads: tests/workloads/test_api_rollback.py).
    response = rollback(as_user(operator), workload, first.pk, restore="code")

    assert response.status_code == 200
    newest = workload.deploys.first()
    assert (newest.reason, newest.outcome, newest.rolled_back_from_id) == (
        Reason.ROLLBACK, Outcome.SUCCEEDED, first.pk
    )
    assert newest.user == operator
    workload.refresh_from_db()
    assert workload.running_reference == first.pinned_reference
    html = response.content.decode()
    assert 'id="deploy-history"' in html and 'hx-swap-oob="true"' in html
