"""Named API tokens (as NetBox's): shown once and stored hashed, read-only or read-write,
expiring, limited to networks, revoked with a 401 that says so, their use recorded, and
their creation and revocation audited; the older plain keys keep working."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from audit.models import AuditEvent
from portal.authentication import tokens_forget
from tokens import rules
from tokens.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    tokens_forget()
    yield
    tokens_forget()


def bearer(raw: str, keyword: str = "Bearer", ip: str = "127.0.0.1") -> APIClient:
    client = APIClient(REMOTE_ADDR=ip)
    client.credentials(HTTP_AUTHORIZATION=f"{keyword} {raw}")
    return client


def create(browser_or_api, **body) -> dict:
    response = browser_or_api.post("/api/tokens/", {"name": "ci", **body}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_a_token_is_shown_once_and_stored_hashed(api, admin_user):
    made = create(api, write_enabled=True)
    raw = made["token"]
    assert raw.startswith(f"{rules.PREFIX}{made['key_id']}.")
    row = ApiToken.objects.get(pk=made["id"])
    secret = raw.split(".", 1)[1]
    assert secret not in row.secret_hash and raw not in str(list(ApiToken.objects.values()))
    listed = api.get("/api/tokens/").json()["results"]
    assert [t["id"] for t in listed] == [made["id"]] and "token" not in listed[0]

    for keyword in ("Bearer", "Token"):
        response = bearer(raw, keyword).get("/api/hosts/")
        assert response.status_code == 200, response.json()
    row.refresh_from_db()
    assert row.last_used_at is not None and row.last_used_ip == "127.0.0.1"
    [event] = AuditEvent.objects.filter(event_type="token.created")
    assert event.after["name"] == "ci" and event.after["write_enabled"] is True
    assert secret not in str(event.after) + str(event.detail)


def test_a_read_only_token_reads_and_may_not_change(api):
    raw = create(api)["token"]  # read-only unless asked
    client = bearer(raw)
    assert client.get("/api/migrations/").status_code == 200
    refused = client.post("/api/hosts/", {"name": "x", "address": "127.0.0.251"}, format="json")
    assert refused.status_code == 403
    assert "read-only" in refused.json()["detail"]


def test_an_expired_token_gets_a_401_that_says_so(api, admin_user):
    made = create(api, expires_at=(timezone.now() + timedelta(hours=1)).isoformat())
    ApiToken.objects.filter(pk=made["id"]).update(expires_at=timezone.now() - timedelta(minutes=1))
    tokens_forget()
    response = bearer(made["token"]).get("/api/hosts/")
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_a_revoked_token_gets_a_401_that_says_so_and_the_revocation_is_audited(api):
    made = create(api)
    assert bearer(made["token"]).get("/api/hosts/").status_code == 200
    revoked = api.delete(f"/api/tokens/{made['id']}/")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    response = bearer(made["token"]).get("/api/hosts/")  # the cache forgot it at once
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]
    assert AuditEvent.objects.filter(event_type="token.deleted").count() == 1


def test_a_token_limited_to_networks(api):
    raw = create(api, allowed_networks=["127.0.0.0/8"])["token"]
    assert bearer(raw, ip="127.0.0.9").get("/api/hosts/").status_code == 200
    outside = bearer(raw, ip="::1").get("/api/hosts/")
    assert outside.status_code == 401 and "may not be used from ::1" in outside.json()["detail"]


def test_a_wrong_secret_is_invalid_and_bad_input_names_the_field(api):
    made = create(api)
    wrong = made["token"][:-4] + "AAAA"
    assert bearer(wrong).get("/api/hosts/").status_code == 401
    bad = api.post("/api/tokens/", {"name": "x", "allowed_networks": ["nope"]}, format="json")
    assert bad.status_code == 400 and "allowed_networks" in bad.json()
    past = api.post(
        "/api/tokens/", {"name": "x", "expires_at": "2000-01-01T00:00:00Z"}, format="json"
    )
    assert past.status_code == 400 and "expires_at" in past.json()


def test_someone_elses_token_cannot_be_seen_or_revoked(api, viewer_user):
    other = APIClient()
    other.force_authenticate(viewer_user)
    made = create(other)
    assert api.get("/api/tokens/").json()["results"] == []
    assert api.delete(f"/api/tokens/{made['id']}/").status_code == 404
    assert ApiToken.objects.get(pk=made["id"]).revoked_at is None


def test_older_plain_keys_keep_working(admin_user):
    legacy = Token.objects.create(user=admin_user)
    assert bearer(legacy.key, "Token").get("/api/hosts/").status_code == 200


def test_the_my_tokens_page_creates_shows_once_and_revokes(browser):
    page = browser.post("/tokens/", {"name": "laptop", "allowed_networks": "127.0.0.0/8"})
    assert page.status_code == 200
    raw = page.context["created"]
    assert raw.startswith(rules.PREFIX) and raw in page.content.decode()
    again = browser.get("/tokens/").content.decode()
    assert raw not in again and "laptop" in again
    token = ApiToken.objects.get(name="laptop")
    browser.post("/tokens/", {"revoke": token.pk})
    token.refresh_from_db()
    assert token.revoked_at is not None
    bad = browser.post("/tokens/", {"name": "x", "allowed_networks": "10.0.0.0/33"})
    assert "is not a network" in bad.content.decode()


@pytest.mark.parametrize(
    "kwargs, refused",
    [
        ({}, None),
        ({"revoked_at": timezone.now()}, "revoked"),
        ({"expires_at": timezone.now() - timedelta(seconds=1)}, "expired"),
        ({"expires_at": timezone.now() + timedelta(days=1)}, None),
        ({"allowed_networks": ["127.0.0.0/8"], "client_ip": "127.0.0.5"}, None),
        ({"allowed_networks": ["127.0.0.0/8"], "client_ip": "::1"}, "may not be used"),
        ({"allowed_networks": ["127.0.0.0/8"], "client_ip": None}, "may not be used"),
    ],
)
def test_refusal(kwargs, refused):
    given = {"revoked_at": None, "expires_at": None, "allowed_networks": [], "client_ip": "1.2.3.4"}
    why = rules.refusal(**{**given, **kwargs}, now=timezone.now())
    assert (why is None) if refused is None else (refused in why)


def test_parse_tells_named_tokens_from_plain_keys():
    assert rules.parse("mig_abc.def") == ("abc", "def")
    assert rules.parse("0123456789abcdef0123456789abcdef01234567") is None
    assert rules.parse("mig_.x") is None and rules.parse("mig_abc.") is None
