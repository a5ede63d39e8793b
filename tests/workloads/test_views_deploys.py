"""The deploy page with its build log, and git settings on the workload's page."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from workloads.models import DeployLog, DeployRecord, Workload

pytestmark = pytest.mark.django_db
Outcome, Reason = DeployRecord.Outcome, DeployRecord.Reason
SHA = "3f2c1a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f"
GITHUB = "https://github.com/acme/shop.git"


@pytest.fixture
def git_workload(make_workload) -> Workload:
    return make_workload(
        image="", source_kind=Workload.SourceKind.GIT, git_url=GITHUB, git_ref="main",
        build_args={"VERSION": "1.4"},
    )


def git_deploy(workload: Workload, *, outcome=Outcome.SUCCEEDED, log: str = "", **fields):
    record = DeployRecord.open(workload=workload, reason=Reason.MANUAL)
    DeployRecord.objects.filter(pk=record.pk).update(
        outcome=outcome, pinned_reference=SHA if outcome == Outcome.SUCCEEDED else "",
        repository=workload.git_url, image_id="sha256:" + "ab" * 32,
        started=timezone.now(),
        finished=timezone.now() if outcome in {Outcome.SUCCEEDED, Outcome.FAILED} else None,
        **fields,
    )
    DeployLog.objects.create(deploy=record, text=log)
    record.refresh_from_db()
    return record


def as_user(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize(("who", "status"), [("viewer", 200), ("outsider", 403)])
def test_the_deploy_page_needs_view_permission(request, git_workload, who, status):
    record = git_deploy(git_workload)
    client = as_user(request.getfixturevalue(who))
    assert client.get(f"/deploys/{record.pk}/").status_code == status
    assert client.get(f"/deploys/{record.pk}/panel").status_code == status


def test_the_deploy_page_sends_an_anonymous_visitor_to_log_in(client, git_workload):
    record = git_deploy(git_workload)
    response = client.get(f"/deploys/{record.pk}/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_an_unknown_deploy_is_404(viewer):
    assert as_user(viewer).get("/deploys/999999/").status_code == 404


def test_the_deploy_page_refuses_a_post(operator, git_workload):
    record = git_deploy(git_workload)
    assert as_user(operator).post(f"/deploys/{record.pk}/").status_code == 405


def test_it_shows_the_commit_linked_to_the_forge_and_the_escaped_build_log(viewer, git_workload):
    record = git_deploy(git_workload, log="Step 1/2 : FROM x\n<script>alert(1)</script>\n")

    html = as_user(viewer).get(f"/deploys/{record.pk}/").content.decode()

    assert f'href="https://github.com/acme/shop/commit/{SHA}"' in html
    assert f">{SHA[:12]}</code>" in html
    assert "Step 1/2 : FROM x" in html
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "abababababab" in html  # the short image id
    assert "hx-get" not in html  # a finished deploy is not polled


def test_it_shows_a_build_failure_with_its_failing_step(viewer, git_workload):
    record = git_deploy(
        git_workload, outcome=Outcome.FAILED, failure_code="build_failed", log="boom\n"
    )
    DeployLog.objects.filter(pk=record.pk).update(failed_step="Step 3/5 : RUN make", truncated=True)

    html = as_user(viewer).get(f"/deploys/{record.pk}/").content.decode()

    assert str(DeployRecord.Failure.BUILD_FAILED.label) in html
    assert "Step 3/5 : RUN make" in html
    assert "only its end is kept" in html


def test_the_panel_is_polled_while_the_deploy_runs_and_stops_after(viewer, git_workload):
    record = git_deploy(git_workload, outcome=Outcome.RUNNING, log="half way\n")
    client = as_user(viewer)
    htmx = {"HX-Request": "true"}

    running = client.get(f"/deploys/{record.pk}/panel", headers=htmx)
    assert running.status_code == 200
    assert f'hx-get="/deploys/{record.pk}/panel"' in running.content.decode()
    assert "half way" in running.content.decode()

    DeployRecord.objects.filter(pk=record.pk).update(outcome=Outcome.SUCCEEDED)
    finished = client.get(f"/deploys/{record.pk}/panel", headers=htmx)
    assert finished.status_code == 286
    assert client.get(f"/deploys/{record.pk}/panel").status_code == 200  # without htmx


def test_a_queued_git_deploy_says_its_log_comes_later(viewer, git_workload):
    record = DeployRecord.open(workload=git_workload, reason=Reason.MANUAL)
    html = as_user(viewer).get(f"/deploys/{record.pk}/").content.decode()
    assert "The build log appears here once the deploy starts." in html


def test_an_image_deploy_page_shows_its_references_and_no_build_log(viewer, workload):
    record = DeployRecord.open(workload=workload, reason=Reason.MANUAL)
    html = as_user(viewer).get(f"/deploys/{record.pk}/").content.decode()
    assert workload.image in html
    assert "Build log" not in html


def test_the_workload_page_shows_git_settings_running_commit_and_links(viewer, git_workload):
    git_workload.set_git_credential("bot", "never-shown-0b8d")
    git_workload.save()
    record = git_deploy(git_workload)
    git_workload.mark_deployed(record.replay_reference)

    html = as_user(viewer).get(f"/workloads/{git_workload.pk}/").content.decode()

    assert GITHUB in html
    assert 'href="https://github.com/acme/shop"' in html
    assert "with a stored credential" in html
    assert "never-shown-0b8d" not in html
    assert "<code>VERSION=1.4</code>" in html
    assert f'data-running-commit="{SHA}"' in html
    assert f'href="https://github.com/acme/shop/commit/{SHA}"' in html
    assert f'href="/deploys/{record.pk}/"' in html  # the history row and the last deploy


def test_git_and_image_deploys_of_another_kind_offer_no_rollback(operator, git_workload):
    older = git_deploy(git_workload)
    git_deploy(git_workload)
    image_row = DeployRecord.open(workload=git_workload, reason=Reason.MANUAL)
    DeployRecord.objects.filter(pk=image_row.pk).update(
        source_kind="image", outcome=Outcome.SUCCEEDED,
        pinned_reference="127.0.0.1:5000/x@sha256:" + "cd" * 32, created=older.created,
    )

    html = as_user(operator).get(f"/workloads/{git_workload.pk}/").content.decode()

    assert f'id="rollback-dialog-{older.pk}"' in html
    assert f'id="rollback-dialog-{image_row.pk}"' not in html
    assert "otherwise the commit is built again" in html
