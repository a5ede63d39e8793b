"""/api/projects and /api/stages: CRUD, permissions, and 409 for one that still has workloads."""

from __future__ import annotations

import pytest

from workloads.models import Project, Stage, Workload


@pytest.fixture
def project(db) -> Project:
    return Project.objects.create(name="Shop", slug="shop")


@pytest.fixture
def stage(project) -> Stage:
    return Stage.objects.create(project=project, name="Prod", slug="prod")


def test_it_creates_reads_updates_and_deletes_a_project(api_as, operator):
    api = api_as(operator)

    created = api.post("/api/projects", {"name": "Shop", "slug": "shop"}, format="json")
    pk = created.json()["id"]
    listed = api.get("/api/projects")
    patched = api.patch(f"/api/projects/{pk}", {"name": "The shop"}, format="json")
    deleted = api.delete(f"/api/projects/{pk}")

    assert created.status_code == 201, created.json()
    assert listed.json()["results"] == [{"id": pk, "name": "Shop", "slug": "shop",
                                         "created": created.json()["created"], "stages": []}]
    assert patched.status_code == 200 and patched.json()["name"] == "The shop"
    assert deleted.status_code == 204
    assert not Project.objects.exists()


def test_it_creates_reads_updates_and_deletes_a_stage(api_as, operator, project):
    api = api_as(operator)

    created = api.post("/api/stages", {"project": project.pk, "name": "Prod", "slug": "prod"},
                       format="json")
    pk = created.json()["id"]
    clash = api.post("/api/stages", {"project": project.pk, "name": "Again", "slug": "prod"},
                     format="json")
    assert clash.status_code == 400 and Stage.objects.count() == 1
    fetched = api.get(f"/api/stages/{pk}")
    patched = api.patch(f"/api/stages/{pk}", {"slug": "production"}, format="json")
    in_project = api.get(f"/api/projects/{project.pk}")
    deleted = api.delete(f"/api/stages/{pk}")

    assert created.status_code == 201, created.json()
    assert fetched.json()["project_slug"] == "shop"
    assert patched.status_code == 200 and patched.json()["slug"] == "production"
    assert in_project.json()["stages"] == [pk]
    assert deleted.status_code == 204 and not Stage.objects.exists()


@pytest.mark.parametrize("body", [
    {"name": "X", "slug": "-bad"},
    {"name": "X", "slug": "UPPER"},
    {"name": "", "slug": "ok"},
    {"slug": "ok"},
])
def test_it_refuses_bad_input_and_saves_nothing(api_as, operator, body):
    response = api_as(operator).post("/api/projects", body, format="json")

    assert response.status_code == 400
    assert not Project.objects.exists()


def test_it_refuses_to_delete_what_still_has_workloads(api_as, operator, make_workload):
    workload = make_workload()
    stage = workload.stage
    api = api_as(operator)

    stage_refused = api.delete(f"/api/stages/{stage.pk}")
    project_refused = api.delete(f"/api/projects/{stage.project.pk}")

    assert stage_refused.status_code == project_refused.status_code == 409
    assert "still has workloads" in stage_refused.json()["detail"]
    assert "still has workloads" in project_refused.json()["detail"]
    assert Workload.objects.filter(pk=workload.pk).exists()
    assert Stage.objects.filter(pk=stage.pk).exists()


def test_it_checks_permissions(api, api_as, viewer, outsider, project, stage):
    assert api.get("/api/projects").status_code == 401
    assert api_as(outsider).get("/api/projects").status_code == 403
    assert api_as(outsider).get(f"/api/stages/{stage.pk}").status_code == 403
    viewing = api_as(viewer)
    assert viewing.get("/api/projects").status_code == 200
    assert viewing.get(f"/api/stages/{stage.pk}").status_code == 200
    assert viewing.post("/api/projects", {"name": "X", "slug": "x"},
                        format="json").status_code == 403
    assert viewing.patch(f"/api/stages/{stage.pk}", {"name": "Y"},
                         format="json").status_code == 403
    assert viewing.delete(f"/api/stages/{stage.pk}").status_code == 403
    assert viewing.delete(f"/api/projects/{project.pk}").status_code == 403
    assert viewing.put(f"/api/projects/{project.pk}", {"name": "Z", "slug": "z"},
                       format="json").status_code == 405
    assert viewing.get("/api/projects/999999").status_code == 404
    stage.refresh_from_db()
    assert stage.name == "Prod" and Project.objects.count() == 1


def test_the_list_takes_two_queries(api_as, operator, project, stage, django_assert_num_queries):
    api = api_as(operator)
    api.get("/api/projects")  # the user's permissions, cached on the user from here on
    Project.objects.create(name="Other", slug="other")
    # The count for the pager, the projects, their stages (one prefetch).
    with django_assert_num_queries(3):
        response = api.get("/api/projects")
    assert response.json()["count"] == 2
