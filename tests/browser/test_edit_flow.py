"""A new operator's day in the pages alone: a project, a stage and a workload made in the
forms, deployed, its app opened from its port's link, its env edited, and the workload
deleted with the typed confirmation. Screenshots go to /tmp/berth-edit-flow-*.png."""

from __future__ import annotations

import re
import socket
import urllib.request
import uuid

import pytest
from playwright.sync_api import Page, expect

from lib import runtime
from tests.browser.test_deploy_flow import DEPLOY_TIMEOUT_MS, log_in
from tests.fixtures import images
from workloads.models import EnvVar, Project, Workload

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOTS = "/tmp/berth-edit-flow"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def shot(page: Page, name: str) -> None:
    page.screenshot(path=f"{SHOTS}-{name}.png", full_page=True)


def test_it_runs_a_workload_from_the_pages_alone(page: Page, docker, operator):
    project_slug = f"p{uuid.uuid4().hex[:8]}"  # container names never clash between workers
    port = free_port()
    log_in(page, operator.username, "correct horse battery")

    page.get_by_role("link", name="New project").click()
    page.get_by_label("Name").fill("Shop")
    page.get_by_label("Slug").fill(project_slug)
    page.get_by_role("button", name="Save").click()
    expect(page).to_have_url(re.compile(r"/projects/$"))
    page.get_by_role("link", name="add a stage").click()
    page.get_by_label("Name").fill("Production")
    page.get_by_label("Slug").fill("prod")
    page.get_by_role("button", name="Save").click()
    shot(page, "1-projects")

    page.get_by_role("link", name="add a workload").click()
    page.get_by_label("Name", exact=True).fill("Web")
    page.get_by_label("Slug", exact=True).fill("web")
    page.get_by_label("Image reference").fill(images.HTTPD_V1)
    page.locator('input[name="ports-0-host_port"]').fill(str(port))
    page.locator('input[name="ports-0-container_port"]').fill("80")
    page.locator('input[name="env-0-name"]').fill("GREETING")
    page.locator('input[name="env-0-value"]').fill("hello")
    shot(page, "2-new-workload")
    page.get_by_role("button", name="Save").click()

    workload = Workload.objects.get(stage__project__slug=project_slug, slug="web")
    expect(page).to_have_url(re.compile(rf"/workloads/{workload.pk}/$"))
    page.get_by_role("button", name="Deploy").click()
    badge = page.locator("#state-panel [data-state]")
    expect(badge).to_have_attribute("data-state", "running", timeout=DEPLOY_TIMEOUT_MS)
    expect(page.locator("#configuration")).to_contain_text("GREETING")
    shot(page, "3-deployed")

    app_link = page.locator(f'#configuration a[href$=":{port}/"]')
    with page.context.expect_page() as opened:
        app_link.click()
    app = opened.value
    app.wait_for_load_state()
    expect(app.locator("h1")).to_have_text("berth-test httpd v1")
    app.close()

    page.get_by_role("link", name="Edit").click()
    page.locator('input[name="env-0-value"]').fill("bonjour")
    page.locator('fieldset[data-part="env"]').get_by_role("button", name="Add a row").click()
    page.locator('input[name="env-2-name"]').fill("API_KEY")
    page.locator('input[name="env-2-value"]').fill("s3cret-in-browser")
    page.locator('input[name="env-2-is_secret"]').check()
    page.get_by_role("button", name="Save").click()
    expect(page.locator('#configuration tr[data-env="GREETING"]')).to_contain_text("bonjour")
    expect(page.locator('#configuration tr[data-env="API_KEY"]')).to_contain_text("secret, set")
    assert "s3cret-in-browser" not in page.content()
    assert EnvVar.objects.get(workload=workload, name="API_KEY").get_value() == \
        "s3cret-in-browser"
    shot(page, "4-edited")

    page.get_by_role("link", name="Delete").click()
    page.get_by_label("Type the workload's path to confirm").fill("web")  # the slug alone
    page.get_by_role("button", name="Delete").click()
    expect(page.locator("form.edit")).to_contain_text("That is not the workload's path")
    assert Workload.objects.filter(pk=workload.pk).exists()
    page.get_by_label("Type the workload's path to confirm").fill(workload.path)
    shot(page, "5-confirm-delete")
    page.get_by_role("button", name="Delete").click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator(".messages")).to_contain_text("Deleted")
    shot(page, "6-deleted")
    assert not Workload.objects.filter(pk=workload.pk).exists()
    assert runtime.list_containers(workload.pk) == []
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)  # noqa: S310
    assert Project.objects.filter(slug=project_slug).exists()
