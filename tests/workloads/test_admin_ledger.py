"""The deploy ledger in the admin: read-only, filterable."""

from __future__ import annotations

import pytest

from workloads.models import DeployRecord

pytestmark = pytest.mark.django_db


@pytest.fixture
def ledger(make_workload):
    web, db = make_workload(), make_workload()
    ok = DeployRecord.open(workload=web, reason=DeployRecord.Reason.API)  # finished below
    DeployRecord.objects.filter(pk=ok.pk).update(outcome="succeeded", pinned_reference="r@sha256:1")
    bad = DeployRecord.open(workload=db, reason=DeployRecord.Reason.MANUAL)
    DeployRecord.objects.filter(pk=bad.pk).update(outcome="failed", failure_code="pull_failed")
    return web, db, ok, bad


def test_it_lists_and_filters_the_ledger(admin_client, ledger):
    web, db, ok, bad = ledger
    base = "/admin/workloads/deployrecord/"
    for query, shown, hidden in (
        (f"?workload__id__exact={web.pk}", ok, bad),
        ("?outcome__exact=failed", bad, ok),
        ("?reason__exact=api", ok, bad),
    ):
        response = admin_client.get(base + query)
        assert response.status_code == 200, query
        ids = {row.pk for row in response.context["cl"].result_list}
        assert shown.pk in ids and hidden.pk not in ids, query


def test_it_is_read_only(admin_client, ledger):
    _web, _db, ok, _bad = ledger
    assert admin_client.get("/admin/workloads/deployrecord/add/").status_code == 403
    page = admin_client.get(f"/admin/workloads/deployrecord/{ok.pk}/change/")
    assert page.status_code == 200
    assert b'name="outcome"' not in page.content  # shown, not editable
    admin_client.post(f"/admin/workloads/deployrecord/{ok.pk}/change/", {"outcome": "failed"})
    ok.refresh_from_db()
    assert ok.outcome == "succeeded"
