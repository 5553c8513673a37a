"""Login throttling (portal.login_throttle): per user name and per client address, on
the login page (429) and the admin's login, audited; the decisions table-tested."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from django.test import Client

from audit.models import AuditEvent
from portal.login_throttle import (
    Attempt,
    Lockout,
    Scope,
    lockout_decide,
    login_attempt_begin,
    login_failure_record,
    retry_after_s,
    throttled_address,
)

LOCKED = "Too many failed logins"


@pytest.mark.parametrize(
    ("username_failures", "address_failures", "expected"),
    [
        (0, 0, None),
        (4, 19, None),
        (5, 0, Scope.USERNAME),
        (0, 20, Scope.ADDRESS),
        (7, 25, Scope.USERNAME),  # the user name's lock is named first
        (4, 20, Scope.ADDRESS),
    ],
)
def test_lockout_decide(username_failures, address_failures, expected):
    failures = {Scope.USERNAME: username_failures, Scope.ADDRESS: address_failures}
    limits = {Scope.USERNAME: 5, Scope.ADDRESS: 20}
    assert lockout_decide(failures=failures, limits=limits) == expected


def test_a_limit_of_zero_turns_that_lock_off():
    failures = {Scope.USERNAME: 99, Scope.ADDRESS: 99}
    assert lockout_decide(failures=failures, limits=dict.fromkeys(Scope, 0)) is None


@pytest.mark.parametrize(
    ("since", "now", "window", "expected"),
    [(1000.0, 1000.0, 900, 900), (1000.0, 1899.2, 900, 1), (1000.0, 2500.0, 900, 1)],
)
def test_retry_after_s(since, now, window, expected):
    assert retry_after_s(since=since, now=now, window_s=window) == expected


def _post(address: str, username: str, password: str, path: str = "/login/"):
    client = Client(REMOTE_ADDR=address)
    return client, client.post(path, {"username": username, "password": password})


def _logged_in(client: Client) -> bool:
    return client.get("/").status_code == 200


def _events(event_type: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type=event_type).order_by("id"))


def test_five_failures_lock_the_user_name_from_any_address(admin_user, viewer_user):
    for attempt in range(1, 5):
        _, response = _post(f"198.51.100.{attempt}", "admin", "wrong")
        assert response.status_code == 200, attempt
        assert "didn't match" in response.content.decode()
    _, fifth = _post("198.51.100.5", "admin", "wrong")
    assert fifth.status_code == 429
    assert LOCKED in fifth.content.decode() and "for this user name" in fifth.content.decode()
    assert 890 <= int(fifth["Retry-After"]) <= 900

    # Locked: the right password from a new address is refused, nobody is logged in.
    client, right = _post("198.51.100.6", "admin", "admin-pass-123")
    assert right.status_code == 429 and LOCKED in right.content.decode()
    assert not _logged_in(client)
    # The name is locked, not the address: another user logs in from there.
    client, other = _post("198.51.100.6", "viewer", "viewer-pass-123")
    assert other.status_code == 302 and _logged_in(client)

    (locked,) = _events("auth.login_locked")
    assert locked.actor_name == "admin" and locked.actor_id is None
    assert locked.source_ip == "198.51.100.5"
    assert locked.detail["scope"] == "username" and locked.detail["failures"] == 5
    assert locked.detail["window_s"] == 900
    (refused,) = _events("auth.login_throttled")
    assert refused.source_ip == "198.51.100.6" and refused.detail["scope"] == "username"
    assert "admin-pass-123" not in str(AuditEvent.objects.values_list())
    # The refused attempt never reached authenticate(): 5 failures were recorded, not 6.
    assert len(_events("auth.login_failed")) == 5


def test_twenty_failures_lock_the_address_for_every_name(viewer_user):
    for n in range(20):
        _, response = _post("203.0.113.50", f"spray-{n}", "guess")
    assert response.status_code == 429 and "from your address" in response.content.decode()
    client, right = _post("203.0.113.50", "viewer", "viewer-pass-123")
    assert right.status_code == 429 and not _logged_in(client)
    client, elsewhere = _post("203.0.113.51", "viewer", "viewer-pass-123")
    assert elsewhere.status_code == 302 and _logged_in(client)
    (locked,) = _events("auth.login_locked")
    assert locked.detail["scope"] == "address" and locked.actor_name == "spray-19"


def test_a_successful_login_clears_the_user_names_failures(admin_user):
    for n in range(4):
        _post(f"192.0.2.{n}", "admin", "wrong")
    client, ok = _post("192.0.2.9", "admin", "admin-pass-123")
    assert ok.status_code == 302
    for n in range(4):
        _, response = _post(f"192.0.2.{n}", "admin", "wrong")
        assert response.status_code == 200
    _, fifth = _post("192.0.2.5", "admin", "wrong")
    assert fifth.status_code == 429
    assert _events("auth.login_locked")[0].detail["failures"] == 5


def test_the_lock_ends_with_its_window(admin_user, settings):
    # One failure locks (no timing between several requests); the window is short.
    settings.LOGIN_FAILURES_PER_USERNAME = 1
    settings.LOGIN_FAILURE_WINDOW_S = 2
    _, response = _post("192.0.2.20", "admin", "wrong")
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 2
    time.sleep(2.2)
    client, right = _post("192.0.2.20", "admin", "admin-pass-123")
    assert right.status_code == 302 and _logged_in(client)


def test_the_admin_login_is_throttled_too(admin_user):
    for _ in range(5):
        _, response = _post("192.0.2.30", "admin", "wrong", path="/admin/login/")
    assert LOCKED in response.content.decode()
    client, right = _post("192.0.2.31", "admin", "admin-pass-123", path="/admin/login/")
    assert LOCKED in right.content.decode()
    assert client.get("/admin/").status_code == 302  # still the login page
    assert len(_events("auth.login_throttled")) == 1


@pytest.mark.redis
def test_the_counters_live_in_the_profiles_redis(admin_user, settings):
    """With Redis (REDIS_URL in production, the private redis-server otherwise) every
    web process counts in the same Redis."""
    import redis

    url = settings.REDIS_URL
    prefix = f"throttle-test-{uuid.uuid4().hex}"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": prefix,
        }
    }
    raw = redis.Redis.from_url(url)
    try:
        for _ in range(5):
            _, response = _post("192.0.2.40", "admin", "wrong")
        assert response.status_code == 429
        keys = [k.decode() for k in raw.scan_iter(f"{prefix}:*")]
        assert sum("login-throttle:username:" in k for k in keys) == 2  # count + since
        assert sum("login-throttle:address:" in k for k in keys) == 2
        assert all(0 < raw.ttl(k) <= 900 for k in keys)
    finally:
        for key in raw.scan_iter(f"{prefix}:*"):
            raw.delete(key)


@pytest.mark.parametrize(
    ("address", "counted_as"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("unknown", "unknown"),
    ],
)
def test_ipv6_clients_are_counted_by_64(address, counted_as):
    assert throttled_address(address) == counted_as


def test_twenty_failures_from_one_ipv6_64_lock_all_of_it(viewer_user):
    for n in range(20):
        _post(f"2001:db8:5:6::{n + 1:x}", f"spray-{n}", "guess")
    client, right = _post("2001:db8:5:6:abcd::99", "viewer", "viewer-pass-123")
    assert right.status_code == 429 and not _logged_in(client)
    client, other = _post("2001:db8:5:7::1", "viewer", "viewer-pass-123")
    assert other.status_code == 302 and _logged_in(client)


def test_parallel_attempts_cannot_all_pass_one_check(db, settings):
    """Twenty attempts at once on one name: each is counted before its password is
    checked, so five (the limit) go on and the rest are refused, whatever the timing."""
    settings.LOGIN_FAILURES_PER_USERNAME = 5
    start = threading.Barrier(20)
    results: list = []

    def attempt(n: int) -> None:
        start.wait()
        results.append(login_attempt_begin(username="admin", address=f"198.51.100.{n}"))

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    passed = [r for r in results if isinstance(r, Attempt)]
    refused = [r for r in results if isinstance(r, Lockout)]
    assert (len(passed), len(refused)) == (5, 15)
    assert {r.scope for r in refused} == {Scope.USERNAME}
    # The refused ones gave their count back: five failures, once the five fail.
    for item in passed:
        login_failure_record(request=None, username="admin", attempt=item)
    lockout = login_attempt_begin(username="admin", address="198.51.100.99")
    assert isinstance(lockout, Lockout) and lockout.failures == 5
