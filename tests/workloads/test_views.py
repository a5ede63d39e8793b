"""The HTMX pages: dashboard, detail, the polled state panel and the deploy button."""

from __future__ import annotations

import os

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.fixtures import images
from workloads.models import (
    Container,
    DeployRecord,
    EnvVar,
    EventLog,
    RegistryCredential,
    VolumeMount,
    Workload,
)

CLOSED_SOCKET = "unix:///nonexistent/closed.sock"
SECRET_ENV = "env-s3cret-4b1f9e"
REGISTRY_PASSWORD = "registry-pa55-7c2d0a"
DIGEST = "127.0.0.1:5000/berth-test/httpd@sha256:" + "ab" * 32


def logged_in(client: Client, user: User) -> Client:
    client.force_login(user)
    return client


def htmx_get(client: Client, url: str):
    return client.get(url, headers={"HX-Request": "true"})


def with_secrets(workload: Workload) -> Workload:
    """Give `workload` a secret env value and a registry credential with a password."""
    env = EnvVar(workload=workload, name="API_TOKEN")
    env.set_value(SECRET_ENV, secret=True)
    env.save()
    credential = RegistryCredential(name="private", registry="127.0.0.1:5000", username="ci")
    credential.set_password(REGISTRY_PASSWORD)
    credential.save()
    workload.registry_credential = credential
    workload.save(update_fields=["registry_credential"])
    return workload


def deployed(workload: Workload) -> Workload:
    """Record `workload` as running one container, without touching Docker."""
    Container.objects.create(
        workload=workload, docker_id="d" * 64, name=workload.container_name(1), replica=1,
        image_reference=DIGEST,
    )
    workload.mark_deployed(DIGEST)
    EventLog.objects.create(workload=workload, message="Deployed the first version.")
    return workload


# --- dashboard ---------------------------------------------------------------

def test_it_redirects_an_anonymous_visitor_to_the_login_page(client, workload):
    r = client.get("/")
    assert r.status_code == 302
    assert r["Location"] == "/login/?next=/"


def test_it_forbids_the_dashboard_to_a_user_without_view_permission(client, outsider):
    assert logged_in(client, outsider).get("/").status_code == 403


def test_it_lists_workloads_on_the_dashboard(client, viewer, make_workload):
    deployed(make_workload(name="Shop front"))
    make_workload(name="Billing", slug="billing")

    r = logged_in(client, viewer).get("/")

    assert r.status_code == 200
    html = r.content.decode()
    assert "Shop front" in html and "Billing" in html
    assert 'data-state="running"' in html and 'data-state="new"' in html
    assert images.HTTPD_CURRENT in html


def test_it_renders_the_dashboard_in_a_fixed_number_of_queries(
    client, viewer, make_workload, django_assert_num_queries, monkeypatch
):
    monkeypatch.setenv("DOCKER_HOST", CLOSED_SOCKET)  # keep the engine out of the count
    for n in range(3):
        make_workload(slug=f"web-{n}")
    logged_in(client, viewer)

    # 1 session, 2 user, 3 the user's own permissions, 4 their groups'
    # permissions, 5 the workloads joined with stage, project and credential
    # (one query however many workloads there are), 6 their live containers (the live
    # state), 7-13 their backup health (drills included)
    # (backups/health.py: the policies, then the newest run, ready snapshot,
    # scheduled snapshot, finished copy and verified copy of each workload).
    with django_assert_num_queries(13):
        r = client.get("/")
    assert r.status_code == 200


def test_it_still_renders_the_dashboard_when_the_engine_is_unreachable(
    client, viewer, workload, monkeypatch
):
    monkeypatch.setenv("DOCKER_HOST", CLOSED_SOCKET)

    r = logged_in(client, viewer).get("/")

    assert r.status_code == 200
    assert "The Docker engine is unreachable" in r.content.decode()
    assert workload.name in r.content.decode()


def test_it_refuses_to_post_to_the_dashboard(client, viewer):
    assert logged_in(client, viewer).post("/").status_code == 405


# --- detail ------------------------------------------------------------------

def test_it_shows_a_workloads_state_image_digest_containers_and_events(
    client, viewer, workload
):
    deployed(workload)
    Container.objects.create(
        workload=workload, docker_id="e" * 64, name="an-old-generation", replica=1,
        image_reference=DIGEST, removed=workload.deployed_at,
    )

    r = logged_in(client, viewer).get(f"/workloads/{workload.pk}/")

    assert r.status_code == 200
    html = r.content.decode()
    assert 'data-state="running"' in html
    assert workload.image in html
    assert DIGEST in html
    assert workload.container_name(1) in html
    assert "an-old-generation" not in html  # removed containers are history, not state
    assert "Deployed the first version." in html
    for slot in ("deploy-history", "metrics", "snapshots"):
        assert f'id="{slot}"' in html


