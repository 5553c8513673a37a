"""The API's token authentication remembers a valid token for seconds, never longer, and
forgets it at once where the token or its user is changed (portal/authentication.py)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from portal import authentication

pytestmark = pytest.mark.django_db


@pytest.fixture
def token_client():
    user = get_user_model().objects.create_user("reader", password="x")
    token = Token.objects.create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client, user, token


def _queries(client, path="/api/hosts/") -> tuple[int, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        status = client.get(path).status_code
    return status, [q["sql"] for q in captured.captured_queries]


def test_a_valid_token_is_read_from_the_database_once(token_client):
    client, _user, _token = token_client
    status, first = _queries(client)
    assert status == 200
    assert any("authtoken_token" in sql for sql in first)
    status, second = _queries(client)
    assert status == 200
    assert not any("authtoken_token" in sql for sql in second)


def test_the_memory_ends_after_its_seconds(token_client, monkeypatch):
    client, _user, _token = token_client
    now = [1000.0]
    monkeypatch.setattr(authentication.time, "monotonic", lambda: now[0])
    _queries(client)
    now[0] += authentication.TOKEN_CACHE_S + 0.1
    _status, again = _queries(client)
    assert any("authtoken_token" in sql for sql in again)


def test_a_deleted_token_and_a_deactivated_user_are_refused_at_once(token_client):
    client, user, token = token_client
    assert client.get("/api/hosts/").status_code == 200
    token.delete()
    assert client.get("/api/hosts/").status_code == 401

    fresh = Token.objects.create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {fresh.key}")
    assert client.get("/api/hosts/").status_code == 200
    user.is_active = False
    user.save()
    assert client.get("/api/hosts/").status_code == 401


def test_each_request_gets_its_own_user_object(token_client, monkeypatch):
    """Permission caches set on one request's user must not reach the next request."""
    from rest_framework.views import APIView

    client, _user, _token = token_client
    seen = []
    original = APIView.initial

    def spy(self, request, *args, **kwargs):
        original(self, request, *args, **kwargs)
        seen.append(request.user)

    monkeypatch.setattr(APIView, "initial", spy)
    client.get("/api/hosts/")
    client.get("/api/hosts/")
    assert len(seen) == 2 and seen[0] is not seen[1]
    assert seen[0].pk == seen[1].pk
