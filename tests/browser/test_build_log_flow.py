"""An operator deploys a git workload and watches its build log stream, in a real browser."""

from __future__ import annotations

import time
import uuid

import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_deploy_flow import DEPLOY_TIMEOUT_MS, log_in
from tests.fixtures.gitrepo import GitRepo
from tests.workloads.test_git_deploys import remove_built_images
from workloads.models import DeployRecord, Workload

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# A build step slow enough to watch: three lines, two seconds apart. printf
# keeps the printed lines out of the step's own text (which the log shows
# first), and the run's token keeps the engine's layer cache from answering.
SLOW_STEP = (
    "RUN printf 'stream-line-%s {token}\\n' one && sleep 2 "
    "&& printf 'stream-line-%s\\n' two && sleep 2 && printf 'stream-line-%s\\n' three\n"
)


def wait_for_deploy(workload: Workload, timeout: float = 30) -> DeployRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = workload.deploys.first()
        if record is not None:
            return record
        time.sleep(0.1)
    raise AssertionError("no deploy was queued")


def test_it_streams_the_build_log_while_the_image_builds(
    page: Page, docker, operator, make_workload, tmp_path
):
    repo = GitRepo(tmp_path / "repo")
    sha = repo.serve("built from git\n", extra=SLOW_STEP.format(token=uuid.uuid4().hex))
    workload = make_workload(
        image="", source_kind=Workload.SourceKind.GIT, git_url=repo.url, git_ref="main"
    )
    log_in(page, operator.username, "correct horse battery")
    page.goto(f"/workloads/{workload.pk}/")
    expect(page.locator("#state-panel")).to_contain_text(repo.url)

    # The tasks run in the web process under test, so this click's request
    # lasts as long as the deploy; the operator follows the build in a second tab.
    page.get_by_role("button", name="Deploy").click()
    record = wait_for_deploy(workload)
    watcher = page.context.new_page()
    watcher.goto(f"/deploys/{record.pk}/")

    panel = watcher.locator("#deploy-panel")
    log = watcher.locator("#build-log")
    expect(log).to_contain_text("stream-line-one", timeout=DEPLOY_TIMEOUT_MS)
    # Seen while the build still runs: the log streamed, it was not shown at the end.
    assert panel.get_attribute("data-outcome") == "running"
    assert "stream-line-three" not in log.inner_text()
    expect(log).to_contain_text("stream-line-two")
    expect(log).to_contain_text("stream-line-three")
    expect(panel).to_have_attribute("data-outcome", "succeeded", timeout=DEPLOY_TIMEOUT_MS)
    expect(log).to_contain_text("Successfully built")
    assert panel.get_attribute("hx-get") is None  # polling stopped with the deploy
    expect(panel.locator("code.commit")).to_have_text(sha[:12])

    # Back on the workload's page: the running commit, and the history row links here.
    expect(page.locator("#state-panel [data-state]")).to_have_attribute(
        "data-state", "running", timeout=DEPLOY_TIMEOUT_MS
    )
    expect(page.locator("#state-panel [data-running-commit]")).to_contain_text(sha[:12])
    page.locator(f"#deploy-history tr[data-deploy='{record.pk}'] a").first.click()
    expect(page.locator("#build-log")).to_contain_text("stream-line-three")
    watcher.close()
    remove_built_images()
