"""The roles (groups created by migrations_app/migrations/0013_roles.py): who may do
what, through the API, the pages and the websockets, with real users in the real
groups. An allowed write is sent with input that stops at validation (400) or names a
missing object (404), so nothing reaches a hypervisor; a refused one must be 403 and
change nothing."""

from __future__ import annotations

import uuid
from importlib import import_module

import pytest
from asgiref.sync import async_to_sync
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from hosts.access.models import PeerTrust
from hosts.models import Host
from migrations_app.models import Migration, MigrationBatch
from portal.routing import websocket_urlpatterns

ROLES = ("viewer", "operator", "host admin", "auditor")
# "nobody": a logged-in user in no group; "staff": is_staff without being a superuser.
PRINCIPALS = ("nobody", *ROLES, "staff", "superuser")

EVERYONE = frozenset(PRINCIPALS)
# Who sees hosts and VMs: any role (the auditor too); a user with none sees no host.
SEES = EVERYONE - {"nobody"}
MIGRATE = frozenset({"operator", "staff", "superuser"})
HOSTS = frozenset({"host admin", "staff", "superuser"})
AUDIT = frozenset({"auditor", "staff", "superuser"})

VIEW = ["view_host", "view_migration", "view_migrationbatch", "view_peertrust", "view_vm"]

MISSING_VM = "00000000-0000-0000-0000-000000000000"
MISSING_ID = 999999

# (method, path, body, who may, status when allowed). {vm}, {host}, {migration},
# {batch} are filled in from the world fixture.
TABLE = [
    # Reads: any logged-in user.
    ("get", "/api/hosts/", None, EVERYONE, 200),
    ("get", "/api/hosts/{host}/", None, SEES, 200),
    ("get", "/api/vms/", None, EVERYONE, 200),
    ("get", "/api/vms/{vm}/", None, SEES, 200),
    ("get", "/api/migrations/", None, EVERYONE, 200),
    ("get", "/api/migration-batches/", None, EVERYONE, 200),
    ("get", "/api/peer-trusts/", None, EVERYONE, 200),
    ("get", "/api/ssh-key/", None, EVERYONE, 200),
    # Operator: migrate, control migrations and batches.
    ("post", "/api/vms/{vm}/migrate/", {}, MIGRATE, 400),
    ("post", "/api/vms/{vm}/migrate/check/", {}, MIGRATE, 400),
    ("get", f"/api/vms/{MISSING_VM}/destinations/", None, MIGRATE, 404),
    ("post", "/api/migrations/{migration}/cancel/", None, MIGRATE, 409),
    ("post", "/api/migrations/{migration}/tune/", {"max_downtime_ms": "x"}, MIGRATE, 400),
    ("post", "/api/migrations/{migration}/postcopy/", None, MIGRATE, 409),
    ("patch", "/api/migrations/{migration}/", {"not_before": "x"}, MIGRATE, 400),
    ("post", "/api/migration-batches/", {}, MIGRATE, 400),
    ("post", "/api/migration-batches/{batch}/cancel/", None, MIGRATE, 409),
    # Host admin: hosts, their access, maintenance, evacuation, peer trusts.
    ("post", "/api/hosts/", {}, HOSTS, 400),
    ("patch", "/api/hosts/{host}/", {"port": "x"}, HOSTS, 400),
    ("put", "/api/hosts/{host}/", {}, HOSTS, 400),
    ("delete", f"/api/hosts/{MISSING_ID}/", None, HOSTS, 404),
    ("post", f"/api/hosts/{MISSING_ID}/refresh/", None, HOSTS, 404),
    ("post", "/api/hosts/{host}/ssh-access/", {}, HOSTS, 400),
    ("post", "/api/hosts/{host}/accept-host-key/", {}, HOSTS, 400),
    ("post", "/api/hosts/{host}/tls/", {"restart_libvirtd": "x"}, HOSTS, 400),
    ("post", "/api/hosts/{host}/maintenance/", {}, HOSTS, 400),
    ("post", "/api/hosts/{host}/evacuate/", {"dry_run": "x"}, HOSTS, 400),
    ("post", "/api/peer-trusts/", {}, HOSTS, 400),
    ("post", "/api/migrations/{migration}/resolve/", {}, HOSTS, 400),
    ("delete", f"/api/peer-trusts/{MISSING_ID}/", None, HOSTS, 404),
    # Auditor: the audit log and the reports.
    ("get", "/api/audit/", None, AUDIT, 200),
    ("get", "/api/reports/migrations/", None, AUDIT, 200),
    ("get", "/api/reports/migrations/export.json", None, AUDIT, 200),
]


def _user(principal: str):
    user = get_user_model().objects.create_user(
        username=principal.replace(" ", "-"),
        password="role-pass-123",
        is_staff=principal in ("staff", "superuser"),
        is_superuser=principal == "superuser",
    )
    if principal in ROLES:
        user.groups.add(Group.objects.get(name=principal))
    return user


