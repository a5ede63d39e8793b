"""Everyday editing in the pages: projects, stages and workloads, with the API's rules."""

from __future__ import annotations

import pytest
from django.test import Client

from engine import deploys
from lib import runtime
from tests.fixtures import images
from workloads.models import (
    DeployRecord,
    EnvVar,
    PortMapping,
    Project,
    Stage,
    VolumeMount,
    Workload,
)

SECRET = "page-s3cret-91d2c7"


def logged_in(client: Client, user) -> Client:
    client.force_login(user)
    return client


def management(prefix: str, total: int, initial: int) -> dict:
    return {f"{prefix}-TOTAL_FORMS": str(total), f"{prefix}-INITIAL_FORMS": str(initial),
            f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"}


def workload_post(stage: Stage, *, env=(), ports=(), volumes=(), **fields) -> dict:
    """A complete workload form: its fields, and each list's rows as new ones."""
    data = {"stage": str(stage.pk), "name": "Web", "slug": "web", "source_kind": "image",
            "image": images.HTTPD_V1, "replicas": "1", "git_ref": "main",
            "git_dockerfile": "Dockerfile", "git_context": ".", "build_args": "{}",
            "snapshot_consistency": "stop", "auto_backup_before_deploy": ""}
    data.update(fields)
    for prefix, rows in (("env", env), ("ports", ports), ("volumes", volumes)):
        data.update(management(prefix, len(rows), 0))
        for i, row in enumerate(rows):
            data.update({f"{prefix}-{i}-{key}": value for key, value in row.items()})
    return data


@pytest.fixture
def stage(db) -> Stage:
    project = Project.objects.create(name="Shop", slug="shop")
    return Stage.objects.create(project=project, name="Prod", slug="prod")


def test_it_creates_a_workload_with_env_ports_and_volumes(client, operator, stage):
    data = workload_post(
        stage,
        env=[{"name": "MODE", "value": "plain"},
             {"name": "API_KEY", "value": SECRET, "is_secret": "on"}],
        ports=[{"host_ip": "127.0.0.1", "host_port": "18971", "container_port": "80",
                "protocol": "tcp"}],
        volumes=[{"scope": "stage", "source": "site", "target": "/data"}],
    )
    response = logged_in(client, operator).post("/workloads/add", data)

    workload = Workload.objects.get(stage=stage, slug="web")
    assert response.status_code == 302
    assert response["Location"] == f"/workloads/{workload.pk}/"
    assert workload.image == images.HTTPD_V1
    env = {e.name: e for e in workload.env_vars.all()}
    assert env["MODE"].value == "plain"
    assert env["API_KEY"].is_secret and env["API_KEY"].value == ""
    assert env["API_KEY"].get_value() == SECRET
    assert list(workload.ports.values_list("host_port", "container_port")) == [(18971, 80)]
    assert list(workload.volumes.values_list("target", flat=True)) == ["/data"]


def test_it_never_renders_a_secret_back(client, operator, workload):
    env = EnvVar(workload=workload, name="API_KEY")
    env.set_value(SECRET, secret=True)
    env.save()
    client = logged_in(client, operator)

    form = client.get(f"/workloads/{workload.pk}/edit")
    page = client.get(f"/workloads/{workload.pk}/")
    # A form sent back with an error, a new secret typed in it.
    data = workload_post(workload.stage, slug="Not A Slug",
                         env=[{"name": "OTHER", "value": SECRET + "x", "is_secret": "on"}])
    refused = client.post(f"/workloads/{workload.pk}/edit", data)

    assert form.status_code == page.status_code == refused.status_code == 200
    for response in (form, page, refused):
        assert SECRET not in response.content.decode()
    assert "API_KEY" in page.content.decode()


def test_it_keeps_a_stored_secret_left_empty(client, operator, workload):
    env = EnvVar(workload=workload, name="API_KEY")
    env.set_value(SECRET, secret=True)
    env.save()
    data = workload_post(workload.stage, slug=workload.slug)
    data.update(management("env", 1, 1))
    data.update({"env-0-id": str(env.pk), "env-0-workload": str(workload.pk),
                 "env-0-name": "API_KEY", "env-0-value": "", "env-0-is_secret": "on"})

    response = logged_in(client, operator).post(f"/workloads/{workload.pk}/edit", data)

    assert response.status_code == 302
    env.refresh_from_db()
    assert env.get_value() == SECRET


@pytest.mark.parametrize(("change", "field"), [
    ({"image": "not a reference!"}, "image"),
    ({"source_kind": "image", "image": ""}, "image"),
    ({"slug": "-bad-"}, "slug"),
    ({"replicas": "2", "ports": [{"host_ip": "127.0.0.1", "host_port": "18972",
                                   "container_port": "80", "protocol": "tcp"}]}, "replicas"),
    ({"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "env"),
    ({"volumes": [{"scope": "stage", "source": "../escape", "target": "/data"}]}, "volumes"),
    ({"source_kind": "git", "git_url": "ftp://example.com/repo.git"}, "git_url"),
])
def test_it_refuses_what_the_api_refuses_and_saves_nothing(client, api_as, operator, stage,
                                                           change, field):
    lists = {key: change.pop(key) for key in ("env", "ports", "volumes") if key in change}
    page = logged_in(client, operator).post("/workloads/add",
                                            workload_post(stage, **lists, **change))
    body = {"stage": stage.pk, "name": "Web", "slug": "web", "source_kind": "image",
            "image": images.HTTPD_V1, **change}
    body["replicas"] = int(body.get("replicas", 1))
    body.update({key: [{k: v for k, v in row.items()} for row in rows]
                 for key, rows in lists.items()})
    api = api_as(operator).post("/api/workloads", body, format="json")

    assert page.status_code == 200
    assert "Nothing was saved" in page.content.decode()
    assert api.status_code == 400, api.json()
    assert not Workload.objects.exists()
    assert not EnvVar.objects.exists() and not PortMapping.objects.exists()
    assert not VolumeMount.objects.exists()


def test_it_refuses_a_host_port_another_workload_publishes(client, operator, stage,
                                                           make_workload):
    other = make_workload()
    PortMapping.objects.create(workload=other, host_port=18973, container_port=80)
    data = workload_post(stage, ports=[{"host_ip": "127.0.0.1", "host_port": "18973",
                                        "container_port": "80", "protocol": "tcp"}])

    response = logged_in(client, operator).post("/workloads/add", data)

    assert response.status_code == 200
    assert "already" in response.content.decode()
    assert not Workload.objects.filter(stage=stage).exists()


def test_it_edits_a_workload(client, operator, workload):
    data = workload_post(workload.stage, slug=workload.slug, name="Renamed",
                         image=images.HTTPD_V2, env=[{"name": "MODE", "value": "v2"}])

    response = logged_in(client, operator).post(f"/workloads/{workload.pk}/edit", data)

    assert response.status_code == 302
    workload.refresh_from_db()
    assert (workload.name, workload.image) == ("Renamed", images.HTTPD_V2)
    assert workload.env_vars.get().value == "v2"


def test_it_needs_the_model_permissions(client, viewer, outsider, workload, stage):
    for user in (viewer, outsider):
        client.force_login(user)
        assert client.get("/workloads/add").status_code == 403
        assert client.post("/workloads/add", workload_post(stage)).status_code == 403
        assert client.post(f"/workloads/{workload.pk}/edit",
                           workload_post(stage)).status_code == 403
        assert client.post(f"/workloads/{workload.pk}/delete",
                           {"confirm": workload.path}).status_code == 403
        assert client.post("/projects/add", {"name": "X", "slug": "x"}).status_code == 403
        assert client.post(f"/stages/{stage.pk}/delete", {"confirm": "prod"}).status_code == 403
    assert Workload.objects.filter(pk=workload.pk).exists()
    assert Workload.objects.count() == 1 and Project.objects.count() == 2


def test_it_asks_anonymous_users_to_log_in(client, workload):
    response = client.get(f"/workloads/{workload.pk}/edit")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_it_creates_and_edits_projects_and_stages(client, operator):
    client = logged_in(client, operator)

    created = client.post("/projects/add", {"name": "Shop", "slug": "shop"})
    project = Project.objects.get(slug="shop")
    staged = client.post(f"/stages/add?project={project.pk}",
                         {"project": project.pk, "name": "Prod", "slug": "prod"})
    clash = client.post("/stages/add", {"project": project.pk, "name": "Again", "slug": "prod"})
    renamed = client.post(f"/projects/{project.pk}/", {"name": "The shop", "slug": "shop"})

    assert created.status_code == staged.status_code == renamed.status_code == 302
    assert clash.status_code == 200 and Stage.objects.filter(project=project).count() == 1
    project.refresh_from_db()
    assert project.name == "The shop"
    listing = client.get("/projects/").content.decode()
    assert "The shop" in listing and f"/stages/{project.stages.get().pk}/" in listing


@pytest.mark.parametrize("typed", ["not-it", "slug", "upper", ""])
def test_anything_but_the_workloads_path_deletes_nothing(client, operator, workload, typed):
    value = {"slug": workload.slug, "upper": workload.path.upper()}.get(typed, typed)

    response = logged_in(client, operator).post(f"/workloads/{workload.pk}/delete",
                                                {"confirm": value})

    assert response.status_code == 200
    html = response.content.decode()
    if typed:
        assert "That is not the workload&#x27;s path; nothing was deleted." in html
    else:
        assert "This field is required." in html
    assert f"<code>{workload.path}</code>" in html
    assert Workload.objects.filter(pk=workload.pk).exists()


def test_the_delete_page_asks_for_the_workloads_path(client, operator, workload):
    html = logged_in(client, operator).get(f"/workloads/{workload.pk}/delete").content.decode()

    assert f"Type the workload's path, <code>{workload.path}</code>, to confirm:" in html
    assert 'name="confirm"' in html and 'autocomplete="off"' in html


@pytest.mark.usefixtures("commits_as_in_production")
def test_the_typed_path_deletes_the_workload_and_its_containers(client, docker, current_tag,
                                                                operator, workload):
    deployed = deploys.dispatch(workload=workload, reason=DeployRecord.Reason.MANUAL)
    assert deployed.outcome == DeployRecord.Outcome.SUCCEEDED, deployed.failure_code
    assert runtime.list_containers(workload.pk)

    response = logged_in(client, operator).post(f"/workloads/{workload.pk}/delete",
                                                {"confirm": workload.path})

    assert response.status_code == 302 and response["Location"] == "/"
    assert not Workload.objects.filter(pk=workload.pk).exists()
    assert runtime.list_containers(workload.pk) == []


def test_a_stage_with_workloads_is_not_deleted(client, operator, workload):
    stage = workload.stage
    client = logged_in(client, operator)

    refused = client.post(f"/stages/{stage.pk}/delete", {"confirm": stage.slug})
    refused_project = client.post(f"/projects/{stage.project.pk}/delete",
                                  {"confirm": stage.project.slug})

    assert refused.status_code == refused_project.status_code == 409
    assert "still has workloads" in refused.content.decode()
    assert Stage.objects.filter(pk=stage.pk).exists()
    assert Workload.objects.filter(pk=workload.pk).exists()


def test_an_empty_project_is_deleted_with_its_stages(client, operator, stage):
    project = stage.project
    client = logged_in(client, operator)

    wrong = client.post(f"/projects/{project.pk}/delete", {"confirm": "nope"})
    assert Project.objects.filter(pk=project.pk).exists()
    right = client.post(f"/projects/{project.pk}/delete", {"confirm": project.slug})

    assert wrong.status_code == 200 and right.status_code == 302
    assert not Project.objects.filter(pk=project.pk).exists()
    assert not Stage.objects.filter(pk=stage.pk).exists()


def test_the_dashboard_and_the_workload_page_link_to_editing(client, operator, viewer,
                                                             workload):
    client.force_login(operator)
    dashboard = client.get("/").content.decode()
    page = client.get(f"/workloads/{workload.pk}/").content.decode()
    client.force_login(viewer)
    viewer_page = client.get(f"/workloads/{workload.pk}/").content.decode()

    assert 'href="/workloads/add"' in dashboard and 'href="/projects/add"' in dashboard
    assert f'href="/workloads/{workload.pk}/edit"' in page
    assert f'href="/workloads/{workload.pk}/delete"' in page
    assert f'href="/workloads/{workload.pk}/edit"' not in viewer_page


def test_a_credential_pasted_into_a_git_url_is_stored_write_only(client, operator, stage):
    data = workload_post(stage, source_kind="git", image="",
                         git_url="https://deploy:tok3n-in-url-8a1@git.example.com/team/app.git",
                         git_ref="main", build_args="")
    client = logged_in(client, operator)

    response = client.post("/workloads/add", data)

    assert response.status_code == 302
    workload = Workload.objects.get(stage=stage, slug="web")
    assert workload.git_url == "https://git.example.com/team/app.git"
    assert workload.get_git_credential() == ("deploy", "tok3n-in-url-8a1")
    assert workload.build_args == {}
    for url in (f"/workloads/{workload.pk}/edit", f"/workloads/{workload.pk}/"):
        assert "tok3n-in-url-8a1" not in client.get(url).content.decode()


def test_the_form_says_when_there_is_no_stage_yet(client, operator, db):
    html = logged_in(client, operator).get("/workloads/add").content.decode()

    assert "there is none yet" in html and 'href="/projects/add"' in html


def test_a_busy_workload_is_not_deleted(client, operator, workload):
    DeployRecord.objects.create(workload=workload, reason="manual", source_kind="image")

    response = logged_in(client, operator).post(f"/workloads/{workload.pk}/delete",
                                                {"confirm": workload.path})

    assert response.status_code == 409
    assert "busy with a deploy or restore" in response.content.decode()
    assert Workload.objects.filter(pk=workload.pk).exists()


@pytest.mark.parametrize("cut", ["#", "?", "/", "["])
def test_a_git_url_whose_credential_cannot_be_taken_out_is_never_shown_back(client, operator,
                                                                           stage, cut):
    secret = "pw-never-shown-7f3a"
    url = f"https://deploy:{secret}{cut}x@git.example.com/repo.git"
    client.force_login(operator)

    response = client.post("/workloads/add", workload_post(stage, source_kind="git", image="",
                                                           git_url=url))

    assert response.status_code == 200 and not Workload.objects.exists()
    assert secret not in response.content.decode()
    assert "cannot take out" in response.content.decode()


def test_who_may_not_attach_credentials_is_shown_none(client, operator, stage):
    from django.contrib.auth.models import Permission

    from workloads.models import RegistryCredential

    RegistryCredential.objects.create(name="corp-registry-cred", registry="reg.example.com",
                                      username="u")
    operator.user_permissions.remove(Permission.objects.get(codename="use_registrycredential"))
    operator.groups.clear()
    operator.user_permissions.add(*Permission.objects.filter(codename__in=[
        "add_workload", "view_workload"]))
    client.force_login(operator)

    page = client.get("/workloads/add").content.decode()

    assert "corp-registry-cred" not in page and "reg.example.com" not in page


def test_the_form_sets_a_memory_limit_with_the_models_bounds(client, operator, stage):
    client.force_login(operator)

    refused = client.post("/workloads/add", workload_post(stage, memory_limit_mib="2"))
    assert refused.status_code == 200 and not Workload.objects.exists()

    client.post("/workloads/add", workload_post(stage, memory_limit_mib="64"))
    assert Workload.objects.get().memory_limit_mib == 64
