"""The backup policy pages (/backups/policies/), the keep-rule preview, and backup health on
the workload page and the dashboard. Rows are made directly: no capture, no S3."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from backups.models import BackupPolicy, BackupTarget, SnapshotCopy
from snapshots.models import Snapshot
from tests.workloads.test_views import CLOSED_SOCKET

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}
LIST = "/backups/policies/"
LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)


def with_perms(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="correct horse battery")
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def planner(db) -> User:
    """Every backup policy permission, and may view workloads."""
    return with_perms("pia-planner", "view_backuppolicy", "add_backuppolicy",
                      "change_backuppolicy", "delete_backuppolicy", "view_workload")


def as_user(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def form_data(**overrides) -> dict:
    """What the form posts for a daily policy (a checkbox left out is off)."""
    return {"enabled": "on", "every": "daily", "minute": "0", "at": "03:00", "weekday": "0",
            "cron": "", "time_zone": "UTC", "keep_last": "0", "keep_hourly": "0",
            "keep_daily": "7", "keep_weekly": "4", "keep_monthly": "6",
            "keep_yearly": "0"} | overrides


@pytest.fixture
def policy(workload) -> BackupPolicy:
    made = BackupPolicy.objects.create(workload=workload, every="daily")
    BackupPolicy.objects.filter(pk=made.pk).update(active_since=LONG_AGO)
    made.refresh_from_db()
    return made


# --- who may do what -----------------------------------------------------------------------

def urls(policy: BackupPolicy) -> list[tuple[str, str, str]]:
    """(method, URL, the permission it needs) of every page and action."""
    return [
        ("get", LIST, "view"),
        ("get", "/backups/policies/add", "add"),
        ("post", "/backups/policies/add", "add"),
        ("post", "/backups/policies/preview", "add"),
        ("get", f"/backups/policies/{policy.pk}/", "change"),
        ("post", f"/backups/policies/{policy.pk}/", "change"),
        ("post", f"/backups/policies/{policy.pk}/preview", "change"),
        ("post", f"/backups/policies/{policy.pk}/delete", "delete"),
    ]


def test_it_sends_anonymous_users_to_the_login_page(policy):
    for method, url, _perm in urls(policy):
        response = getattr(Client(), method)(url, form_data(every="hourly"))
        assert response.status_code == 302, url
        assert response["Location"].startswith("/login/?next="), url


def test_each_page_needs_its_own_permission(operator, viewer, policy):
    """Operators and viewers hold no policy permission by default; each permission opens its
    own pages only."""
    for user in (operator, viewer):
        for method, url, _perm in urls(policy):
            answer = getattr(as_user(user), method)(url, form_data(every="hourly"))
            assert answer.status_code == 403, (user, url)
    for perm in ("view", "add", "change", "delete"):
        client = as_user(with_perms(f"only-{perm}", f"{perm}_backuppolicy"))
        for method, url, needed in urls(policy):
            if needed != perm:
                answer = getattr(client, method)(url, form_data(every="hourly"))
                assert answer.status_code == 403, (perm, url)
    policy.refresh_from_db()
    assert policy.every == "daily" and BackupPolicy.objects.count() == 1


def test_the_list_shows_each_policy_and_its_links_by_permission(planner, policy):
    html = as_user(planner).get(LIST).content.decode()
    assert f'id="policy-{policy.pk}"' in html and "Daily at 03:00" in html
    assert f"/backups/policies/{policy.pk}/" in html and "/backups/policies/add" in html
    looker = with_perms("lou-looker", "view_backuppolicy")
    html = as_user(looker).get(LIST).content.decode()
    assert f'id="policy-{policy.pk}"' in html
    assert f"/backups/policies/{policy.pk}/" not in html and "/backups/policies/add" not in html
    assert f'href="{LIST}"' in html  # the navigation


def test_unknown_policies_are_404_and_the_actions_are_posts(planner):
    client = as_user(planner)
    assert client.get("/backups/policies/999/").status_code == 404
    assert client.post("/backups/policies/999/", form_data()).status_code == 404
    assert client.post("/backups/policies/999/delete").status_code == 404
    assert client.post("/backups/policies/999/preview", form_data()).status_code == 404
    assert client.get("/backups/policies/1/delete").status_code == 405
    assert client.get("/backups/policies/preview").status_code == 405


# --- add, change, disable, delete ----------------------------------------------------------

def test_it_adds_a_stage_policy_with_targets(planner, workload):
    target = BackupTarget.objects.create(name="nas", kind="s3", bucket="berth-p",
                                         unencrypted=True)
    client = as_user(planner)
    assert f'value="{workload.pk}" selected' in client.get(
        f"/backups/policies/add?workload={workload.pk}").content.decode()

    answer = client.post("/backups/policies/add", form_data(
        stage=workload.stage_id, every="weekly", at="04:30", weekday="6",
        time_zone="Europe/Berlin", targets=[target.pk]))

    assert answer.status_code == 302 and answer["Location"] == LIST
    made = BackupPolicy.objects.get()
    assert (made.stage_id, made.workload_id, made.expression()) == (
        workload.stage_id, None, "30 4 * * 0")
    assert list(made.targets.all()) == [target]
    assert BackupPolicy.objects.for_workload(workload) == made


@pytest.mark.parametrize("bad", [
    {},  # no owner
    {"workload": "OWNER", "stage": "STAGE"},  # two owners
    {"workload": "OWNER", "every": "cron", "cron": "at night"},
    {"workload": "OWNER", "time_zone": "Mars/Olympus"},
    {"workload": "OWNER", "minute": "75"},
    {"workload": "OWNER", "weekday": "9"},
    {"workload": "OWNER", "keep_daily": "-2"},
    {"workload": "OWNER", "at": "25:99"},
    {"workload": "OWNER", "targets": ["999"]},
])
def test_bad_input_saves_nothing_and_says_why(planner, workload, bad):
    owners = {"OWNER": workload.pk, "STAGE": workload.stage_id}
    fields = {key: owners.get(value, value) if isinstance(value, str) else value
              for key, value in bad.items()}
    answer = as_user(planner).post("/backups/policies/add", form_data(**fields))
    assert answer.status_code == 200
    assert "Nothing was saved" in answer.content.decode()
    assert not BackupPolicy.objects.exists()


def test_changing_the_schedule_restarts_it_and_other_changes_do_not(planner, policy):
    client = as_user(planner)
    url = f"/backups/policies/{policy.pk}/"

    client.post(url, form_data(keep_daily="3", enabled=""))
    policy.refresh_from_db()
    assert (policy.keep_daily, policy.enabled, policy.active_since) == (3, False, LONG_AGO)

    before = timezone.now()
    client.post(url, form_data(at="05:15", enabled="on"))
    policy.refresh_from_db()
    assert policy.enabled and policy.active_since >= before


def test_the_owner_cannot_be_changed(planner, policy, make_workload):
    other = make_workload()
    as_user(planner).post(f"/backups/policies/{policy.pk}/",
                          form_data(workload=other.pk, every="hourly"))
    policy.refresh_from_db()
    assert policy.workload_id != other.pk and policy.every == "hourly"


def test_an_invalid_change_saves_nothing(planner, policy):
    answer = as_user(planner).post(f"/backups/policies/{policy.pk}/",
                                   form_data(every="cron", cron="", keep_last="3"))
    assert answer.status_code == 200 and "Nothing was saved" in answer.content.decode()
    policy.refresh_from_db()
    assert (policy.every, policy.keep_last, policy.active_since) == ("daily", 0, LONG_AGO)


def test_it_deletes_a_policy(planner, policy):
    answer = as_user(planner).post(f"/backups/policies/{policy.pk}/delete")
    assert answer.status_code == 302 and answer["Location"] == LIST
    assert not BackupPolicy.objects.exists()


# --- the preview ---------------------------------------------------------------------------

def daily_snapshots(workload, days: int) -> list[Snapshot]:
    """One ready scheduled snapshot a day at 03:00, newest first."""
    today = timezone.now().replace(hour=3, minute=0, second=0, microsecond=0)
    return [Snapshot.objects.create(workload=workload, kind="scheduled", state="ready",
                                    created=today - timedelta(days=n)) for n in range(days)]


def test_the_preview_lists_what_new_keep_rules_would_delete_and_saves_nothing(planner, policy):
    taken = daily_snapshots(policy.workload, 5)
    manual = Snapshot.objects.create(workload=policy.workload, kind="manual", state="ready",
                                     created=timezone.now() - timedelta(days=9))

    answer = as_user(planner).post(f"/backups/policies/{policy.pk}/preview",
                                   form_data(keep_daily="2", keep_weekly="0",
                                             keep_monthly="0"), headers=HTMX)

    html = answer.content.decode()
    assert answer.status_code == 200 and html.lstrip().startswith('<div id="keep-preview"')
    assert f'data-workload="{policy.workload_id}" data-deleted="3"' in html
    for snapshot in taken[2:]:
        assert f'data-snapshot="{snapshot.pk}"' in html
    for snapshot in [*taken[:2], manual]:
        assert f'data-snapshot="{snapshot.pk}"' not in html
    policy.refresh_from_db()
    assert policy.keep_daily == 7 and Snapshot.objects.count() == 6


def test_the_preview_of_a_new_project_policy_covers_its_workloads(planner, workload):
    daily_snapshots(workload, 3)
    answer = as_user(planner).post("/backups/policies/preview", form_data(
        project=workload.stage.project_id, keep_last="1", keep_daily="0", keep_weekly="0",
        keep_monthly="0"), headers=HTMX)
    assert f'data-workload="{workload.pk}" data-deleted="2"' in answer.content.decode()
    assert not BackupPolicy.objects.exists()


def test_the_preview_of_bad_input_says_so(planner, workload):
    answer = as_user(planner).post("/backups/policies/preview",
                                   form_data(workload=workload.pk, keep_daily="x"),
                                   headers=HTMX)
    html = answer.content.decode()
    assert answer.status_code == 200 and "Correct the fields" in html
    assert "data-deleted" not in html


# --- health on the workload page and the dashboard -----------------------------------------

def test_the_workload_page_shows_the_policy_it_follows_and_its_health(planner, workload,
                                                                       monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", CLOSED_SOCKET)
    BackupPolicy.objects.create(stage=workload.stage, every="hourly")
    html = as_user(planner).get(f"/workloads/{workload.pk}/").content.decode()
    assert 'id="backup-health" class="card" data-health="ok"' in html
    assert 'data-follows="stage"' in html and "Hourly at :00" in html
    assert f"/backups/policies/add?workload={workload.pk}" in html


def test_the_dashboard_marks_stale_workloads_in_bounded_queries(
        client, viewer, make_workload, django_assert_max_num_queries, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", CLOSED_SOCKET)  # keep the engine out of the count
    target = BackupTarget.objects.create(name="t", kind="s3", bucket="berth-d",
                                         unencrypted=True)
    healthy, failing = make_workload(slug="ok"), make_workload(slug="bad")
    for workload in (healthy, failing):
        BackupPolicy.objects.create(workload=workload, every="daily")
        snap = Snapshot.objects.create(workload=workload, kind="scheduled", state="ready")
        SnapshotCopy.objects.create(
            snapshot=snap, workload=workload, target=target, finished=timezone.now(),
            state="failed" if workload == failing else "verified",
            failure_code="no_bucket" if workload == failing else "")
    for n in range(5):
        make_workload(slug=f"more-{n}")
    client.force_login(viewer)

    # Session, user, permissions (2), the workloads, their live containers, their health
    # (6): whatever their number.
    with django_assert_max_num_queries(13):
        html = client.get("/").content.decode()

    assert html.count('data-health="stale"') == 1 and html.count('data-health="ok"') == 1
    assert html.count('class="badge health-bad"') == 1