def test_it_shows_an_undeployed_workload(client, viewer, workload):
    r = logged_in(client, viewer).get(f"/workloads/{workload.pk}/")

    assert r.status_code == 200
    html = r.content.decode()
    assert 'data-state="new"' in html
    assert "No containers: this workload has not been deployed." in html
    assert "No events yet." in html


def test_it_shows_the_deploy_button_only_to_users_who_may_deploy(
    client, viewer, operator, workload
):
    as_viewer = logged_in(client, viewer).get(f"/workloads/{workload.pk}/")
    assert f'hx-post="/workloads/{workload.pk}/deploy"' not in as_viewer.content.decode()

    as_operator = logged_in(Client(), operator).get(f"/workloads/{workload.pk}/")
    assert f'hx-post="/workloads/{workload.pk}/deploy"' in as_operator.content.decode()


def test_it_shows_a_volume_whose_host_path_escapes_as_invalid(client, viewer, workload, tmp_path):
    volume = VolumeMount.objects.create(
        workload=workload, scope="stage", source="data", target="/data"
    )
    # A symlink planted where the stage directory's volume lives points outside it.
    link = volume.host_path()
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(tmp_path, link)

    r = logged_in(client, viewer).get(f"/workloads/{workload.pk}/")

    assert r.status_code == 200
    html = r.content.decode()
    assert "/data" in html
    assert str(tmp_path) not in html
    assert "(invalid)" in html


def test_it_still_renders_the_detail_page_when_the_engine_is_unreachable(
    client, viewer, workload, monkeypatch
):
    monkeypatch.setenv("DOCKER_HOST", CLOSED_SOCKET)

    r = logged_in(client, viewer).get(f"/workloads/{workload.pk}/")

    assert r.status_code == 200
    assert "The Docker engine is unreachable" in r.content.decode()


@pytest.mark.parametrize("page", ["", "state"])
def test_it_guards_the_detail_and_state_pages(client, viewer, outsider, workload, page):
    url = f"/workloads/{workload.pk}/{page}"
    anonymous = client.get(url)
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/login/?next=")

    assert logged_in(client, outsider).get(url).status_code == 403
    logged_in(client, viewer)
    assert client.get(f"/workloads/{workload.pk + 1000}/{page}").status_code == 404
    assert client.post(url).status_code == 405


# --- the polled state panel ---------------------------------------------------

def test_it_tells_htmx_to_stop_polling_when_no_deploy_runs(client, viewer, workload):
    deployed(workload)

    r = htmx_get(logged_in(client, viewer), f"/workloads/{workload.pk}/state")

    assert r.status_code == 286
    html = r.content.decode()
    assert html.lstrip().startswith('<section id="state-panel"')
    assert "hx-trigger" not in html
    assert 'data-state="running"' in html
    assert workload.container_name(1) in html


def test_it_sends_the_events_out_of_band_with_the_state_panel(client, viewer, workload):
    deployed(workload)

    r = htmx_get(logged_in(client, viewer), f"/workloads/{workload.pk}/state")

    html = r.content.decode()
    assert '<section id="events" class="card" hx-swap-oob="true">' in html
    assert "Deployed the first version." in html


def test_it_renders_the_events_in_place_on_the_page(client, viewer, workload):
    html = logged_in(client, viewer).get(f"/workloads/{workload.pk}/").content.decode()
    assert '<section id="events" class="card">' in html
    assert "hx-swap-oob" not in html


@pytest.mark.parametrize("outcome", [DeployRecord.Outcome.QUEUED, DeployRecord.Outcome.RUNNING])
def test_it_keeps_polling_while_a_deploy_is_queued_or_running(client, viewer, workload, outcome):
    DeployRecord.objects.create(
        workload=workload, reason=DeployRecord.Reason.MANUAL, source_kind="image",
        outcome=outcome,
    )

    r = htmx_get(logged_in(client, viewer), f"/workloads/{workload.pk}/state")

    assert r.status_code == 200
    html = r.content.decode()
    assert f'hx-get="/workloads/{workload.pk}/state"' in html
    assert 'hx-trigger="every 1s"' in html
    assert 'aria-busy="true"' in html


