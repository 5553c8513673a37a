"""Host groups and the roles granted on them: the default group every host starts in,
the API and the admin (audited alike), and the inventory socket that tells each user
only of their groups. The role table over every endpoint: test_host_group_roles.py."""

from __future__ import annotations

from importlib import import_module

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.apps import apps as global_apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from audit.models import AuditEvent
from hosts.models import DEFAULT_GROUP_NAME, Host, HostGroup, HostGroupGrant
from listeners.services import INVENTORY_GROUP, inventory_group_of
from portal.routing import websocket_urlpatterns
from tests.grants import grant

pytestmark = pytest.mark.django_db


def _events(event_type: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type=event_type).order_by("id"))


def test_a_host_without_a_group_is_in_the_default_group():
    host = Host.objects.create(name="h", address="192.0.2.1")
    assert host.group.name == DEFAULT_GROUP_NAME


def test_the_migration_puts_existing_hosts_into_default():
    """0011's data step over hosts that have no group (as every host had before it)."""
    migration = import_module("hosts.migrations.0011_host_groups")
    HostGroup.objects.filter(name=DEFAULT_GROUP_NAME).delete()
    other = HostGroup.objects.create(name="other")
    stays = Host.objects.create(name="stays", address="192.0.2.2", group=other)
    migration.hosts_into_default(global_apps, None)
    default = HostGroup.objects.get(name=DEFAULT_GROUP_NAME)
    assert "before host groups" in default.description
    stays.refresh_from_db()
    assert stays.group == other  # only hosts without a group move
    assert Host.objects.filter(group__isnull=True).count() == 0


def test_host_groups_through_the_api_are_audited(api):
    created = api.post("/api/host-groups/", {"name": "team-a", "description": "A"}, "json")
    assert created.status_code == 201, created.content
    group_id = created.json()["id"]
    assert created.json()["host_count"] == 0
    changed = api.patch(f"/api/host-groups/{group_id}/", {"description": "Team A"}, "json")
    assert changed.status_code == 200
    [made] = _events("host_group.created")
    assert made.after == {"name": "team-a", "description": "A"}
    [updated] = _events("host_group.updated")
    assert updated.before == {"description": "A"} and updated.after == {"description": "Team A"}
    # A host moves in through the host's own API (host.updated), then the group cannot go.
    host = Host.objects.create(name="h1", address="127.0.0.243")
    moved = api.patch(f"/api/hosts/{host.pk}/", {"group": "team-a"}, "json")
    assert moved.status_code == 200, moved.content
    assert moved.json()["group"] == "team-a"
    assert _events("host.updated")[-1].before == {"group": DEFAULT_GROUP_NAME}
    assert _events("host.updated")[-1].after == {"group": "team-a"}
    refused = api.delete(f"/api/host-groups/{group_id}/")
    assert refused.status_code == 409 and "still has 1 host" in refused.json()["detail"]
    assert HostGroup.objects.filter(pk=group_id).exists()
    assert _events("host_group.deleted") == []
    api.patch(f"/api/hosts/{host.pk}/", {"group": DEFAULT_GROUP_NAME}, "json")
    assert api.delete(f"/api/host-groups/{group_id}/").status_code == 204
    assert [e.before["name"] for e in _events("host_group.deleted")] == ["team-a"]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": ""}, "name"),
        ({"name": "a b/c"}, "name"),
        ({"name": DEFAULT_GROUP_NAME}, "name"),
        ({"name": "x", "description": "d" * 501}, "description"),
    ],
)
def test_bad_host_group_input_names_the_field(api, body, field):
    HostGroup.objects.get_or_create(name=DEFAULT_GROUP_NAME)
    response = api.post("/api/host-groups/", body, "json")
    assert response.status_code == 400 and field in response.json(), response.content


