"""A user's own API token in the pages: made (the key shown once), used, revoked."""

from __future__ import annotations

import re

from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


def test_it_makes_a_token_and_shows_its_key_once(client, operator):
    client.force_login(operator)

    made = client.post("/tokens/create")
    key = Token.objects.get(user=operator).key
    later = client.get("/tokens/")
    again = client.post("/tokens/create", follow=True)

    assert made.status_code == 200
    assert re.search(rf"data-token-key>{key}<", made.content.decode())
    assert later.status_code == 200 and 'data-token="present"' in later.content.decode()
    assert key not in later.content.decode()
    assert key not in again.content.decode() and "already have" in again.content.decode()
    assert Token.objects.get(user=operator).key == key  # the second POST made none
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert api.get("/api/workloads").status_code == 200


def test_it_revokes_only_the_users_own_token(client, operator, viewer):
    mine = Token.objects.create(user=operator)
    theirs = Token.objects.create(user=viewer)
    client.force_login(operator)

    response = client.post("/tokens/revoke", {"key": theirs.key})

    assert response.status_code == 302
    assert not Token.objects.filter(pk=mine.pk).exists()
    assert Token.objects.filter(pk=theirs.pk).exists()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {mine.key}")
    assert api.get("/api/workloads").status_code == 401
    assert 'data-token="absent"' in client.get("/tokens/").content.decode()


def test_it_needs_a_login_and_a_post(client, operator):
    assert client.post("/tokens/create").status_code == 302
    assert client.get("/tokens/").status_code == 302
    assert not Token.objects.exists()
    client.force_login(operator)
    assert client.get("/tokens/create").status_code == 405
    assert client.get("/tokens/revoke").status_code == 405
    assert not Token.objects.exists()
