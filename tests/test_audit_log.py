"""The audit log: append-only at every level, read-only admin and API, filters, pages."""

import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.test import RequestFactory
from django.utils import timezone
from rest_framework.test import APIClient

from audit.events import EventType
from audit.models import AppendOnlyError, AuditEvent
from audit.services import Actor, audit_event_record
from hosts.models import Host
from vms.models import VM

pytestmark = pytest.mark.django_db

T0 = timezone.now().replace(microsecond=0) - timedelta(days=10)


def _event(**fields) -> AuditEvent:
    values = {
        "event_type": "host.updated",
        "actor_name": "alice",
        "auth_method": "token",
        "target_type": "hosts.host",
        "target_id": "1",
        "target_repr": "hv-1",
        "host_name": "hv-1",
    }
    values.update(fields)
    return AuditEvent.objects.create(**values)


@pytest.fixture
def auditor():
    """A user who is not staff but was given the audit view permission."""
    user = get_user_model().objects.create_user(username="auditor", password="auditor-pass-1")
    user.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    client = APIClient()
    client.force_authenticate(user)
    return client


# --- append-only ---------------------------------------------------------------------------


def test_an_event_cannot_be_saved_again_or_deleted():
    event = _event()
    event.event_type = "forged"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    assert AuditEvent.objects.get().event_type == "host.updated"


def test_the_queryset_refuses_bulk_changes():
    event = _event()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.update(event_type="forged")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).update(actor_name="mallory")
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.all().delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=event.pk).delete()
    event.actor_name = "mallory"
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.bulk_update([event], ["actor_name"])
    assert not hasattr(AuditEvent.objects, "delete")  # like Django: no Manager.delete()
    assert list(AuditEvent.objects.values_list("actor_name", flat=True)) == ["alice"]


def _raw(sql: str, params=()) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)


def test_the_database_refuses_updates_below_the_orm():
    """A trigger (PostgreSQL and SQLite) refuses an UPDATE sent as plain SQL."""
    event = _event()
    with pytest.raises(DatabaseError, match="append-only"):
        _raw("UPDATE audit_auditevent SET event_type = 'forged' WHERE id = %s", [event.pk])
    with pytest.raises(DatabaseError, match="append-only"):
        _raw("UPDATE audit_auditevent SET actor_name = 'x', actor_id = NULL")
    assert AuditEvent.objects.get().event_type == "host.updated"


def test_the_database_refuses_pointing_an_event_at_another_user(admin_user):
    other = get_user_model().objects.create_user(username="other")
    event = _event(actor=admin_user, actor_name="admin")
    with pytest.raises(DatabaseError, match="append-only"):
        _raw("UPDATE audit_auditevent SET actor_id = %s WHERE id = %s", [other.pk, event.pk])
    assert AuditEvent.objects.get().actor_id == admin_user.pk


def test_deletes_are_refused_at_the_deepest_level_each_database_allows():
    event = _event()
    if connection.vendor == "postgresql":
        with pytest.raises(DatabaseError, match="append-only"):
            _raw("DELETE FROM audit_auditevent WHERE id = %s", [event.pk])
    else:
        # SQLite has no DELETE trigger: Django's flush there is DELETE FROM every table
        # (see audit/triggers.py). Every delete path of the ORM refuses instead.
        with pytest.raises(AppendOnlyError):
            AuditEvent.objects.filter(pk=event.pk).delete()
        with pytest.raises(AppendOnlyError):
            AuditEvent.objects.all()._raw_delete(connection.alias)
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_deleting_a_user_keeps_the_name_on_their_events(admin_user):
    event = _event(actor=admin_user, actor_name="admin", before={"a": 1}, after={"a": 2})
    admin_user.delete()  # Django sets actor_id NULL: the one change the trigger lets through
    kept = AuditEvent.objects.get(pk=event.pk)
    assert kept.actor_id is None
    assert kept.actor_name == "admin"
    assert (kept.event_type, kept.before, kept.after) == ("host.updated", {"a": 1}, {"a": 2})
    assert kept.occurred_at == event.occurred_at


@pytest.mark.django_db(transaction=True)
def test_flush_still_empties_the_table_with_the_triggers_in_place():
    """pytest-django's transactional tests flush the database after each test: the
    triggers must not break that (TRUNCATE on PostgreSQL; no DELETE trigger on SQLite)."""
    _event()
    _event(event_type="host.created")
    call_command("flush", interactive=False, verbosity=0)
    assert AuditEvent.objects.count() == 0
    _event()  # and the table still works afterwards
    assert AuditEvent.objects.count() == 1


# --- what the service derives ----------------------------------------------------------------


def _host(name="hv-1", address="192.0.2.1") -> Host:
    return Host.objects.create(name=name, address=address)


