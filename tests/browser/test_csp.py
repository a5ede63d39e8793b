"""Every page works under the strict Content-Security-Policy and reports no violation.

The browser reports each blocked inline script, handler, style or eval as a
`securitypolicyviolation` event on the page (and a console error); a listener
installed before any page script runs collects both.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect
from rest_framework.authtoken.models import Token

from backups.models import BackupPolicy, BackupRecovery
from engine import captures, deploys
from tests.backups.conftest import s3_target
from tests.browser.test_deploy_flow import log_in
from tests.snapshots.conftest import add_volume, fill
from tests.workloads.stats_data import MIB, container, sample, ticks
from web.csp import STRICT, SWAGGER
from workloads.models import DeployRecord

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery"

# The htmx:syntax:error events too: a trigger htmx cannot parse silently does nothing.
WATCH = """
window.__violations = [];
document.addEventListener("htmx:syntax:error", (e) => {
  const where = e.target.outerHTML.slice(0, 200);
  window.__violations.push(`htmx syntax ${e.detail.token || ""} ${e.detail.error} ${where}`);
});
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${where}`);
});
"""


def favicon(location: dict) -> bool:
    """Chromium asks for /favicon.ico by itself; Berth has none (a 404, not the page's fault)."""
    return location.get("url", "").endswith("/favicon.ico")


@pytest.fixture
def watched(page: Page) -> tuple[Page, list[str]]:
    """The page, and the problems it reported: CSP violations, console errors, page errors."""
    problems: list[str] = []
    page.add_init_script(WATCH)
    page.on("console", lambda m: m.type == "error" and not favicon(m.location)
            and problems.append(f"console: {m.text} {m.location}"))
    page.on("pageerror", lambda e: problems.append(f"error: {e}"))
    return page, problems


def visit(page: Page, problems: list[str], url: str, policy: str = STRICT) -> None:
    response = page.goto(url)
    assert response is not None and response.status == 200, (url, response and response.status)
    assert response.headers.get("content-security-policy") == policy, url
    page.wait_for_load_state("networkidle")
    check(page, problems, url)


def check(page: Page, problems: list[str], where: str) -> None:
    found = problems + [f"csp: {v}" for v in page.evaluate("() => window.__violations")]
    assert found == [], f"{where}: " + "\n".join(found)


@pytest.fixture
def busy_workload(docker, current_tag, make_workload):
    """A deployed workload with a volume, a snapshot, two deploys and an hour of metrics."""
    workload = make_workload(slug="csp")
    fill(add_volume(workload, "data", "/data"), {"index.html": b"hello"})
    for _ in range(2):
        assert deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL).outcome \
            == DeployRecord.Outcome.SUCCEEDED
    snapshot = captures.capture_snapshot(workload=workload)
    now = timezone.now()
    c = container(workload, replica=7, created=now - timedelta(hours=2))
    sample(c, ticks(now, every=15, count=240), cpu=12.5, memory=64 * MIB)
    return workload, snapshot


def test_every_page_works_under_the_policy(watched, admin_user, busy_workload):
    page, problems = watched
    workload, snapshot = busy_workload
    target = s3_target("berth-csp")
    policy = BackupPolicy.objects.create(workload=workload, every="daily")
    recovery = BackupRecovery.objects.create(target=target, remote_key="k", state="failed",
                                             failure_code="interrupted")

    visit(page, problems, "/login/")
    visit(page, problems, "/admin/login/")
    log_in(page, admin_user.username, "password")
    expect(page.get_by_role("heading", name="Workloads")).to_be_visible()

    for url in [
        "/", "/projects/", f"/projects/{workload.stage.project.pk}/",
        f"/stages/{workload.stage.pk}/", "/workloads/add", f"/workloads/{workload.pk}/edit",
        f"/workloads/{workload.pk}/delete", "/backups/targets/", "/backups/targets/add",
        f"/backups/targets/{target.pk}/", "/backups/policies/", "/backups/policies/add",
        f"/backups/policies/{policy.pk}/", "/backups/recover/",
        f"/backups/recoveries/{recovery.pk}/", "/notifications/", "/tokens/",
        "/admin/", f"/admin/workloads/workload/{workload.pk}/change/",
        "/admin/workloads/deployrecord/", "/admin/auth/user/add/",
        f"/admin/auth/user/{admin_user.pk}/change/",
    ]:
        visit(page, problems, url)
    # The admin's widgets: an autocomplete's dropdown (select2), a two-list chooser.
    visit(page, problems, f"/admin/backups/backuppolicy/{policy.pk}/change/")
    page.locator(".field-workload .select2-selection").click()
    expect(page.locator(".select2-results__option").first).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#id_targets_from")).to_be_visible()
    check(page, problems, "the admin's widgets")
    visit(page, problems, "/api/docs", SWAGGER)
    expect(page.locator(".swagger-ui .info")).to_be_visible()
    check(page, problems, "/api/docs")

    deploy = DeployRecord.objects.filter(workload=workload).order_by("pk").first()
    visit(page, problems, f"/deploys/{deploy.pk}/")
    visit(page, problems, f"/admin/workloads/deployrecord/{deploy.pk}/change/")

    visit(page, problems, f"/workloads/{workload.pk}/")
    # The panels htmx loads: the chart, the logs, the snapshots with their dialogs.
    expect(page.locator("#metrics svg.chart")).to_be_visible()
    expect(page.locator("#log-lines")).to_be_attached()
    page.locator("#metrics").get_by_role("button", name="6 hours").click()
    expect(page.locator("#metrics")).to_have_attribute("data-window", "6h")
    page.locator(f"#snapshot-{snapshot.pk}").get_by_role("button", name="Restore").click()
    dialog = page.locator(f"#snapshot-restore-{snapshot.pk}")
    expect(dialog).to_be_visible()
    dialog.get_by_role("textbox").fill(workload.path)
    expect(dialog.locator("button[data-confirmed]")).to_be_enabled()
    dialog.get_by_role("button", name="Cancel").click()
    page.get_by_role("button", name="Roll back").first.click()
    expect(page.locator("dialog[id^=rollback-dialog]").first).to_be_visible()
    check(page, problems, "workload page")


def test_the_inline_handlers_moved_to_static_js_still_work(watched, admin_user, workload):
    page, problems = watched
    log_in(page, admin_user.username, "password")

    page.goto("/backups/targets/add")
    form = page.locator("form.target")
    page.locator("select[name=kind]").select_option("directory")
    expect(form).to_have_attribute("data-kind", "directory")
    expect(form.locator("fieldset[data-kind=s3]")).to_be_hidden()

    page.goto("/workloads/add")
    page.locator("select[name=source_kind]").select_option("git")
    expect(page.locator("form.workload-form")).to_have_attribute("data-kind", "git")

    Token.objects.create(user=admin_user)
    page.goto("/tokens/")
    page.once("dialog", lambda d: d.dismiss())
    page.locator("form[data-confirm] button[type=submit]").click()
    page.goto("/tokens/")
    assert Token.objects.filter(user=admin_user).exists(), "a dismissed question revoked it"

    page.locator("select[name=language]").select_option("ru")
    expect(page.locator("html")).to_have_attribute("lang", "ru")
    check(page, problems, "handlers")


def test_a_poll_rests_while_the_page_is_hidden(watched, admin_user, workload):
    """The polls' `data-visible-only` (once a trigger filter, which needs eval) still holds."""
    page, problems = watched
    log_in(page, admin_user.username, "password")
    expect(page.get_by_role("heading", name="Workloads")).to_be_visible()
    polls: list[str] = []
    page.on("request", lambda r: r.url.endswith("/live") and polls.append(r.url))
    with page.expect_request(lambda r: r.url.endswith("/live"), timeout=10_000):
        pass

    page.evaluate("""() => Object.defineProperty(document, "visibilityState",
                                                 {configurable: true, get: () => "hidden"})""")
    page.wait_for_timeout(500)  # a request already under way may still finish
    asked = len(polls)
    page.wait_for_timeout(7_000)  # two polls' worth (every 3 s)
    assert len(polls) == asked, "the dashboard polled while hidden"

    page.evaluate("() => delete document.visibilityState")
    with page.expect_request(lambda r: r.url.endswith("/live"), timeout=10_000):
        pass
    check(page, problems, "dashboard")