def test_grants_are_for_staff_and_audited(api, admin_user):
    team = HostGroup.objects.create(name="team-a")
    user = get_user_model().objects.create_user(username="alice", password="alice-pass-1")
    other = APIClient()
    other.force_authenticate(user)
    body = {"host_group": "team-a", "role": "operator", "user": "alice"}
    refused = other.post("/api/host-group-grants/", body, "json")
    assert refused.status_code == 403 and "staff" in refused.json()["detail"]
    assert not HostGroupGrant.objects.exists()

    created = api.post("/api/host-group-grants/", body, "json")
    assert created.status_code == 201, created.content
    assert created.json()["user"] == "alice" and created.json()["group"] is None
    [added] = _events("host_group.grant_added")
    assert added.target_id == str(team.pk) and added.actor == admin_user
    assert added.after == {
        "host_group": "team-a",
        "role": "operator",
        "user": "alice",
        "group": None,
    }
    # The same grant twice, both or neither of user and group: 400, nothing added.
    assert api.post("/api/host-group-grants/", body, "json").status_code == 400
    both = {**body, "group": "viewer"}
    assert list(api.post("/api/host-group-grants/", both, "json").json()) == ["user"]
    neither = {"host_group": "team-a", "role": "viewer"}
    assert list(api.post("/api/host-group-grants/", neither, "json").json()) == ["user"]
    auditor = {"host_group": "team-a", "role": "auditor", "user": "alice"}
    assert list(api.post("/api/host-group-grants/", auditor, "json").json()) == ["role"]
    assert HostGroupGrant.objects.count() == 1

    # alice lists her own grants; revoking is staff's and audited.
    assert [g["role"] for g in other.get("/api/host-group-grants/").json()["results"]] == [
        "operator"
    ]
    grant_id = created.json()["id"]
    assert other.delete(f"/api/host-group-grants/{grant_id}/").status_code == 403
    assert api.delete(f"/api/host-group-grants/{grant_id}/").status_code == 204
    [removed] = _events("host_group.grant_removed")
    assert removed.before["user"] == "alice"


def test_a_group_host_admin_cannot_create_groups_nor_put_hosts_outside_theirs(admin_user):
    user = get_user_model().objects.create_user(username="bob", password="bob-pass-123")
    grant(user, "host admin", "team-a")
    HostGroup.objects.create(name="team-b")
    client = APIClient()
    client.force_authenticate(user)
    assert client.post("/api/host-groups/", {"name": "mine"}, "json").status_code == 403
    body = {"name": "n1", "address": "127.0.0.241", "group": "team-b"}
    refused = client.post("/api/hosts/", body, "json")
    assert refused.status_code == 403 and refused.json()["detail"].startswith("group:")
    assert not Host.objects.filter(name="n1").exists()
    made = client.post("/api/hosts/", {**body, "group": "team-a"}, "json")
    assert made.status_code == 201, made.content
    moved = client.patch(f"/api/hosts/{made.json()['id']}/", {"group": "team-b"}, "json")
    assert moved.status_code == 403 and Host.objects.get(name="n1").group.name == "team-a"
    # Without a group the host goes into default, which bob does not administer.
    unnamed = client.post("/api/hosts/", {"name": "n2", "address": "127.0.0.242"}, "json")
    assert unnamed.status_code == 403


# --- the admin ---------------------------------------------------------------------------


