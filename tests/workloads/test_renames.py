"""A project or stage with workloads keeps its slug (and a stage its project): their volumes'
host paths derive from them, so a rename would point a workload at another's directory or an
empty one. Every interface refuses it; the restore's pre-flight refuses a volume that lies
inside another workload's, however it got there."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.fixtures import images
from workloads.models import Project, Stage, VolumeMount, Workload


@pytest.fixture
def two_stages(db):
    """Project p: stage s1 has A with a project volume 'y'; stage 'z' has B with a stage
    volume 'd'. Renaming stage z to y would put B's volume (volumes/p/y/d) inside A's."""
    project = Project.objects.create(name="P", slug="p")
    s1 = Stage.objects.create(project=project, name="S1", slug="s1")
    s2 = Stage.objects.create(project=project, name="S2", slug="z")
    a = Workload.objects.create(stage=s1, name="A", slug="a", image=images.HTTPD_V1)
    VolumeMount.objects.create(workload=a, scope="project", source="y", target="/data")
    b = Workload.objects.create(stage=s2, name="B", slug="b", image=images.HTTPD_V1)
    VolumeMount.objects.create(workload=b, scope="stage", source="d", target="/data")
    return project, s2, b


def host_path(workload: Workload) -> str:
    return VolumeMount.objects.select_related("workload__stage__project").get(
        workload=workload).host_path()


def test_the_api_refuses_to_rename_or_move_a_stage_with_workloads(api_as, operator, two_stages):
    project, stage, b = two_stages
    before = host_path(b)
    other = Project.objects.create(name="O", slug="o")

    renamed = api_as(operator).patch(f"/api/stages/{stage.pk}", {"slug": "y"}, format="json")
    moved = api_as(operator).patch(f"/api/stages/{stage.pk}", {"project": other.pk},
                                   format="json")

    assert renamed.status_code == moved.status_code == 400
    assert "change while the stage has workloads" in str(renamed.json()["slug"])
    assert host_path(b) == before
    # Its name is not part of any path: that still changes.
    assert api_as(operator).patch(f"/api/stages/{stage.pk}", {"name": "Z2"},
                                  format="json").status_code == 200


def test_the_api_refuses_to_rename_a_project_with_workloads(api_as, operator, two_stages):
    project, _stage, b = two_stages
    before = host_path(b)

    response = api_as(operator).patch(f"/api/projects/{project.pk}", {"slug": "q"},
                                      format="json")

    assert response.status_code == 400 and host_path(b) == before
    empty = Project.objects.create(name="E", slug="e")
    assert api_as(operator).patch(f"/api/projects/{empty.pk}", {"slug": "e2"},
                                  format="json").status_code == 200


def test_the_page_refuses_to_rename_a_stage_with_workloads(client: Client, operator,
                                                          two_stages):
    project, stage, b = two_stages
    before = host_path(b)
    client.force_login(operator)

    response = client.post(f"/stages/{stage.pk}/", {"project": project.pk, "name": "S2",
                                                    "slug": "y"})

    assert response.status_code == 200  # the form again, with the error
    assert "change while the stage has workloads" in response.content.decode()
    assert host_path(b) == before


def test_the_admin_refuses_to_rename_a_project_with_workloads(client: Client, two_stages):
    project, _stage, b = two_stages
    before = host_path(b)
    client.force_login(User.objects.create_superuser("ada", password="x"))

    response = client.post(f"/admin/workloads/project/{project.pk}/change/", {
        "name": "P", "slug": "q", "stages-TOTAL_FORMS": "0", "stages-INITIAL_FORMS": "0",
    })

    assert response.status_code == 200
    assert "cannot change while the project has workloads" in response.content.decode()
    assert Project.objects.get(pk=project.pk).slug == "p" and host_path(b) == before


# --- the admin deletes a project or stage only when it is empty ------------------------------

@pytest.fixture
def admin_client(client: Client, db) -> Client:
    client.force_login(User.objects.create_superuser("ada", password="x"))
    return client


@pytest.mark.parametrize("kind", ["project", "stage"])
def test_the_admin_never_deletes_a_project_or_stage_with_workloads(admin_client, two_stages,
                                                                   kind):
    project, stage, _b = two_stages
    obj = project if kind == "project" else stage

    page = admin_client.get(f"/admin/workloads/{kind}/{obj.pk}/delete/")
    posted = admin_client.post(f"/admin/workloads/{kind}/{obj.pk}/delete/", {"post": "yes"})
    bulk = admin_client.post(f"/admin/workloads/{kind}/", {
        "action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"})

    assert page.status_code == posted.status_code == 403
    assert bulk.status_code in {200, 302}
    assert Workload.objects.count() == 2 and Stage.objects.count() == 2


def test_the_project_page_cannot_delete_its_stages(admin_client, two_stages):
    project, stage, _b = two_stages
    stages = Stage.objects.filter(project=project).order_by("pk")

    admin_client.post(f"/admin/workloads/project/{project.pk}/change/", {
        "name": "P", "slug": "p", "stages-TOTAL_FORMS": "2", "stages-INITIAL_FORMS": "2",
        **{f"stages-{n}-{field}": value for n, s in enumerate(stages)
           for field, value in {"id": s.pk, "project": project.pk, "name": s.name,
                                "slug": s.slug, "DELETE": "on"}.items()},
    })

    assert Stage.objects.count() == 2 and Workload.objects.count() == 2


def test_the_admin_deletes_an_empty_stage(admin_client):
    empty = Stage.objects.create(project=Project.objects.create(name="E", slug="e"),
                                 name="S", slug="s")

    response = admin_client.post(f"/admin/workloads/stage/{empty.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302 and not Stage.objects.filter(pk=empty.pk).exists()
