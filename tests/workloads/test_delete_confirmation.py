"""Deleting a workload or a snapshot needs the workload's path, project/stage/workload: the
X-Confirm-Delete header in the API (428 without it or when wrong, after 401/403 and 404), the
typed confirmation in the pages. Without it nothing is deleted and the engine is not asked."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from engine import captures, deploys
from snapshots.models import Snapshot
from tests.snapshots.test_retention import exists, fake
from workloads.models import Workload

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commits_as_in_production")]

HTMX = {"HX-Request": "true"}


@pytest.fixture
def engine_calls(monkeypatch) -> list[str]:
    """What reached the engine's two deletes (they still run)."""
    calls: list[str] = []
    remove, delete = deploys.remove_workload, captures.delete_snapshot

    def spy_remove(**kwargs):
        calls.append("remove_workload")
        return remove(**kwargs)

    def spy_delete(**kwargs):
        calls.append("delete_snapshot")
        return delete(**kwargs)

    monkeypatch.setattr(deploys, "remove_workload", spy_remove)
    monkeypatch.setattr(captures, "delete_snapshot", spy_delete)
    return calls


def header(workload: Workload, kind: str | None) -> dict:
    """The X-Confirm-Delete header as a test client's extra: none, or a value of `kind`."""
    if kind is None:
        return {}
    value = {"path": workload.path, "slug": workload.slug, "upper": workload.path.upper(),
             "spaced": f" {workload.path}", "stage": f"{workload.stage.project.slug}/"
             f"{workload.stage.slug}", "wrong": "other/prod/web", "": ""}[kind]
    return {"HTTP_X_CONFIRM_DELETE": value}


def snapshot_url(workload: Workload, snapshot: Snapshot) -> str:
    return f"/api/workloads/{workload.pk}/snapshots/{snapshot.pk}"


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- the API: a workload ----------------------------------------------------------------------

# The bare slug is unique only within its stage, so it is not enough; neither is another case,
# a space, or the stage's path.
REFUSED = [None, "", "wrong", "slug", "upper", "spaced", "stage"]


@pytest.mark.parametrize("kind", REFUSED)
def test_a_workload_delete_without_its_path_is_428(api_as, operator, workload, engine_calls,
                                                   kind):
    response = api_as(operator).delete(f"/api/workloads/{workload.pk}", **header(workload, kind))

    assert response.status_code == 428, response.content
    detail = response.json()["detail"]
    assert "X-Confirm-Delete" in detail and workload.path in detail
    assert Workload.objects.filter(pk=workload.pk).exists() and engine_calls == []


def test_a_workload_delete_with_its_path_deletes_it(api_as, operator, workload, engine_calls):
    response = api_as(operator).delete(f"/api/workloads/{workload.pk}",
                                       **header(workload, "path"))

    assert response.status_code == 204, response.content
    assert not Workload.objects.filter(pk=workload.pk).exists()
    assert engine_calls == ["remove_workload"]


@pytest.mark.parametrize(("who", "expected"),
                         [(None, 401), ("outsider", 403), ("viewer", 403)])
@pytest.mark.parametrize("kind", [None, "path"])
def test_authentication_and_permission_come_before_the_confirmation(
    request, api, workload, engine_calls, who, expected, kind
):
    if who:
        api.force_authenticate(request.getfixturevalue(who))
    snapshot = fake(workload)

    for url in (f"/api/workloads/{workload.pk}", snapshot_url(workload, snapshot)):
        assert api.delete(url, **header(workload, kind)).status_code == expected, url

    assert Workload.objects.filter(pk=workload.pk).exists()
    assert Snapshot.objects.filter(pk=snapshot.pk).exists() and exists(snapshot)
    assert engine_calls == []


def test_an_unknown_id_is_404_before_the_confirmation(api_as, operator, workload, make_workload,
                                                      engine_calls):
    other = make_workload()
    snapshot = fake(workload)
    client = api_as(operator)

    assert client.delete("/api/workloads/999999").status_code == 404
    assert client.delete(f"/api/workloads/999999/snapshots/{snapshot.pk}").status_code == 404
    assert client.delete(f"/api/workloads/{workload.pk}/snapshots/999999").status_code == 404
    # Another workload's snapshot, even with that workload's path.
    assert client.delete(snapshot_url(other, snapshot),
                         **header(other, "path")).status_code == 404
    assert Snapshot.objects.filter(pk=snapshot.pk).exists() and engine_calls == []


# --- the API: a snapshot ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", REFUSED)
def test_a_snapshot_delete_without_the_path_is_428(api_as, operator, workload, engine_calls,
                                                   kind):
    snapshot = fake(workload)

    response = api_as(operator).delete(snapshot_url(workload, snapshot),
                                       **header(workload, kind))

    assert response.status_code == 428, response.content
    detail = response.json()["detail"]
    assert "X-Confirm-Delete" in detail and workload.path in detail
    assert Snapshot.objects.filter(pk=snapshot.pk).exists() and exists(snapshot)
    assert engine_calls == []


def test_a_snapshot_delete_with_the_path_deletes_it(api_as, operator, workload, engine_calls):
    snapshot = fake(workload)

    response = api_as(operator).delete(snapshot_url(workload, snapshot),
                                       **header(workload, "path"))

    assert response.status_code == 204, response.content
    assert not Snapshot.objects.filter(pk=snapshot.pk).exists() and not exists(snapshot)
    assert engine_calls == ["delete_snapshot"]
    assert Workload.objects.filter(pk=workload.pk).exists()