@pytest.fixture
def world(vm, admin_user):
    """Rows to act on: the VM, its host, a finished migration and batch (so an allowed
    cancel or post-copy answers 409 and changes nothing)."""
    batch = MigrationBatch.objects.create(created_by=admin_user, status="succeeded")
    migration = Migration.objects.create(
        vm_uuid=vm.uuid,
        vm_name=vm.name,
        source=vm.host,
        destination=Host.objects.get(name="dst"),
        requested_by=admin_user,
        requested_by_name=admin_user.username,
        status="succeeded",
        max_downtime_ms=500,
        timeout_s=600,
        finished_at=timezone.now(),
        batch=batch,
    )
    return {"vm": vm.uuid, "host": vm.host_id, "migration": migration.pk, "batch": batch.pk}


def _state() -> tuple:
    """What a refused request must leave as it was: row counts, and the rows it aimed at."""
    return (
        Host.objects.count(),
        PeerTrust.objects.count(),
        Migration.objects.count(),
        MigrationBatch.objects.count(),
        AuditEvent.objects.count(),
        list(Host.objects.values_list("pk", "name", "port", "maintenance", "status")),
        list(Migration.objects.values_list("pk", "status", "not_before")),
        list(MigrationBatch.objects.values_list("pk", "status")),
    )


def test_the_groups_exist_with_their_permissions(db):
    def perms(name: str) -> list[str]:
        group = Group.objects.get(name=name)
        return sorted(group.permissions.values_list("codename", flat=True))

    assert perms("viewer") == VIEW
    assert perms("operator") == sorted([*VIEW, "migrate_vm"])
    assert perms("host admin") == sorted([*VIEW, "manage_host"])
    assert perms("auditor") == ["view_auditevent"]
    operator = Group.objects.get(name="operator").permissions.get(codename="migrate_vm")
    assert operator.content_type.app_label == "migrations_app"
    host_admin = Group.objects.get(name="host admin").permissions.get(codename="manage_host")
    assert host_admin.content_type.app_label == "hosts"


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize(
    ("method", "path", "body", "allowed", "allowed_status"),
    TABLE,
    ids=[f"{m.upper()} {p}" for m, p, *_ in TABLE],
)
def test_role_endpoint(world, principal, method, path, body, allowed, allowed_status):
    client = APIClient()
    client.force_authenticate(_user(principal))
    before = _state()
    response = getattr(client, method)(path.format(**world), body, format="json")
    if principal in allowed:
        assert response.status_code == allowed_status, response.content[:300]
    elif allowed is SEES:  # a read of what the user cannot see: it is not there for them
        assert response.status_code == 404, response.content[:300]
    else:
        assert response.status_code == 403, response.content[:300]
        assert "role" in response.json()["detail"] or "permission" in response.json()["detail"]
        assert _state() == before


def test_anonymous_is_refused_everywhere(world):
    client = APIClient()
    for method, path, body, _allowed, _status in TABLE:
        response = getattr(client, method)(path.format(**world), body, format="json")
        assert response.status_code in (401, 403), (method, path, response.status_code)


def test_every_role_sees_every_migration_an_ordinary_user_only_their_own(world):
    for principal in ("viewer", "operator", "host admin", "staff"):
        client = APIClient()
        client.force_authenticate(_user(principal))
        assert [m["id"] for m in client.get("/api/migrations/").json()["results"]] == [
            world["migration"]
        ], principal
        assert client.get(f"/api/migration-batches/{world['batch']}/").status_code == 200
    for principal in ("nobody", "auditor"):
        client = APIClient()
        client.force_authenticate(_user(principal))
        assert client.get("/api/migrations/").json()["results"] == [], principal
        assert client.get(f"/api/migration-batches/{world['batch']}/").status_code == 404


def test_an_operator_cancels_a_migration_someone_else_queued(world, admin_user):
    queued = Migration.objects.create(
        vm_uuid=uuid.uuid4(),
        vm_name="db-1",
        source=Host.objects.get(name="src"),
        destination=Host.objects.get(name="dst"),
        requested_by=admin_user,
        requested_by_name=admin_user.username,
        status="queued",
        max_downtime_ms=500,
        timeout_s=600,
    )
    client = APIClient()
    client.force_authenticate(_user("operator"))
    response = client.post(f"/api/migrations/{queued.pk}/cancel/")
    assert response.status_code == 200, response.content
    queued.refresh_from_db()
    assert queued.status == "cancelled"


def test_a_host_admin_puts_a_host_into_maintenance_an_operator_may_not(world):
    host_admin, operator = APIClient(), APIClient()
    host_admin.force_authenticate(_user("host admin"))
    operator.force_authenticate(_user("operator"))
    path = f"/api/hosts/{world['host']}/maintenance/"
    assert operator.post(path, {"enabled": True}, format="json").status_code == 403
    assert not Host.objects.get(pk=world["host"]).maintenance
    response = host_admin.post(path, {"enabled": True, "reason": "fw"}, format="json")
    assert response.status_code == 200, response.content
    assert Host.objects.get(pk=world["host"]).maintenance
    event = AuditEvent.objects.filter(target_id=str(world["host"])).order_by("-id").first()
    assert event.actor_name == "host-admin"