def test_host_vm_and_migration_events_get_their_host_and_vm_columns():
    host = _host()
    vm = VM.objects.create(
        uuid=uuid.uuid4(),
        name="web-1",
        host=host,
        state="running",
        persistent=True,
        vcpus=1,
        memory_kib=1024,
        max_memory_kib=1024,
        last_synced_at=timezone.now(),
    )
    actor = Actor.system("test")
    on_host = audit_event_record(actor=actor, event_type=EventType.HOST_UPDATED, target=host)
    on_vm = audit_event_record(actor=actor, event_type=EventType.VM_DISCOVERED, target=vm)
    vm_uuid = str(uuid.uuid4())
    on_migration = audit_event_record(
        actor=actor,
        event_type=EventType.MIGRATION_REQUESTED,
        target=host,  # any model: the detail carries the migration's subjects
        detail={"vm_uuid": vm_uuid, "vm_name": "db-1", "source": "hv-1", "destination": "hv-2"},
    )
    assert (on_host.host_name, on_host.peer_host_name, on_host.vm_uuid) == ("hv-1", "", None)
    assert (on_vm.host_name, on_vm.vm_name, on_vm.vm_uuid) == ("hv-1", "web-1", vm.uuid)
    assert on_migration.host_name == "hv-1"
    assert on_migration.peer_host_name == "hv-2"
    assert (str(on_migration.vm_uuid), on_migration.vm_name) == (vm_uuid, "db-1")


def test_request_id_is_the_header_when_sane_and_one_per_request(admin_user):
    factory = RequestFactory()
    request = factory.get("/", HTTP_X_REQUEST_ID="abc-123", REMOTE_ADDR="198.51.100.4")
    request.user = admin_user
    actor = Actor.from_request(request)
    assert (actor.request_id, actor.source_ip, actor.name) == ("abc-123", "198.51.100.4", "admin")

    bad = factory.get("/", HTTP_X_REQUEST_ID="no spaces <script>")
    bad.user = admin_user
    first, second = Actor.from_request(bad), Actor.from_request(bad)
    assert first.request_id != "no spaces <script>"
    assert len(first.request_id) == 32
    assert first.request_id == second.request_id  # every event of one request shares it


# --- admin -------------------------------------------------------------------------------------


