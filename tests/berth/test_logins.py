"""Failed logins are limited per account and per client address: the login page,
the admin's login and API tokens alike (web/logins.py, docs/security.md)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

PASSWORD = "correct horse battery"
LIMIT = 3
LOGIN_PAGES = ["/login/", "/admin/login/"]

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _limit(settings):
    settings.AXES_FAILURE_LIMIT = LIMIT


@pytest.fixture
def admin(db) -> User:
    return User.objects.create_superuser("ada-admin", password=PASSWORD)


def log_in(path: str, username: str, password: str, address: str) -> Client:
    client = Client()
    client.response = client.post(
        path, {"username": username, "password": password, "next": "/"}, REMOTE_ADDR=address
    )
    return client


def logged_in(client: Client) -> bool:
    return client.get("/").status_code == 200


def end_lockouts() -> None:
    """As if the lockout time had passed."""
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(hours=1))


@pytest.mark.parametrize("path", LOGIN_PAGES)
def test_an_account_is_locked_after_the_limit_even_with_the_right_password(admin, path):
    answers = [log_in(path, admin.username, "wrong", f"10.0.0.{n}").response.status_code
               for n in range(LIMIT)]
    assert answers == [200] * (LIMIT - 1) + [429]  # the failure that reaches the limit locks

    refused = log_in(path, admin.username, PASSWORD, "10.0.1.1")

    assert refused.response.status_code == 429
    assert "Too many failed logins" in refused.response.content.decode()
    assert not logged_in(refused)

    end_lockouts()
    accepted = log_in(path, admin.username, PASSWORD, "10.0.1.1")
    assert accepted.response.status_code == 302 and logged_in(accepted)


@pytest.mark.parametrize("path", LOGIN_PAGES)
def test_an_address_is_locked_after_the_limit_across_accounts(admin, path):
    for n in range(LIMIT):
        log_in(path, f"nobody-{n}", "wrong", "10.0.0.9")

    refused = log_in(path, admin.username, PASSWORD, "10.0.0.9")
    elsewhere = log_in(path, admin.username, PASSWORD, "10.0.0.10")

    assert refused.response.status_code == 429 and not logged_in(refused)
    assert elsewhere.response.status_code == 302 and logged_in(elsewhere)


def test_a_login_below_the_limit_succeeds_and_clears_the_count(admin):
    for _ in range(LIMIT - 1):
        log_in("/login/", admin.username, "wrong", "10.0.0.1")
    assert logged_in(log_in("/login/", admin.username, PASSWORD, "10.0.0.1"))

    for _ in range(LIMIT - 1):
        log_in("/login/", admin.username, "wrong", "10.0.0.1")
    assert logged_in(log_in("/login/", admin.username, PASSWORD, "10.0.0.1"))


def test_the_lockout_page_is_in_russian_with_the_russian_cookie(admin, settings):
    for n in range(LIMIT):
        log_in("/login/", admin.username, "wrong", f"10.0.0.{n}")
    client = Client()
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "ru"

    refused = client.post("/login/", {"username": admin.username, "password": PASSWORD},
                          REMOTE_ADDR="10.0.2.2")

    assert refused.status_code == 429
    assert "Слишком много неудачных входов" in refused.content.decode()


def test_bad_tokens_lock_their_address_out_of_the_api(admin):
    good = Token.objects.create(user=admin).key
    api = APIClient()
    answers = [api.get("/api/workloads", HTTP_AUTHORIZATION=f"Token wrong{n}",
                       REMOTE_ADDR="10.0.3.3").status_code for n in range(LIMIT)]
    assert answers == [401] * (LIMIT - 1) + [429]

    refused = api.get("/api/workloads", HTTP_AUTHORIZATION=f"Token {good}", REMOTE_ADDR="10.0.3.3")
    elsewhere = api.get("/api/workloads", HTTP_AUTHORIZATION=f"Token {good}",
                        REMOTE_ADDR="10.0.3.4")

    assert refused.status_code == 429
    assert refused.json()["detail"] == "Too many failed logins from this address. Try again later."
    assert elsewhere.status_code == 200

    end_lockouts()
    again = api.get("/api/workloads", HTTP_AUTHORIZATION=f"Token {good}", REMOTE_ADDR="10.0.3.3")
    assert again.status_code == 200


def test_bad_tokens_count_against_the_address_for_the_login_page_too(admin):
    api = APIClient()
    for n in range(LIMIT):
        api.get("/api/workloads", HTTP_AUTHORIZATION=f"Token wrong{n}", REMOTE_ADDR="10.0.4.4")

    assert log_in("/login/", admin.username, PASSWORD, "10.0.4.4").response.status_code == 429


def test_a_forwarded_for_header_does_not_change_the_address(admin):
    for n in range(LIMIT):
        Client().post("/login/", {"username": f"x{n}", "password": "wrong"},
                      REMOTE_ADDR="10.0.5.5", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")

    assert log_in("/login/", admin.username, PASSWORD, "10.0.5.5").response.status_code == 429


def test_no_password_is_kept_in_the_attempt_records(admin):
    log_in("/login/", admin.username, "hunter2-secret", "10.0.6.6")
    log_in("/admin/login/", admin.username, "hunter2-secret", "10.0.6.6")

    rows = list(AccessAttempt.objects.values_list("get_data", "post_data"))
    assert rows
    assert not any("hunter2-secret" in str(value) for row in rows for value in row)


def test_the_admin_lists_and_can_end_lockouts(admin):
    for n in range(LIMIT):
        log_in("/login/", "olga-operator", "wrong", f"10.0.7.{n}")
    client = Client()
    client.force_login(admin)

    listed = client.get("/admin/axes/accessattempt/")

    assert listed.status_code == 200 and "olga-operator" in listed.content.decode()