def test_it_stops_polling_once_the_last_deploy_has_finished(client, viewer, workload):
    DeployRecord.objects.create(
        workload=workload, reason=DeployRecord.Reason.MANUAL, source_kind="image",
        outcome=DeployRecord.Outcome.FAILED, failure_code=DeployRecord.Failure.PULL_FAILED,
    )

    r = htmx_get(logged_in(client, viewer), f"/workloads/{workload.pk}/state")

    assert r.status_code == 286
    html = r.content.decode()
    assert 'data-deploy-outcome="failed"' in html
    assert str(DeployRecord.Failure.PULL_FAILED.label) in html


def test_it_serves_the_state_panel_without_htmx_as_a_plain_200(client, viewer, workload):
    r = logged_in(client, viewer).get(f"/workloads/{workload.pk}/state")
    assert r.status_code == 200


# --- deploy ------------------------------------------------------------------

def test_it_redirects_an_anonymous_deploy_to_the_login_page(client, workload):
    r = client.post(f"/workloads/{workload.pk}/deploy")
    assert r.status_code == 302
    assert r["Location"].startswith("/login/?next=")
    assert not workload.deploys.exists()


def test_it_forbids_deploys_to_viewers_and_outsiders(client, viewer, outsider, workload):
    for user in (viewer, outsider):
        assert logged_in(client, user).post(f"/workloads/{workload.pk}/deploy").status_code == 403
    assert not workload.deploys.exists()


def test_it_refuses_a_get_on_deploy(client, operator, workload):
    assert logged_in(client, operator).get(f"/workloads/{workload.pk}/deploy").status_code == 405
    assert not workload.deploys.exists()


def test_it_404s_a_deploy_of_an_unknown_workload(client, operator, workload):
    r = logged_in(client, operator).post(f"/workloads/{workload.pk + 1000}/deploy")
    assert r.status_code == 404
    assert not DeployRecord.objects.exists()


def test_it_records_a_failed_deploy_when_the_engine_is_unreachable(
    client, operator, workload, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setenv("DOCKER_HOST", CLOSED_SOCKET)

    with django_capture_on_commit_callbacks(execute=True):
        r = logged_in(client, operator).post(f"/workloads/{workload.pk}/deploy")

    assert r.status_code == 302
    assert r["Location"] == f"/workloads/{workload.pk}/"
    record = workload.deploys.get()
    assert record.outcome == DeployRecord.Outcome.FAILED, "did the deploy task run?"
    assert record.failure_code == DeployRecord.Failure.ENGINE_UNREACHABLE
    assert record.user == operator

    page = client.get(f"/workloads/{workload.pk}/").content.decode()
    assert 'data-state="failed"' in page
    assert "The Docker engine is unreachable." in page


@pytest.mark.django_db
@pytest.mark.usefixtures("commits_as_in_production")
def test_it_deploys_from_the_button_against_the_real_engine(
    client, docker, current_tag, operator, workload
):
    r = logged_in(client, operator).post(
        f"/workloads/{workload.pk}/deploy", headers={"HX-Request": "true"}
    )

    assert r.status_code == 200
    html = r.content.decode()
    assert html.lstrip().startswith('<section id="state-panel"')
    record = workload.deploys.get()
    assert record.reason == DeployRecord.Reason.MANUAL
    assert record.user == operator
    assert record.outcome == DeployRecord.Outcome.SUCCEEDED, (
        f"outcome {record.outcome} ({record.failure_code}): deploys run synchronously in tests"
    )
    workload.refresh_from_db()
    assert workload.state == Workload.State.RUNNING
    assert 'data-state="running"' in html
    assert workload.running_reference in html
    [container] = workload.containers.live()
    assert container.name in html


# --- secrets -----------------------------------------------------------------

def test_it_never_shows_secrets_on_any_page(
    client, operator, workload, monkeypatch, django_capture_on_commit_callbacks
):
    with_secrets(workload)
    deployed(workload)
    # A failed deploy adds an event and a failure message to the pages too.
    monkeypatch.setenv("DOCKER_HOST", CLOSED_SOCKET)
    logged_in(client, operator)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/workloads/{workload.pk}/deploy")

    pages = {
        "dashboard": client.get("/"),
        "detail": client.get(f"/workloads/{workload.pk}/"),
        "state": htmx_get(client, f"/workloads/{workload.pk}/state"),
    }

    for name, response in pages.items():
        assert response.status_code in {200, 286}, name
        html = response.content.decode()
        assert SECRET_ENV not in html, name
        assert REGISTRY_PASSWORD not in html, name
