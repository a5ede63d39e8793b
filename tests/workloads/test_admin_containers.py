"""The Container index in the admin: per workload, read-only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.workloads.stats_data import container, sample, ticks
from workloads.models import Container, ContainerStatsSample

pytestmark = pytest.mark.django_db


@pytest.fixture
def index(make_workload):
    web, db = make_workload(), make_workload()
    old = container(web, removed=timezone.now() - timedelta(hours=1))
    live = container(web)
    other = container(db)
    return web, db, old, live, other


def test_the_workload_page_lists_every_container_it_has_had_read_only(admin_client, index):
    web, _db, old, live, other = index

    page = admin_client.get(f"/admin/workloads/workload/{web.pk}/change/")

    assert page.status_code == 200
    html = page.content.decode()
    assert old.name in html and live.name in html and other.name not in html
    assert f"/admin/workloads/container/{live.pk}/change/" in html
    assert 'name="containers-0-name"' not in html  # shown, not editable
    assert 'name="containers-MAX_NUM_FORMS" value="0"' in html  # no row can be added


def test_the_index_lists_and_filters_by_workload_and_liveness(admin_client, index):
    web, db, old, live, other = index
    base = "/admin/workloads/container/"
    for query, shown, hidden in (
        (f"?workload__id__exact={web.pk}", {old, live}, {other}),
        (f"?workload__id__exact={db.pk}", {other}, {old, live}),
        ("?removed__isempty=1", {live, other}, {old}),
        ("?removed__isempty=0", {old}, {live, other}),
        (f"?q={live.docker_id[:20]}", {live}, {old, other}),
    ):
        response = admin_client.get(base + query)
        assert response.status_code == 200, query
        ids = {row.pk for row in response.context["cl"].result_list}
        assert {c.pk for c in shown} <= ids and not ids & {c.pk for c in hidden}, query
    assert live.docker_id[:12] in admin_client.get(base).content.decode()


def test_the_index_is_read_only_and_cannot_be_deleted(admin_client, index):
    web, _db, _old, live, _other = index
    sample(live, ticks(timezone.now(), every=15, count=3), cpu=1.0, memory=1)
    assert admin_client.get("/admin/workloads/container/add/").status_code == 403
    page = admin_client.get(f"/admin/workloads/container/{live.pk}/change/")
    assert page.status_code == 200 and b'name="name"' not in page.content
    assert admin_client.get(f"/admin/workloads/container/{live.pk}/delete/").status_code == 403
    admin_client.post("/admin/workloads/container/", {
        "action": "delete_selected", "_selected_action": [live.pk], "post": "yes",
    })
    assert Container.objects.filter(pk=live.pk).exists()
    assert ContainerStatsSample.objects.filter(container=live).count() == 3
