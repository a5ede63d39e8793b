"""The metrics panel in a real browser: the chart with data, the window buttons, the refresh."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from tests.browser.test_deploy_flow import log_in
from tests.workloads.stats_data import MIB, container, deploy, sample, ticks
from workloads.models import DeployRecord

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

REFRESH_TIMEOUT_MS = 25_000  # the panel refreshes every 15 s


def usage(c, t):
    """A busy replica with a daily wave and a shorter one on top, and a quiet replica."""
    minutes = t.timestamp() / 60
    day = math.sin(2 * math.pi * minutes / 1440)
    if c.replica == 1:
        cpu = 30 + 15 * day + 12 * math.sin(minutes / 9)
        return cpu, int((180 + 30 * day + 5 * math.sin(minutes / 23)) * MIB)
    return 4 + 2 * math.cos(minutes / 5), 48 * MIB


@pytest.fixture
def sampled(workload):
    """Seven days of history: a redeploy 25 minutes ago replaced the containers."""
    now = timezone.now()
    redeployed = now - timedelta(minutes=25)
    old = [container(workload, replica=r, removed=redeployed) for r in (1, 2)]
    new = [container(workload, replica=r, created=redeployed) for r in (1, 2)]
    recent = ticks(now, every=15, count=4 * 60 * 2)  # two hours at 15 s
    older = ticks(recent[0] - timedelta(seconds=300), every=300, count=12 * 24 * 7)
    for c in old:
        sample(c, older + [t for t in recent if t < redeployed], values=usage)
    for c in new:
        sample(c, [t for t in recent if t >= redeployed], values=usage)
    deploy(workload, at=now - timedelta(minutes=50), reason=DeployRecord.Reason.MANUAL)
    deploy(workload, at=redeployed, reason=DeployRecord.Reason.ROLLBACK)
    deploy(workload, at=now - timedelta(minutes=12), reason=DeployRecord.Reason.RESTORE,
           outcome=DeployRecord.Outcome.FAILED)
    return workload, new


def test_it_charts_the_history_and_switches_windows(page: Page, viewer, sampled, tmp_path):
    workload, _ = sampled
    log_in(page, viewer.username, "correct horse battery")
    page.goto(f"/workloads/{workload.pk}/")

    panel = page.locator("#metrics")
    expect(panel).to_have_attribute("data-window", "1h")
    chart = panel.locator("svg.chart")
    expect(chart).to_be_visible()
    expect(chart).to_have_attribute("data-step", "15")
    assert chart.locator("path.series.cpu").get_attribute("d").count("L") > 100
    expect(chart.locator(".marker")).to_have_count(3)
    expect(chart.locator(".marker[data-kind=rollback] title")).to_contain_text("Rollback #")
    expect(panel.locator("[data-metric=containers]")).to_have_text("2")
    expect(panel.get_by_text("CPU (%)").first).to_be_visible()
    page.screenshot(path=tmp_path / "metrics-1h.png", full_page=True)

    panel.get_by_role("button", name="6 hours").click()
    expect(panel).to_have_attribute("data-window", "6h")
    expect(panel.get_by_role("button", name="6 hours")).to_have_attribute("aria-pressed", "true")
    expect(panel.get_by_role("button", name="1 hour")).to_have_attribute("aria-pressed", "false")
    expect(panel.locator("svg.chart")).to_have_attribute("data-step", "30")

    panel.get_by_role("button", name="7 days").click()
    expect(panel).to_have_attribute("data-window", "7d")
    expect(panel.locator("svg.chart")).to_have_attribute("data-step", "900")
    points = int(panel.locator("svg.chart").get_attribute("data-points"))
    assert 600 < points <= 1000
    panel.screenshot(path=tmp_path / "metrics-7d.png")


def test_it_refreshes_while_the_page_is_open(page: Page, viewer, sampled):
    workload, new = sampled
    log_in(page, viewer.username, "correct horse battery")
    page.goto(f"/workloads/{workload.pk}/")
    panel = page.locator("#metrics")
    panel.get_by_role("button", name="15 minutes").click()
    expect(panel).to_have_attribute("data-window", "15m")
    expect(panel.locator("[data-metric=containers]")).to_have_text("2")

    # A third container starts and the sampler writes a tick: the panel shows it unprompted.
    third = container(workload, replica=3)
    at = [timezone.now()]
    sample(third, at, cpu=50.0, memory=64 * MIB)
    for c in new:
        sample(c, at, values=usage)

    expect(panel.locator("[data-metric=containers]")).to_have_text(
        "3", timeout=REFRESH_TIMEOUT_MS
    )
    expect(panel).to_have_attribute("data-window", "15m")  # the refresh keeps the window


def test_it_shows_an_empty_state_before_any_sample(page: Page, viewer, workload):
    log_in(page, viewer.username, "correct horse battery")
    page.goto(f"/workloads/{workload.pk}/")
    panel = page.locator("#metrics")
    expect(panel).to_contain_text("No CPU or memory samples in this window yet.")
    expect(panel.locator("svg")).to_have_count(0)
