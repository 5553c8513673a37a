"""Every API action of the portal leaves its audit event, with who, from where, which
request and how they authenticated. (No hypervisor needed: a refresh of an address
nothing listens on records the host as unreachable.)"""

import pytest
from django.test import Client

from audit.models import AuditEvent
from hosts.models import Host

pytestmark = pytest.mark.django_db

IP = "198.51.100.23"


def _call(api, method: str, url: str, request_id: str, data=None):
    return getattr(api, method)(
        url, data, format="json", REMOTE_ADDR=IP, HTTP_X_REQUEST_ID=request_id
    )


def _only(event_type: str, **filters) -> AuditEvent:
    events = list(AuditEvent.objects.filter(event_type=event_type, **filters))
    assert len(events) == 1, [str(e) for e in AuditEvent.objects.all()]
    return events[0]


def _assert_from_admin_api(event: AuditEvent, request_id: str, admin_user) -> None:
    assert event.actor_id == admin_user.pk
    assert event.actor_name == "admin"
    assert event.source_ip == IP
    assert event.request_id == request_id
    assert event.auth_method == "token"


def test_host_create_update_refresh_delete_each_leave_their_event(api, admin_user):
    created = _call(
        api, "post", "/api/hosts/", "req-create", {"name": "hv-9", "address": "127.0.0.99"}
    )
    assert created.status_code == 201, created.json()
    host_id = created.json()["id"]
    event = _only("host.created")
    _assert_from_admin_api(event, "req-create", admin_user)
    assert (event.target_type, event.target_id) == ("hosts.host", str(host_id))
    assert (event.host_name, event.after["address"]) == ("hv-9", "127.0.0.99")

    updated = _call(api, "patch", f"/api/hosts/{host_id}/", "req-update", {"port": 16999})
    assert updated.status_code == 200, updated.json()
    event = _only("host.updated")
    _assert_from_admin_api(event, "req-update", admin_user)
    assert (event.before, event.after) == ({"port": None}, {"port": 16999})

    refreshed = _call(api, "post", f"/api/hosts/{host_id}/refresh/", "req-refresh")
    assert refreshed.status_code == 200
    assert refreshed.json()["status"] == "unreachable"
    event = _only("host.unreachable")
    _assert_from_admin_api(event, "req-refresh", admin_user)
    assert (event.before, event.after) == ({"status": "unknown"}, {"status": "unreachable"})
    assert event.detail["error"]
    assert event.host_name == "hv-9"

    assert _call(api, "delete", f"/api/hosts/{host_id}/", "req-delete").status_code == 204
    event = _only("host.deleted")
    _assert_from_admin_api(event, "req-delete", admin_user)
    assert event.before["name"] == "hv-9"
    assert event.host_name == "hv-9"  # still findable by host after the host is gone
    assert not Host.objects.filter(pk=host_id).exists()


def test_migration_request_and_cancel_leave_their_events(api, admin_user, vm):
    response = _call(
        api, "post", f"/api/vms/{vm.uuid}/migrate/", "req-migrate", {"remote_host": "dst"}
    )
    assert response.status_code == 202, response.json()
    migration_id = response.json()["id"]
    event = _only("migration.requested")
    _assert_from_admin_api(event, "req-migrate", admin_user)
    assert (event.target_type, event.target_id) == ("migrations_app.migration", str(migration_id))
    assert (event.host_name, event.peer_host_name) == ("src", "dst")
    assert (event.vm_uuid, event.vm_name) == (vm.uuid, "web-1")
    assert event.after == {"status": "queued"}

    cancelled = _call(api, "post", f"/api/migrations/{migration_id}/cancel/", "req-cancel")
    assert cancelled.status_code == 200
    event = _only("migration.cancelled")
    _assert_from_admin_api(event, "req-cancel", admin_user)
    assert (event.before, event.after) == ({"status": "queued"}, {"status": "cancelled"})
    assert event.vm_uuid == vm.uuid
    # Both are found by the VM and by either host in the audit API.
    by_vm = api.get("/api/audit/", {"vm": str(vm.uuid)}).json()["results"]
    assert [e["event_type"] for e in by_vm] == ["migration.cancelled", "migration.requested"]
    by_dst = api.get("/api/audit/", {"host": "dst"}).json()["results"]
    assert [e["event_type"] for e in by_dst] == ["migration.cancelled", "migration.requested"]


def test_a_session_user_is_recorded_as_session(admin_user):
    client = Client(REMOTE_ADDR=IP)
    client.force_login(admin_user)
    response = client.post(
        "/api/hosts/",
        {"name": "hv-s", "address": "127.0.0.250"},
        content_type="application/json",
        HTTP_X_REQUEST_ID="req-session",
    )
    assert response.status_code == 201, response.content
    event = _only("host.created")
    assert (event.auth_method, event.request_id, event.source_ip) == ("session", "req-session", IP)


def test_failed_login_is_recorded_without_the_password(admin_user):
    client = Client(REMOTE_ADDR="203.0.113.9")
    response = client.post(
        "/login/",
        {"username": "admin", "password": "wrong-password"},
        HTTP_X_REQUEST_ID="req-login-1",
    )
    assert response.status_code == 200  # the form again, with its error
    event = _only("auth.login_failed")
    assert event.actor_id is None  # nobody was authenticated
    assert event.actor_name == "admin"  # the name that was tried
    assert event.source_ip == "203.0.113.9"
    assert event.request_id == "req-login-1"
    assert event.auth_method == "password"
    assert (event.target_type, event.target_id) == ("auth.user", str(admin_user.pk))
    assert event.detail == {"account_exists": True}
    assert "wrong-password" not in str(AuditEvent.objects.values_list())

    client.post("/login/", {"username": "nobody", "password": "x"})
    unknown = _only("auth.login_failed", actor_name="nobody")
    assert (unknown.target_id, unknown.detail) == ("", {"account_exists": False})


def test_login_and_logout_are_recorded(admin_user):
    client = Client(REMOTE_ADDR="203.0.113.10")
    response = client.post("/login/", {"username": "admin", "password": "admin-pass-123"})
    assert response.status_code == 302
    login = _only("auth.login")
    assert (login.actor_id, login.actor_name) == (admin_user.pk, "admin")
    assert (login.source_ip, login.auth_method) == ("203.0.113.10", "password")
    assert login.request_id

    assert client.post("/logout/").status_code == 302
    logout = _only("auth.logout")
    assert (logout.actor_id, logout.source_ip, logout.auth_method) == (
        admin_user.pk,
        "203.0.113.10",
        "session",
    )
    assert logout.request_id != login.request_id


def test_request_id_middleware_echoes_the_id_that_the_events_carry(api):
    response = api.post("/api/hosts/", {"name": "hv-r", "address": "127.0.0.249"}, format="json")
    assert response.status_code == 201
    request_id = response["X-Request-ID"]
    assert len(request_id) == 32
    assert _only("host.created").request_id == request_id
    given = api.get("/api/hosts/", HTTP_X_REQUEST_ID="trace-42")
    assert given["X-Request-ID"] == "trace-42"
