"""Roles granted on one host group (issue #22, item 2): every endpoint x role x a target
in the user's group / in another group. In the group a role may do what it may do
globally (tests/test_roles.py); outside, what it cannot see is not there (404) and
what it may not do is refused (403); a refused request changes nothing. No hypervisor:
the hosts are rows (their status "not contacted yet", so no ranking asks libvirt)."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from hosts.models import Host, HostGroup, HostGroupGrant
from migrations_app.models import Migration, MigrationBatch
from tests.grants import grant
from vms.models import VM

pytestmark = pytest.mark.django_db

# "<role>@a": a grant of the role on group a only; "operator@a via group": the grant is
# for a Django group the user is in; "nobody": no role anywhere.
PRINCIPALS = ("nobody", "viewer@a", "operator@a", "operator@a via group", "host admin@a")
SEE = frozenset(PRINCIPALS) - {"nobody"}
MIGRATE = frozenset({"operator@a", "operator@a via group"})
HOSTS = frozenset({"host admin@a"})

# (method, path, body, who may (in their group), status when allowed). The placeholders
# are filled from one side of the world: {vm} on {host}, {host2} beside it, {migration}
# and {batch} between them, {group} / {group_name} their host group.
TABLE = [
    ("get", "/api/hosts/{host}/", None, SEE, 200),
    ("get", "/api/vms/{vm}/", None, SEE, 200),
    ("get", "/api/migrations/{migration}/", None, SEE, 200),
    ("get", "/api/migrations/{migration}/samples/", None, SEE, 200),
    ("get", "/api/migration-batches/{batch}/", None, SEE, 200),
    ("get", "/api/host-groups/{group}/", None, SEE, 200),
    ("post", "/api/vms/{vm}/migrate/", {"remote_host": "{host2_name}"}, MIGRATE, 202),
    ("post", "/api/vms/{vm}/migrate/check/", {"remote_host": ""}, MIGRATE, 400),
    ("get", "/api/vms/{vm}/destinations/", None, MIGRATE, 200),
    ("post", "/api/migrations/{migration}/cancel/", None, MIGRATE, 409),
    ("post", "/api/migrations/{migration}/tune/", {"max_downtime_ms": 300}, MIGRATE, 409),
    ("post", "/api/migrations/{migration}/postcopy/", None, MIGRATE, 409),
    ("patch", "/api/migrations/{migration}/", {"not_before": None}, MIGRATE, 409),
    ("post", "/api/migration-batches/{batch}/cancel/", None, MIGRATE, 409),
    (
        "post",
        "/api/migration-batches/",
        {"items": [{"vm": "{vm}", "destination": "{host2_name}"}]},
        MIGRATE,
        202,
    ),
    ("patch", "/api/hosts/{host}/", {"port": "x"}, HOSTS, 400),
    ("post", "/api/hosts/{host}/maintenance/", {"enabled": True, "reason": "fw"}, HOSTS, 200),
    ("post", "/api/hosts/{host}/retire/", {"retired": False}, HOSTS, 200),
    ("post", "/api/hosts/{host}/evacuate/", {"dry_run": True}, HOSTS, 200),
    ("delete", "/api/hosts/{host}/", None, HOSTS, 409),
    (
        "post",
        "/api/migrations/{migration}/resolve/",
        {"action": "mark_resolved", "reason": "checked"},
        HOSTS,
        409,
    ),
    (
        "post",
        "/api/hosts/",
        {"name": "new-{group_name}", "address": "{new_address}", "group": "{group_name}"},
        HOSTS,
        201,
    ),
    # The group's CPU baseline: its host admins (409 here: no host reported its CPU).
    ("post", "/api/host-groups/{group}/cpu-baseline/", None, HOSTS, 409),
    # Host groups themselves and the grants: global host admins and staff only.
    ("patch", "/api/host-groups/{group}/", {"description": "x"}, frozenset(), 200),
    ("delete", "/api/host-groups/{group}/", None, frozenset(), 409),
    (
        "post",
        "/api/host-group-grants/",
        {"host_group": "{group_name}", "role": "operator", "user": "admin"},
        frozenset(),
        201,
    ),
]

# Endpoints without an object to look up: outside the group they are refused (403)
# rather than not found.
CREATES = {"/api/hosts/", "/api/migration-batches/"}


def _side(name: str, number: int, admin) -> dict:
    group = HostGroup.objects.create(name=f"team-{name}")
    host = Host.objects.create(name=f"{name}1", address=f"192.0.2.{number}", group=group)
    host2 = Host.objects.create(name=f"{name}2", address=f"192.0.2.{number + 1}", group=group)
    vm = VM.objects.create(
        uuid=uuid.uuid4(),
        name=f"web-{name}",
        host=host,
        state="running",
        persistent=True,
        vcpus=1,
        memory_kib=262144,
        max_memory_kib=262144,
        last_synced_at=timezone.now(),
    )
    batch = MigrationBatch.objects.create(created_by=admin, status="succeeded")
    migration = Migration.objects.create(
        vm_uuid=uuid.uuid4(),  # another VM's history: the world's VM has none active
        vm_name=f"db-{name}",
        source=host,
        destination=host2,
        requested_by=admin,
        requested_by_name=admin.username,
        status="succeeded",
        max_downtime_ms=500,
        timeout_s=600,
        finished_at=timezone.now(),
        batch=batch,
    )
    return {
        "group": group.pk,
        "group_name": group.name,
        "host": host.pk,
        "host2_name": host2.name,
        "vm": str(vm.uuid),
        "migration": migration.pk,
        "batch": batch.pk,
        "new_address": f"127.0.0.{200 + number % 50}",
    }


@pytest.fixture
def world(admin_user) -> dict:
    return {"a": _side("a", 10, admin_user), "b": _side("b", 20, admin_user)}


def _user(principal: str):
    user = get_user_model().objects.create_user(
        username=principal.replace(" ", "-").replace("@", "-at-"), password="role-pass-123"
    )
    if principal == "nobody":
        return user
    role = principal.split("@")[0]
    if principal.endswith("via group"):
        team = Group.objects.create(name="team a operators")
        user.groups.add(team)
        HostGroupGrant.objects.create(
            host_group=HostGroup.objects.get(name="team-a"), role=role, group=team
        )
    else:
        grant(user, role, "team-a")
    return user


def _fill(value, side: dict):
    if isinstance(value, str):
        return value.format(**side)
    if isinstance(value, dict):
        return {k: _fill(v, side) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, side) for v in value]
    return value


def _state() -> tuple:
    return (
        list(Host.objects.order_by("pk").values_list("pk", "name", "port", "maintenance")),
        list(Host.objects.order_by("pk").values_list("retired", "group_id")),
        list(Migration.objects.order_by("pk").values_list("pk", "status", "not_before")),
        list(MigrationBatch.objects.order_by("pk").values_list("pk", "status")),
        list(HostGroupGrant.objects.order_by("pk").values_list("pk", "role")),
        AuditEvent.objects.count(),
    )


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("where", ["in-group", "out-of-group"])
@pytest.mark.parametrize(
    ("method", "path", "body", "allowed", "allowed_status"),
    TABLE,
    ids=[f"{m.upper()} {p}" for m, p, *_ in TABLE],
)
def test_group_role_endpoint(world, principal, where, method, path, body, allowed, allowed_status):
    side = world["a" if where == "in-group" else "b"]
    client = APIClient()
    client.force_authenticate(_user(principal))
    before = _state()
    response = getattr(client, method)(_fill(path, side), _fill(body, side), format="json")
    detail = response.content[:300]
    if where == "in-group" and principal in allowed:
        assert response.status_code == allowed_status, detail
        return
    if allowed is SEE or (principal in allowed and path not in CREATES):
        # Not visible to this user (no role there): it is not there for them.
        assert response.status_code == 404, detail
    else:
        assert response.status_code == 403, detail
        text = response.json()["detail"]
        assert "role" in text, text
    assert _state() == before


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_lists_show_only_the_users_groups(world, principal):
    client = APIClient()
    client.force_authenticate(_user(principal))
    sees_a = principal != "nobody"

    def names(path: str, key: str) -> set:
        body = client.get(path).json()
        return {row[key] for row in (body["results"] if isinstance(body, dict) else body)}

    assert names("/api/hosts/", "name") == ({"a1", "a2"} if sees_a else set())
    assert names("/api/vms/", "name") == ({"web-a"} if sees_a else set())
    assert names("/api/migrations/", "vm_name") == ({"db-a"} if sees_a else set())
    assert names("/api/migration-batches/", "id") == ({world["a"]["batch"]} if sees_a else set())
    assert names("/api/host-groups/", "name") == ({"team-a"} if sees_a else set())
    # The pages too: the dashboard lists only the group's hosts and VMs.
    browser = _page_client(client)
    dashboard = browser.get("/").content.decode()
    assert ('data-host="a1"' in dashboard) == sees_a
    assert 'data-host="b1"' not in dashboard and "web-b" not in dashboard
    assert browser.get(f"/vms/{world['b']['vm']}/").status_code == 404
    assert browser.get(f"/hosts/{world['b']['host']}/").status_code == 404
    assert browser.get(f"/migrations/{world['b']['migration']}/").status_code == 404
    migrations_page = browser.get("/migrations/").content.decode()
    assert "db-b" not in migrations_page and ("db-a" in migrations_page) == sees_a


def _page_client(api_client: APIClient):
    from django.test import Client

    browser = Client()
    browser.force_login(api_client.handler._force_user)
    return browser


def test_a_global_role_still_sees_every_group(world):
    client = APIClient()
    user = get_user_model().objects.create_user(username="global-viewer", password="x-pass-123")
    user.groups.add(Group.objects.get(name="viewer"))
    client.force_authenticate(user)
    assert {h["name"] for h in client.get("/api/hosts/").json()["results"]} == {
        "a1",
        "a2",
        "b1",
        "b2",
    }


# --- crossing host groups ---------------------------------------------------------------


def _crossing(world, *grants: tuple[str, str]):
    user = get_user_model().objects.create_user(username="crosser", password="x-pass-123")
    for role, group in grants:
        grant(user, role, group)
    client = APIClient()
    client.force_authenticate(user)
    vm = world["a"]["vm"]
    return client, vm


@pytest.mark.parametrize("endpoint", ["migrate", "migrate/check"])
@pytest.mark.parametrize(
    "grants",
    [
        [("operator", "team-a")],
        [("operator", "team-a"), ("operator", "team-b")],
        [("operator", "team-a"), ("host admin", "team-a")],
        [("operator", "team-a"), ("host admin", "team-b"), ("viewer", "team-b")],
    ],
    ids=["operator-a", "operator-both", "admin-source-only", "admin-destination-only"],
)
def test_crossing_groups_needs_host_admin_on_both(world, endpoint, grants):
    client, vm = _crossing(world, *grants)
    before = _state()
    response = client.post(f"/api/vms/{vm}/{endpoint}/", {"remote_host": "b1"}, format="json")
    assert response.status_code == 403, response.content
    detail = response.json()["detail"]
    assert detail.startswith("remote_host: b1 is in host group team-b"), detail
    assert "host admin role on both" in detail
    assert _state() == before


def test_a_host_admin_of_both_groups_moves_a_vm_across(world):
    client, vm = _crossing(
        world, ("operator", "team-a"), ("host admin", "team-a"), ("host admin", "team-b")
    )
    response = client.post(f"/api/vms/{vm}/migrate/", {"remote_host": "b1"}, format="json")
    assert response.status_code == 202, response.content
    assert Migration.objects.get(pk=response.json()["id"]).destination.name == "b1"


def test_a_batch_item_crossing_groups_is_refused_naming_it(world):
    client, vm = _crossing(world, ("operator", "team-a"))
    before = _state()
    items = [{"vm": vm, "destination": "a2"}, {"vm": world["b"]["vm"], "destination": "b2"}]
    response = client.post("/api/migration-batches/", {"items": items}, format="json")
    assert response.status_code == 403, response.content
    assert response.json()["detail"].startswith("items[1]: Migrating this VM needs the operator")
    crossing = [{"vm": vm, "destination": "b1"}]
    response = client.post("/api/migration-batches/", {"items": crossing}, format="json")
    assert response.status_code == 403
    assert response.json()["detail"].startswith("items[0]: remote_host: b1 is in host group")
    assert _state() == before


def test_a_host_typed_into_a_request_is_registered_into_the_sources_group(world):
    from audit.services import Actor
    from hosts.services import host_register_remote

    group = HostGroup.objects.get(name="team-b")
    host = host_register_remote(
        remote_host="127.0.0.250", actor=Actor.system("test"), group_id=group.pk
    )
    assert host.group == group
    assert host_register_remote(remote_host="127.0.0.249", actor=Actor.system("t")).group.name == (
        "default"
    )


# --- ranking and evacuation stay inside the group ----------------------------------------


def test_destinations_and_evacuation_plans_stay_inside_the_group(world, api):
    # A reachable host of another group with plenty of memory: never recommended.
    for octet, name in enumerate(("a1", "a2", "b1", "b2"), start=231):
        Host.objects.filter(name=name).update(
            address=f"127.0.0.{octet}",
            transport="tcp",
            port=1,  # nothing listens: libvirt's CPU comparison is refused at once
            status="reachable",
            arch="x86_64",
            hypervisor_type="QEMU",
            memory_free_bytes=8 << 30,
            memory_total_bytes=16 << 30,
        )
    ranking = api.get(f"/api/vms/{world['a']['vm']}/destinations/").json()
    assert [row["host"] for row in ranking["destinations"]] == ["a2"]
    plan = api.post(f"/api/hosts/{world['a']['host']}/evacuate/", {"dry_run": True}, "json")
    assert plan.status_code == 200, plan.content
    body = plan.json()
    # Nothing answers libvirt's CPU comparison here: a2, the only candidate, is unfit.
    [stays] = body["unmovable"]
    assert body["migrations"] == [] and stays["reasons"][0].startswith("no fit destination (a2:")
    assert "b1" not in stays["reasons"][0] and "b2" not in stays["reasons"][0]


# --- the progress websockets -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_progress_sockets_follow_only_the_users_groups(admin_user):
    from asgiref.sync import async_to_sync
    from channels.routing import URLRouter
    from channels.testing import WebsocketCommunicator

    from portal.routing import websocket_urlpatterns

    world = {"a": _side("a", 10, admin_user), "b": _side("b", 20, admin_user)}
    user = _user("viewer@a")

    async def connect(path: str):
        socket = WebsocketCommunicator(URLRouter(websocket_urlpatterns), path)
        socket.scope["user"] = user
        connected, code = await socket.connect()
        first = await socket.receive_json_from() if connected else None
        await socket.disconnect()
        return connected, code, first

    for kind, key in (("migrations", "migration"), ("migration-batches", "batch")):
        connected, _code, first = async_to_sync(connect)(f"/ws/{kind}/{world['a'][key]}/")
        assert connected and first["event"] == "snapshot", kind
        connected, code, _first = async_to_sync(connect)(f"/ws/{kind}/{world['b'][key]}/")
        assert not connected and code == 4403, (kind, code)