def test_host_groups_and_grants_changed_in_the_admin_are_audited(browser, admin_user):
    response = browser.post(
        "/admin/hosts/hostgroup/add/",
        {
            "name": "team-a",
            "description": "A",
            "grants-TOTAL_FORMS": "0",
            "grants-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    team = HostGroup.objects.get(name="team-a")
    [made] = _events("host_group.created")
    assert made.auth_method == "admin" and made.actor == admin_user

    alice = get_user_model().objects.create_user(username="alice", password="alice-pass-1")
    response = browser.post(
        "/admin/hosts/hostgroupgrant/add/",
        {"host_group": team.pk, "role": "operator", "user": alice.pk},
    )
    assert response.status_code == 302, response.content[:2000]
    [added] = _events("host_group.grant_added")
    assert added.after["user"] == "alice" and added.auth_method == "admin"
    given = HostGroupGrant.objects.get()
    # Grants are never edited in place: taken back (audited) and given anew.
    assert browser.get(f"/admin/hosts/hostgroupgrant/{given.pk}/change/").status_code == 200
    browser.post(f"/admin/hosts/hostgroupgrant/{given.pk}/delete/", {"post": "yes"})
    assert not HostGroupGrant.objects.exists()
    [removed] = _events("host_group.grant_removed")
    assert removed.auth_method == "admin"

    browser.post(f"/admin/hosts/hostgroup/{team.pk}/delete/", {"post": "yes"})
    assert not HostGroup.objects.filter(pk=team.pk).exists()
    assert [e.before["name"] for e in _events("host_group.deleted")] == ["team-a"]


# --- the inventory socket ----------------------------------------------------------------


def _roles_back() -> None:
    """A transactional test's flush takes the role groups the data migration made."""
    from django.contrib.auth.models import Permission

    roles = import_module("migrations_app.migrations.0013_roles").ROLES
    for name, perms in roles.items():
        group, _ = Group.objects.get_or_create(name=name)
        for app_label, codename in perms:
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )


@pytest.mark.django_db(transaction=True)
def test_the_inventory_socket_tells_a_user_only_of_their_groups():
    _roles_back()
    team_a = HostGroup.objects.create(name="team-a")
    team_b = HostGroup.objects.create(name="team-b")
    scoped_user = get_user_model().objects.create_user(username="a-op", password="a-op-pass-1")
    grant(scoped_user, "operator", "team-a")
    global_user = get_user_model().objects.create_user(username="g", password="g-pass-123")
    global_user.groups.add(Group.objects.get(name="viewer"))
    layer = get_channel_layer()

    def message(host: str) -> dict:
        return {"type": "inventory.vm", "event": "started/booted", "host": host, "vm": {}}

    async def scenario():
        sockets = {}
        for name, user in (("scoped", scoped_user), ("global", global_user)):
            socket = WebsocketCommunicator(URLRouter(websocket_urlpatterns), "/ws/inventory/")
            socket.scope["user"] = user
            connected, _ = await socket.connect()
            assert connected
            sockets[name] = socket
        # As listeners.services.host_event_apply sends: to everyone's group and the host's.
        for host, group in (("b1", team_b), ("a1", team_a)):
            await layer.group_send(INVENTORY_GROUP, message(host))
            await layer.group_send(inventory_group_of(group.pk), message(host))
        got = {}
        for name, socket in sockets.items():
            got[name] = []
            while not await socket.receive_nothing(timeout=0.3):
                got[name].append((await socket.receive_json_from())["host"])
            await socket.disconnect()
        return got

    got = async_to_sync(scenario)()
    assert got == {"scoped": ["a1"], "global": ["b1", "a1"]}


def test_an_inventory_change_is_sent_to_everyone_and_to_its_host_group(monkeypatch):
    """listeners.services.host_event_apply: the same message to both channel groups."""
    import uuid as uuid_module

    from django.utils import timezone

    from hosts.hypervisor import DomainEvent, DomainInfo
    from listeners import services
    from listeners.models import HostListener

    team = HostGroup.objects.create(name="team-a")
    host = Host.objects.create(name="a1", address="192.0.2.5", group=team)
    HostListener.objects.create(host=host, epoch=1)
    sent = []
    monkeypatch.setattr(
        services, "send_after_commit", lambda group, message, what: sent.append(group)
    )
    uuid = str(uuid_module.uuid4())
    info = DomainInfo(
        uuid=uuid, name="vm1", state="running", persistent=True, vcpus=1, memory_kib=1024,
        max_memory_kib=1024, arch="x86_64", machine_type="pc", domain_type="qemu", disks=[],
        has_hostdev=False,
    )  # fmt: skip
    applied = services.host_event_apply(
        host_id=host.pk,
        epoch=1,
        event=DomainEvent(uuid, "vm1", "lifecycle", "started", "booted"),
        info=info,
        read_at=timezone.now(),
    )
    assert applied
    assert sent == [INVENTORY_GROUP, inventory_group_of(team.pk)]
