"""What the workload page says about its configuration: ports with links, env, volume sizes,
what runs beside what is configured; and the admin's "View on site" links."""

from __future__ import annotations

import os

import pytest

from lib import dirsize
from tests.fixtures import images
from workloads.models import DeployRecord, EnvVar, PortMapping, VolumeMount

SECRET = "facts-s3cret-5e0a11"
REPOSITORY = images.HTTPD_V1.rpartition(":")[0]


def succeeded(workload, reference: str, **fields) -> DeployRecord:
    return DeployRecord.objects.create(
        workload=workload, reason="manual", source_kind="image", requested_reference=reference,
        pinned_reference=f"{REPOSITORY}@sha256:" + "ab" * 32, outcome="succeeded", **fields)


def test_it_shows_ports_with_links_and_env_without_secrets(client, viewer, workload, settings):
    settings.ALLOWED_HOSTS = ["berth.example"]
    PortMapping.objects.create(workload=workload, host_port=18974, container_port=80)
    EnvVar.objects.create(workload=workload, name="MODE", value="plain")
    secret = EnvVar(workload=workload, name="API_KEY")
    secret.set_value(SECRET, secret=True)
    secret.save()
    client.force_login(viewer)

    body = client.get(f"/workloads/{workload.pk}/", HTTP_HOST="berth.example:8000")

    html = body.content.decode()
    assert 'href="http://berth.example:18974/"' in html
    assert "MODE" in html and "plain" in html
    assert "API_KEY" in html and "secret, set" in html
    assert SECRET not in html


def test_it_shows_each_volumes_host_path_and_size(client, viewer, workload):
    volume = VolumeMount.objects.create(workload=workload, scope="stage", source="site",
                                        target="/data")
    os.makedirs(volume.host_path(), exist_ok=True)
    with open(os.path.join(volume.host_path(), "data.bin"), "wb") as fh:
        fh.write(b"x" * 3000)
    client.force_login(viewer)

    html = client.get(f"/workloads/{workload.pk}/").content.decode()

    assert volume.host_path() in html
    assert "2.9\xa0KB" in html


def test_the_size_walk_stops_at_its_bound(tmp_path):
    for i in range(30):
        (tmp_path / f"f{i}").write_bytes(b"x" * 10)

    bounded = dirsize.tree_size(str(tmp_path), max_entries=12)
    full = dirsize.tree_size(str(tmp_path))

    assert bounded is not None and not bounded.complete and bounded.bytes <= 120
    assert full == dirsize.TreeSize(300, complete=True, entries=30)
    assert dirsize.tree_size(str(tmp_path / "missing")) is None


def test_it_says_what_runs_after_a_rollback(client, viewer, workload):
    workload.image = images.HTTPD_V2
    workload.save()
    first = succeeded(workload, images.HTTPD_V1)
    succeeded(workload, images.HTTPD_V2)
    succeeded(workload, first.replay_reference, rolled_back_from=first)
    client.force_login(viewer)

    html = client.get(f"/workloads/{workload.pk}/").content.decode()

    assert "Running v1 (rolled back), configured v2: the next deploy runs v2." in html


@pytest.mark.parametrize(("running", "configured", "expected"), [
    (images.HTTPD_V1, images.HTTPD_V1, None),
    (images.HTTPD_V1, images.HTTPD_V2, "Running v1, configured v2: the next deploy runs v2."),
])
def test_it_says_when_the_configured_image_differs(client, viewer, workload, running,
                                                   configured, expected):
    workload.image = configured
    workload.save()
    succeeded(workload, running)
    client.force_login(viewer)

    html = client.get(f"/workloads/{workload.pk}/").content.decode()

    if expected is None:
        assert "the next deploy runs" not in html
    else:
        assert expected in html


def test_the_admin_links_to_the_pages(client, workload, django_user_model):
    admin = django_user_model.objects.create_superuser("root", password="correct horse battery")
    client.force_login(admin)
    stage, project = workload.stage, workload.stage.project

    for url, page in [
        (f"/admin/workloads/workload/{workload.pk}/change/", f"/workloads/{workload.pk}/"),
        (f"/admin/workloads/stage/{stage.pk}/change/", f"/stages/{stage.pk}/"),
        (f"/admin/workloads/project/{project.pk}/change/", f"/projects/{project.pk}/"),
    ]:
        html = client.get(url).content.decode()
        assert "View on site" in html, url
        shortcut = client.get(html.split('class="viewsitelink">')[0].rsplit('href="', 1)[1]
                              .split('"')[0])
        assert shortcut.status_code == 302 and shortcut["Location"].endswith(page)


def test_it_says_when_the_configured_git_ref_differs(client, viewer, workload):
    workload.source_kind, workload.git_url = "git", "https://git.example.com/team/app.git"
    workload.git_ref = "release"
    workload.save()
    DeployRecord.objects.create(workload=workload, reason="manual", source_kind="git",
                                requested_reference="main", pinned_reference="c" * 40,
                                outcome="succeeded")
    client.force_login(viewer)

    html = client.get(f"/workloads/{workload.pk}/").content.decode()

    assert "Running main, configured release: the next deploy runs release." in html


def test_a_huge_tree_shows_a_lower_bound(client, viewer, workload, monkeypatch):
    monkeypatch.setattr(dirsize, "MAX_ENTRIES", 25)
    first = VolumeMount.objects.create(workload=workload, scope="stage", source="big",
                                       target="/big")
    second = VolumeMount.objects.create(workload=workload, scope="stage", source="more",
                                        target="/more")
    for volume in (first, second):
        os.makedirs(volume.host_path(), exist_ok=True)
        for i in range(20):
            with open(os.path.join(volume.host_path(), f"f{i}"), "wb") as fh:
                fh.write(b"x" * 100)
    client.force_login(viewer)

    html = client.get(f"/workloads/{workload.pk}/").content.decode()

    # The first volume is walked in full (20 entries), the second until the shared bound.
    assert "2.0\xa0KB" in html and html.count("at least") == 1


def test_only_who_may_import_sees_the_upload_button(client, operator, viewer, workload):
    client.force_login(operator)
    assert "data-import" in client.get(f"/workloads/{workload.pk}/").content.decode()
    client.force_login(viewer)
    assert "data-import" not in client.get(f"/workloads/{workload.pk}/").content.decode()


def test_no_drift_once_a_rollback_set_the_configured_image_to_what_runs(client, viewer, workload):
    first = succeeded(workload, images.HTTPD_V1)
    succeeded(workload, images.HTTPD_V2)
    rolled = succeeded(workload, first.replay_reference, rolled_back_from=first)
    workload.image = rolled.pinned_reference  # what a rollback with configuration sets
    workload.save()
    client.force_login(viewer)

    html = client.get(f"/workloads/{workload.pk}/").content.decode()

    assert "the next deploy runs" not in html