def test_admin_shows_events_but_cannot_add_change_or_delete(admin_user, client):
    event = _event()
    client.force_login(admin_user)
    listing = client.get("/admin/audit/auditevent/")
    assert listing.status_code == 200
    assert b"hv-1" in listing.content
    assert b'name="action"' not in listing.content  # no "delete selected" action
    page = client.get(f"/admin/audit/auditevent/{event.pk}/change/")
    assert page.status_code == 200
    assert b'name="_save"' not in page.content  # view-only form
    assert client.post(f"/admin/audit/auditevent/{event.pk}/change/", {}).status_code == 403
    assert (
        client.post(f"/admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert client.get("/admin/audit/auditevent/add/").status_code == 403
    assert AuditEvent.objects.get(pk=event.pk).event_type == "host.updated"


# --- API -----------------------------------------------------------------------------------------


def test_api_is_read_only(api):
    event = _event()
    url = f"/api/audit/{event.pk}/"
    assert api.get(url).json()["event_type"] == "host.updated"
    assert api.post("/api/audit/", {"event_type": "x"}, format="json").status_code == 405
    assert api.put(url, {"event_type": "x"}, format="json").status_code == 405
    assert api.patch(url, {"event_type": "x"}, format="json").status_code == 405
    assert api.delete(url).status_code == 405
    assert AuditEvent.objects.get().event_type == "host.updated"


def test_api_needs_an_administrator_or_auditor(viewer_api, auditor):
    _event()
    assert APIClient().get("/api/audit/").status_code == 401
    assert viewer_api.get("/api/audit/").status_code == 403
    response = auditor.get("/api/audit/")
    assert response.status_code == 200
    assert len(response.json()["results"]) == 1


@pytest.fixture
def log():
    """A small log over a few days: hosts, a VM's migration, logins."""
    vm = uuid.uuid4()
    rows = [
        ("host.created", "alice", "hv-1", "", None, "", 0),
        ("host.created", "alice", "hv-2", "", None, "", 1),
        ("migration.requested", "bob", "hv-1", "hv-2", vm, "web-1", 2),
        ("migration.succeeded", "worker 1", "hv-1", "hv-2", vm, "web-1", 3),
        ("auth.login_failed", "mallory", "", "", None, "", 4),
        ("host.updated", "alice", "hv-3", "", None, "", 5),
    ]
    events = []
    for event_type, actor, host, peer, vm_uuid, vm_name, day in rows:
        events.append(
            _event(
                event_type=event_type,
                actor_name=actor,
                host_name=host,
                peer_host_name=peer,
                vm_uuid=vm_uuid,
                vm_name=vm_name,
                occurred_at=T0 + timedelta(days=day),
            )
        )
    return {"vm": vm, "events": events}


def _types(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [e["event_type"] for e in response.json()["results"]]


def test_api_lists_newest_first_with_filters(api, log):
    assert _types(api.get("/api/audit/")) == [
        "host.updated",
        "auth.login_failed",
        "migration.succeeded",
        "migration.requested",
        "host.created",
        "host.created",
    ]
    since, until = (T0 + timedelta(days=1)).isoformat(), (T0 + timedelta(days=3)).isoformat()
    assert _types(api.get("/api/audit/", {"since": since, "until": until})) == [
        "migration.requested",
        "host.created",
    ]
    assert _types(api.get("/api/audit/", {"actor": "mallory"})) == ["auth.login_failed"]
    assert _types(api.get("/api/audit/", {"event_type": "migration.*"})) == [
        "migration.succeeded",
        "migration.requested",
    ]
    assert _types(api.get("/api/audit/", {"event_type": "host.updated,auth.login_failed"})) == [
        "host.updated",
        "auth.login_failed",
    ]
    # A host matches as the event's host and as a migration's destination.
    assert _types(api.get("/api/audit/", {"host": "hv-2"})) == [
        "migration.succeeded",
        "migration.requested",
        "host.created",
    ]
    by_uuid = _types(api.get("/api/audit/", {"vm": str(log["vm"])}))
    assert by_uuid == ["migration.succeeded", "migration.requested"]
    assert _types(api.get("/api/audit/", {"vm": "web-1"})) == by_uuid
    assert api.get("/api/audit/", {"since": "not a date"}).status_code == 400


def test_api_pages_follow_a_cursor_without_gaps_or_repeats(api):
    # Several events share a timestamp: the order falls back to the id.
    for i in range(23):
        _event(target_id=str(i), occurred_at=T0 + timedelta(seconds=i // 3))
    seen, url = [], "/api/audit/?page_size=5"
    while url:
        body = api.get(url).json()
        assert len(body["results"]) <= 5
        seen += [int(e["target_id"]) for e in body["results"]]
        url = body["next"]
    assert sorted(seen) == list(range(23))
    assert len(seen) == 23
    expected = sorted(AuditEvent.objects.all(), key=lambda e: (e.occurred_at, e.id), reverse=True)
    assert seen == [int(e.target_id) for e in expected]


def test_host_filter_pages_merge_both_columns_in_order(api):
    """A host's events come from two indexes (its own events, and migrations where it
    is the destination): pages must interleave them in time order across cursors."""
    for i in range(30):
        own = i % 3 != 0
        _event(
            target_id=str(i),
            host_name="hv-x" if own else "hv-y",
            peer_host_name="" if own else "hv-x",
            occurred_at=T0 + timedelta(seconds=i // 4),
        )
    _event(target_id="other", host_name="hv-z", occurred_at=T0 + timedelta(seconds=3))
    seen, url = [], "/api/audit/?host=hv-x&page_size=4"
    while url:
        body = api.get(url).json()
        seen += [e["target_id"] for e in body["results"]]
        url = body["next"]
    expected = AuditEvent.objects.filter(target_id__in=[str(i) for i in range(30)])
    expected = sorted(expected, key=lambda e: (e.occurred_at, e.id), reverse=True)
    assert seen == [e.target_id for e in expected]


@pytest.mark.parametrize("page_size", ["0", "501", "many"])
def test_api_page_size_is_bounded(api, page_size):
    response = api.get("/api/audit/", {"page_size": page_size})
    assert response.status_code == 400
    assert "page_size" in response.json()


# --- page ----------------------------------------------------------------------------------------


def test_audit_page_lists_filters_and_pages(admin_user, client, log):
    client.force_login(admin_user)
    page = client.get("/audit/", {"event_type": "host.*"})
    assert page.status_code == 200
    rows = [e.event_type for e in page.context["events"]]
    assert rows == ["host.updated", "host.created", "host.created"]
    assert page.context["next_url"] is None
    for i in range(60):
        _event(event_type="vm.gone", target_id=str(i), occurred_at=T0 + timedelta(minutes=i))
    first = client.get("/audit/", {"event_type": "vm.gone"})
    assert len(first.context["events"]) == 50
    second = client.get("/audit/" + first.context["next_url"])
    older = second.context["events"]
    assert len(older) == 10
    assert {e.pk for e in older}.isdisjoint(e.pk for e in first.context["events"])
    assert older[0].occurred_at < first.context["events"][-1].occurred_at
    assert client.get("/audit/", {"cursor": "garbage!"}).status_code == 400


def test_audit_page_is_for_administrators_and_auditors(client, viewer_user):
    assert client.get("/audit/").status_code == 302  # to the login page
    client.force_login(viewer_user)
    assert client.get("/audit/").status_code == 403
    viewer_user.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    client.force_login(get_user_model().objects.get(pk=viewer_user.pk))
    assert client.get("/audit/").status_code == 200
