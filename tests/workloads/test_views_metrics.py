"""The metrics panel on a workload's page, and the fragment its window buttons fetch."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from tests.workloads.stats_data import MIB, container, deploy, sample, ticks
from tests.workloads.test_views import CLOSED_SOCKET, htmx_get, logged_in
from workloads.models import DeployRecord

pytestmark = pytest.mark.django_db


@pytest.fixture
def sampled(workload):
    """Twenty minutes of two containers' samples up to now, and a rollback ten minutes ago."""
    now = timezone.now()
    at = ticks(now, every=15, count=80)
    sample(container(workload), at, values=lambda c, t: (10.0 + t.minute % 3, 100 * MIB))
    sample(container(workload, replica=2), at, cpu=2.5, memory=28 * MIB)
    deploy(workload, at=now - timedelta(minutes=10), reason=DeployRecord.Reason.ROLLBACK)
    return workload


def svg_numbers(html: str) -> list[str]:
    """Every coordinate-bearing attribute value in the chart."""
    svg = html[html.index("<svg"):html.index("</svg>")]
    return re.findall(r'\s(?:d|x|y|x1|x2|y1|y2|cx|cy|viewBox|transform)="([^"]*)"', svg)


def test_the_page_shows_the_chart_legend_axes_and_current_values(
    client: Client, viewer, sampled, monkeypatch
):
    monkeypatch.setenv("DOCKER_HOST", CLOSED_SOCKET)

    html = logged_in(client, viewer).get(f"/workloads/{sampled.pk}/").content.decode()

    panel = html[html.index('<section id="metrics"'):]
    panel = panel[:panel.index("</section>")]
    assert 'data-window="1h"' in panel
    assert f'hx-get="/workloads/{sampled.pk}/metrics?window=1h"' in panel
    assert "every 15s" in panel
    assert 'aria-pressed="true"' in panel and panel.count('aria-pressed="false"') == 4
    for text in ("CPU (%)", "Memory (MiB)", "Time (UTC)", "Deploy", "Rollback", "Restore",
                 "CPU now", "Memory now"):
        assert text in panel, text
    assert re.search(r'data-metric="cpu">1[2-4]\.5 %<', panel)
    assert 'data-metric="memory">128.0 MiB<' in panel
    assert 'data-metric="containers">2<' in panel
    assert panel.count('class="series cpu"') == 1 and panel.count('class="series memory"') == 1
    assert 'data-points="80"' in panel
    assert panel.count('data-kind="rollback"') == 1
    assert "Rollback #" in panel  # the marker's tooltip


def test_the_panel_says_so_when_there_are_no_samples_yet(client, viewer, workload, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", CLOSED_SOCKET)

    html = logged_in(client, viewer).get(f"/workloads/{workload.pk}/").content.decode()

    assert "No CPU or memory samples in this window yet." in html
    assert "manage.py sample_stats" in html
    assert "<svg" not in html and "CPU now" not in html
    assert 'hx-trigger="every 15s' in html  # it keeps looking, and shows the first ones


def test_a_window_button_fetches_the_panel_for_that_window(client, viewer, sampled):
    r = htmx_get(logged_in(client, viewer), f"/workloads/{sampled.pk}/metrics?window=6h")

    assert r.status_code == 200
    html = r.content.decode()
    assert html.lstrip().startswith('<section id="metrics"')
    assert 'data-window="6h"' in html and 'data-step="30"' in html
    assert re.search(r'data-window="6h" aria-pressed="true"', html)
    assert f'hx-get="/workloads/{sampled.pk}/metrics?window=6h" hx-trigger' in html
    assert "CPU and memory over the last 6 hours" in html


@pytest.mark.parametrize("window", ["2h", "", "<script>"])
def test_an_unknown_window_is_a_bad_request(client, viewer, workload, window):
    r = logged_in(client, viewer).get(f"/workloads/{workload.pk}/metrics", {"window": window})
    assert r.status_code == 400
    assert b"<script>" not in r.content


def test_the_panel_needs_a_login_and_the_view_permission(client, outsider, workload):
    url = f"/workloads/{workload.pk}/metrics"
    r = client.get(url)
    assert r.status_code == 302 and r["Location"].startswith(settings.LOGIN_URL.join("//"))
    assert logged_in(client, outsider).get(url).status_code == 403
    assert client.post(url).status_code == 405


def test_an_unknown_workload_has_no_panel(client, viewer):
    assert logged_in(client, viewer).get("/workloads/999999/metrics").status_code == 404


def test_the_panel_renders_in_a_fixed_number_of_queries(
    client, viewer, make_workload, django_assert_num_queries
):
    web = make_workload()
    logged_in(client, viewer)

    def render() -> None:
        # 1 session, 2 user, 3 the user's own permissions, 4 their groups'
        # permissions, 5 the workload with its parents, 6 where its rollups
        # end (24 h is read from them), 7 the samples per bucket, 8 the
        # markers, 9 the newest tick's totals.
        with django_assert_num_queries(9):
            assert client.get(f"/workloads/{web.pk}/metrics?window=24h").status_code == 200

    render()
    now = timezone.now()
    for replica in range(1, 6):
        sample(container(web, replica=replica), ticks(now, every=15, count=100), cpu=1.0,
               memory=MIB)
        deploy(web, at=now - timedelta(minutes=replica))
    render()


def test_russian_labels_never_put_a_decimal_comma_into_the_chart(client, viewer, sampled):
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "ru"

    html = logged_in(client, viewer).get(f"/workloads/{sampled.pk}/metrics?window=15m")
    html = html.content.decode()

    assert 'lang="ru"' not in html  # a fragment, not a page
    assert re.search(r'data-metric="cpu">1[2-4],5 %<', html)  # a Russian number, outside
    paths = re.findall(r'\sd="([^"]*)"', html[html.index("<svg"):])
    assert len(paths) >= 2
    # Each token is a command with at most one x,y pair of dotted numbers: a
    # decimal comma would add a second comma to a pair.
    token = re.compile(r"[MLlhz]?(?:-?\d+(?:\.\d+)?(?:,-?\d+(?:\.\d+)?)?)?")
    assert all(token.fullmatch(t) for d in paths for t in d.split()), paths
    others = [v for v in svg_numbers(html) if v not in paths]
    assert others and not [v for v in others if "," in v]
