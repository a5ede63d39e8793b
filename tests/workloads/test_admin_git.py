"""Git workloads in the admin: the repository credential is write-only, even in the URL."""

from __future__ import annotations

import pytest
from django.utils import timezone

from tests.workloads.test_secrets import tables_containing
from workloads.models import DeployLog, DeployRecord, Stage, Workload

pytestmark = pytest.mark.django_db
TOKEN = "ghp-admin-token-2c9e41"  # noqa: S105


def form_data(stage: Stage, **fields) -> dict[str, str]:
    now = timezone.now()
    data = {
        "stage": str(stage.pk), "name": "Shop", "slug": "shop", "replicas": "1",
        "created_0": now.strftime("%Y-%m-%d"), "created_1": now.strftime("%H:%M:%S"),
        "source_kind": "git", "image": "", "registry_credential": "",
        "git_url": "https://github.com/acme/shop.git", "git_ref": "main",
        "git_dockerfile": "Dockerfile", "git_context": ".", "build_args": "{}",
        "git_username": "", "git_password": "",
        "pre_backup_hook": "", "post_backup_hook": "", "backup_hook_timeout": "300",
        "pre_hook_failure": "abort",
    }
    for prefix in ("volumes", "env_vars", "ports", "containers"):
        data |= {f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0"}
    return data | fields


@pytest.fixture
def stage(workload) -> Stage:
    return workload.stage


def test_a_credential_pasted_into_the_url_is_stored_apart_and_never_rendered(
    admin_client, stage
):
    data = form_data(stage, git_url=f"https://bot:{TOKEN}@github.com/acme/shop.git")

    response = admin_client.post("/admin/workloads/workload/add/", data)

    assert response.status_code == 302, response.context and response.context["errors"]
    workload = Workload.objects.get(stage=stage, slug="shop")
    assert workload.git_url == "https://github.com/acme/shop.git"
    assert workload.get_git_credential() == ("bot", TOKEN)
    assert tables_containing(TOKEN) == []
    page = admin_client.get(f"/admin/workloads/workload/{workload.pk}/change/")
    assert TOKEN.encode() not in page.content
    assert b"stored (never shown)" in page.content


def test_a_form_with_errors_does_not_render_the_pasted_credential_back(admin_client, stage):
    data = form_data(
        stage, git_url=f"https://bot:{TOKEN}@github.com/acme/shop.git", git_ref="--upload-pack=x",
        git_password=TOKEN,
    )

    response = admin_client.post("/admin/workloads/workload/add/", data)

    assert response.status_code == 200
    assert "git_ref" in response.context["adminform"].form.errors
    assert TOKEN.encode() not in response.content
    assert b"https://github.com/acme/shop.git" in response.content
    assert not Workload.objects.filter(slug="shop").exists()


def test_the_credential_fields_replace_keep_or_remove_it(admin_client, stage):
    admin_client.post("/admin/workloads/workload/add/", form_data(
        stage, git_username="bot", git_password=TOKEN,
    ))
    workload = Workload.objects.get(stage=stage, slug="shop")
    url = f"/admin/workloads/workload/{workload.pk}/change/"
    assert workload.get_git_credential() == ("bot", TOKEN)

    admin_client.post(url, form_data(stage, git_password="rotated-71d0"))
    workload.refresh_from_db()
    assert workload.get_git_credential() == ("bot", "rotated-71d0")

    admin_client.post(url, form_data(stage))  # both left empty: kept
    workload.refresh_from_db()
    assert workload.get_git_credential() == ("bot", "rotated-71d0")

    admin_client.post(url, form_data(stage, clear_git_credential="on"))
    workload.refresh_from_db()
    assert not workload.has_git_credential


def test_an_ssh_url_with_a_stored_credential_is_refused(admin_client, stage):
    data = form_data(stage, git_url="ssh://git@github.com/acme/shop.git", git_password=TOKEN)

    response = admin_client.post("/admin/workloads/workload/add/", data)

    assert response.status_code == 200
    assert "git_url" in response.context["adminform"].form.errors
    assert TOKEN.encode() not in response.content


def test_the_ledger_shows_a_git_deploys_commit_and_escaped_build_log(admin_client, make_workload):
    workload = make_workload(
        image="", source_kind="git", git_url="https://codeberg.org/acme/shop.git"
    )
    record = DeployRecord.open(workload=workload, reason=DeployRecord.Reason.MANUAL)
    sha = "a" * 40
    DeployRecord.objects.filter(pk=record.pk).update(
        outcome="failed", failure_code="build_failed", pinned_reference=sha,
        repository=workload.git_url,
    )
    DeployLog.objects.create(deploy=record, text="<b>step</b>\n", failed_step="Step 2/2 : RUN x")

    html = admin_client.get(f"/admin/workloads/deployrecord/{record.pk}/change/").content.decode()

    assert f'href="https://codeberg.org/acme/shop/commit/{sha}"' in html
    assert "&lt;b&gt;step&lt;/b&gt;" in html and "<b>step</b>" not in html
    assert "Step 2/2 : RUN x" in html
    assert admin_client.get("/admin/workloads/workload/").status_code == 200


def test_moving_the_url_to_another_host_needs_the_credential_again(admin_client, stage):
    admin_client.post("/admin/workloads/workload/add/", form_data(
        stage, git_username="bot", git_password=TOKEN,
    ))
    workload = Workload.objects.get(stage=stage, slug="shop")
    url = f"/admin/workloads/workload/{workload.pk}/change/"

    moved = admin_client.post(url, form_data(stage, git_url="https://evil.example/shop.git"))

    assert moved.status_code == 200
    assert "another host" in str(moved.context["adminform"].form.errors["git_url"])
    workload.refresh_from_db()
    assert workload.git_url == "https://github.com/acme/shop.git"
    again = admin_client.post(url, form_data(
        stage, git_url="https://evil.example/shop.git", git_password="for-the-new-host",
    ))
    assert again.status_code == 302
    workload.refresh_from_db()
    # The stored username (a token, perhaps) did not follow to the new host.
    assert workload.get_git_credential() == ("", "for-the-new-host")
    assert workload.git_credential_matches_url