def test_removing_copies_without_their_permission_is_403_before_428(api_as, operator, workload,
                                                                    engine_calls):
    snapshot = fake(workload)
    client = api_as(operator)

    refused = client.delete(snapshot_url(workload, snapshot) + "?with_copies=1")
    operator.user_permissions.add(Permission.objects.get(codename="delete_snapshotcopy"))
    fresh = type(operator).objects.get(pk=operator.pk)  # no cached permissions
    unconfirmed = api_as(fresh).delete(snapshot_url(workload, snapshot) + "?with_copies=1")

    assert refused.status_code == 403 and unconfirmed.status_code == 428
    assert Snapshot.objects.filter(pk=snapshot.pk).exists() and engine_calls == []


def test_the_schema_documents_the_delete_headers(api_as, operator):
    schema = api_as(operator).get("/api/schema", HTTP_ACCEPT="application/json").json()

    def headers(path: str, method: str) -> dict[str, bool]:
        return {p["name"]: p.get("required", False)
                for p in schema["paths"][path][method].get("parameters", [])
                if p["in"] == "header"}

    assert headers("/api/workloads/{id}", "delete") == {"X-Confirm-Delete": True}
    assert headers("/api/workloads/{workload_pk}/snapshots/{id}", "delete") == \
        {"X-Confirm-Delete": True}
    for path, method in (("/api/workloads/{id}", "delete"),
                         ("/api/workloads/{workload_pk}/snapshots/{id}", "delete")):
        assert "428" in schema["paths"][path][method]["responses"]
    # The restore's header is on the restore, not on the copies beside it.
    assert headers("/api/workloads/{workload_pk}/snapshots/{id}/restore", "post") == \
        {"X-Confirm-Restore": True}
    assert headers("/api/workloads/{workload_pk}/snapshots/{id}/copies", "get") == {}


# --- the pages: a snapshot --------------------------------------------------------------------

def post_delete(client: Client, workload: Workload, snapshot: Snapshot, typed: str | None):
    data = {} if typed is None else {"confirm": typed}
    return client.post(f"/workloads/{workload.pk}/snapshots/{snapshot.pk}/delete", data,
                       headers=HTMX)


@pytest.mark.parametrize("typed", [None, "", "slug", "wrong", "upper"])
def test_the_page_deletes_no_snapshot_without_the_typed_path(operator, workload, engine_calls,
                                                             typed):
    snapshot = fake(workload)
    value = {"slug": workload.slug, "upper": workload.path.upper(),
             "wrong": "other/prod/web"}.get(typed, typed)

    response = post_delete(logged_in(operator), workload, snapshot, value)

    assert response.status_code == 200
    html = response.content.decode()
    assert (f"Type the workload&#x27;s path, {workload.path}, to confirm the delete; nothing "
            "was deleted.") in html
    assert f'id="snapshot-{snapshot.pk}"' in html
    assert Snapshot.objects.filter(pk=snapshot.pk).exists() and exists(snapshot)
    assert engine_calls == []


def test_the_page_deletes_a_snapshot_with_the_typed_path(operator, workload, engine_calls):
    snapshot = fake(workload)

    response = post_delete(logged_in(operator), workload, snapshot, f" {workload.path} ")

    assert response.status_code == 200
    assert "No snapshots yet." in response.content.decode()
    assert not Snapshot.objects.filter(pk=snapshot.pk).exists() and not exists(snapshot)
    assert engine_calls == ["delete_snapshot"]


def test_without_htmx_a_wrong_path_comes_back_as_a_message(operator, workload, engine_calls):
    snapshot = fake(workload)
    client = logged_in(operator)

    response = client.post(f"/workloads/{workload.pk}/snapshots/{snapshot.pk}/delete",
                           {"confirm": workload.slug}, follow=True)

    assert response.redirect_chain[-1][0] == f"/workloads/{workload.pk}/"
    assert "to confirm the delete; nothing was deleted." in response.content.decode()
    assert Snapshot.objects.filter(pk=snapshot.pk).exists() and engine_calls == []


def test_the_page_checks_the_permission_and_the_snapshot_first(viewer, operator, workload,
                                                               make_workload, engine_calls):
    snapshot = fake(workload)
    other = make_workload()

    assert post_delete(logged_in(viewer), workload, snapshot, workload.path).status_code == 403
    assert post_delete(logged_in(operator), other, snapshot, other.path).status_code == 404
    assert Snapshot.objects.filter(pk=snapshot.pk).exists() and engine_calls == []


def test_the_delete_dialog_asks_for_the_path_without_inline_handlers(operator, workload):
    snapshot = fake(workload)

    html = logged_in(operator).get(f"/workloads/{workload.pk}/").content.decode()

    dialog = re.search(rf'<dialog id="snapshot-delete-{snapshot.pk}".*?</dialog>', html,
                       re.S).group(0)
    assert f"Delete snapshot #{snapshot.pk}?" in dialog
    assert f"Type the workload's path, <code>{workload.path}</code>, to confirm:" in dialog
    assert f'name="confirm" autocomplete="off" spellcheck="false" ' \
           f'data-expected="{workload.path}"' in dialog
    # Disabled until the path is typed (static/js/confirm.js enables it), and it sends it.
    assert re.search(r'class="danger confirm-delete" disabled data-confirmed\s+'
                     rf'hx-post="/workloads/{workload.pk}/snapshots/{snapshot.pk}/delete" '
                     r'hx-include="closest form"', dialog)
    assert f'data-opens="snapshot-delete-{snapshot.pk}"' in html
    assert 'src="/static/js/confirm.js"' in html
    panel = re.search(r'<section id="snapshots".*?</section>', html, re.S).group(0)
    assert not re.search(r"\son[a-z]+=|hx-on", panel)