# --- pages: the buttons are shown only to who may use them ------------------------------

PAGE_MARKERS = [
    # (page, marker, who sees it)
    ("/vms/{vm}/", 'data-action="migrate"', MIGRATE),
    ("/vms/{vm}/", 'data-action="refresh-host"', HOSTS),
    ("/hosts/{host}/", 'id="maintenance-form"', HOSTS),
    ("/hosts/{host}/", 'id="evacuate-dialog"', HOSTS),
    ("/migrations/{migration}/", 'data-action="cancel-migration"', MIGRATE),
    ("/migration-batches/{batch}/", 'data-action="cancel-batch"', MIGRATE),
    # The menu links to the audit log and the reports only for those who may read them.
    ("/", 'href="/audit/"', AUDIT),
    ("/", 'href="/reports/migrations/"', AUDIT),
]


@pytest.mark.parametrize("principal", ("nobody", *ROLES, "staff"))
def test_pages_show_the_buttons_of_the_role(client, world, principal):
    client.force_login(_user(principal))
    for page, marker, allowed in PAGE_MARKERS:
        response = client.get(page.format(**world))
        if response.status_code == 404:
            # Migration and batch pages of someone else: not visible without a role; no
            # host or VM either without one.
            assert principal in ("nobody", "auditor")
            assert principal == "nobody" or "/vms/" not in page
            continue
        assert response.status_code == 200, page
        assert (marker in response.content.decode()) == (principal in allowed), (page, marker)


def test_dashboard_accept_host_key_button_for_host_admins_only(client, world):
    Host.objects.filter(pk=world["host"]).update(
        ssh_host_key_pending_fingerprint="SHA256:abc", status="host_key_changed"
    )
    for principal, shown in (("operator", False), ("host admin", True)):
        client.force_login(_user(principal))
        page = client.get("/").content.decode()
        assert ('data-action="accept-host-key"' in page) == shown, principal


# --- websockets: read-only, any logged-in user who sees the migration -------------------


def _groups_as_migrated() -> None:
    """A transactional test's database is flushed after every such test, and the flush
    takes the rows the data migration wrote: put the groups back from its own table."""
    from django.contrib.auth.models import Permission

    roles = import_module("migrations_app.migrations.0013_roles").ROLES
    for name, perms in roles.items():
        group, _ = Group.objects.get_or_create(name=name)
        for app_label, codename in perms:
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )


@pytest.mark.django_db(transaction=True)
def test_a_viewer_follows_any_migration_over_the_websocket(world):
    _groups_as_migrated()
    viewer = _user("viewer")

    async def scenario():
        socket = WebsocketCommunicator(
            URLRouter(websocket_urlpatterns), f"/ws/migrations/{world['migration']}/"
        )
        socket.scope["user"] = viewer
        connected, _code = await socket.connect()
        first = await socket.receive_json_from() if connected else None
        await socket.disconnect()
        return connected, first

    connected, first = async_to_sync(scenario)()
    assert connected
    assert first["event"] == "snapshot"
    assert first["migration"]["id"] == world["migration"]


@pytest.mark.parametrize("endpoint", ["migrate", "migrate/check"])
@pytest.mark.parametrize(
    "body, field",
    [
        ({"remote_host": "127.0.0.250"}, "remote_host"),
        ({"remote_host": "dst", "user": "root", "password": "secret-1"}, "user"),
        ({"remote_host": "127.0.0.250", "user": "root", "password": "x"}, "remote_host"),
    ],
)
def test_an_operator_cannot_register_a_host_or_set_up_its_access(world, endpoint, body, field):
    """Registering a host and setting up its ssh access are the host admin's: through a
    migrate request or its check, an operator gets 403 naming the field, and nothing
    changes (no host row, no key installed, no audit event)."""
    client = APIClient()
    client.force_authenticate(_user("operator"))
    before = _state()
    response = client.post(f"/api/vms/{world['vm']}/{endpoint}/", body, format="json")
    assert response.status_code == 403, response.content[:300]
    detail = response.json()["detail"]
    assert detail.startswith(f"{field}:") and "host admin role" in detail, detail
    assert _state() == before
    assert not Host.objects.filter(address="127.0.0.250").exists()


def test_an_operator_still_migrates_to_a_registered_host(world):
    client = APIClient()
    client.force_authenticate(_user("operator"))
    Migration.objects.all().delete()  # the world's finished migration is in the way of none
    response = client.post(
        f"/api/vms/{world['vm']}/migrate/", {"remote_host": "dst"}, format="json"
    )
    assert response.status_code == 202, response.content[:300]
