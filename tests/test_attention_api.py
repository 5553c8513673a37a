"""Resolving a migration that needs attention through the API, without hypervisors: the
hosts of these rows are outside PORTAL_HOST_NETWORKS, so they are never contacted and
read as unreachable (the lab proof: test_postcopy_recovery_lab.py)."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditEvent
from hosts.models import Host
from migrations_app.models import Migration

pytestmark = pytest.mark.django_db


@pytest.fixture
def stuck(vm, admin_user):
    """A live migration left in needs_attention by the engine."""
    return Migration.objects.create(
        vm_uuid=vm.uuid,
        vm_name=vm.name,
        source=vm.host,
        destination=Host.objects.get(name="dst"),
        requested_by=admin_user,
        requested_by_name=admin_user.username,
        status="needs_attention",
        phase="needs_attention",
        error="dst cannot be reached: nothing was changed",
        failure_reason="unreachable",
        max_downtime_ms=500,
        timeout_s=600,
        heartbeat_at=timezone.now(),
    )


def _client(role: str) -> APIClient:
    user = get_user_model().objects.create_user(username=role.replace(" ", "-"), password="x")
    user.groups.add(Group.objects.get(name=role))
    client = APIClient()
    client.force_authenticate(user)
    return client


def _resolved_events():
    return AuditEvent.objects.filter(event_type="migration.resolved")


def test_attention_shows_each_host_and_offers_only_what_touches_no_silent_host(api, stuck):
    response = api.get(f"/api/migrations/{stuck.pk}/attention/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["source"]["host"] == "src" and body["source"]["reachable"] is False
    assert body["destination"]["host"] == "dst" and body["destination"]["reachable"] is False
    assert "PORTAL_HOST_NETWORKS" in body["source"]["error"]
    safe = {c["action"]: c for c in body["choices"] if c["safe"]}
    assert set(safe) == {"mark_resolved"}
    assert safe["mark_resolved"]["host_actions"] == []
    refused = {c["action"]: c["why"] for c in body["choices"] if not c["safe"]}
    assert set(refused) == {"keep_destination", "keep_source", "resume_postcopy"}
    assert all("cannot be reached" in why for why in refused.values())


def test_attention_of_a_migration_that_does_not_need_it_is_409(api, stuck):
    Migration.objects.filter(pk=stuck.pk).update(status="succeeded")
    response = api.get(f"/api/migrations/{stuck.pk}/attention/")
    assert response.status_code == 409
    assert "not needs_attention" in response.json()["detail"]


@pytest.mark.parametrize(
    ("payload", "errors"),
    [
        ({}, {"action", "reason"}),
        ({"action": "keep_both", "reason": "x"}, {"action"}),
        ({"action": "mark_resolved", "reason": "   "}, {"reason"}),
        ({"action": "mark_resolved", "reason": "x" * 501}, {"reason"}),
        ({"action": ["mark_resolved"], "reason": "x"}, {"action"}),
    ],
)
def test_bad_input_names_the_field(api, stuck, payload, errors):
    response = api.post(f"/api/migrations/{stuck.pk}/resolve/", payload, format="json")
    assert response.status_code == 400
    assert set(response.json()) == errors
    assert not _resolved_events().exists()


def test_an_action_that_touches_an_unreachable_host_is_409_and_changes_nothing(api, stuck):
    response = api.post(
        f"/api/migrations/{stuck.pk}/resolve/",
        {"action": "keep_source", "reason": "lab-2 is gone for good"},
        format="json",
    )
    assert response.status_code == 409
    assert "keep_source is not safe now" in response.json()["detail"]
    assert "dst cannot be reached" in response.json()["detail"]
    stuck.refresh_from_db()
    assert stuck.status == "needs_attention" and not _resolved_events().exists()


def test_mark_resolved_records_who_why_and_what_the_hosts_said(api, stuck):
    epoch = stuck.claim_epoch
    response = api.post(
        f"/api/migrations/{stuck.pk}/resolve/",
        {"action": "mark_resolved", "reason": "moved by hand with virsh, checked"},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "failed" and body["failure_reason"] == "unreachable"
    assert "resolved by admin (mark_resolved: moved by hand with virsh, checked)" in body["error"]
    stuck.refresh_from_db()
    assert stuck.claim_epoch == epoch + 1  # taken from whoever held it
    event = _resolved_events().get()
    assert event.actor_name == "admin" and event.auth_method == "token"
    assert event.before == {"status": "needs_attention"} and event.after == {"status": "failed"}
    assert event.detail["action"] == "mark_resolved"
    assert event.detail["reason"] == "moved by hand with virsh, checked"
    assert event.detail["hosts_said"]["destination"]["reachable"] is False
    assert event.detail["host_actions"] == []
    again = api.post(
        f"/api/migrations/{stuck.pk}/resolve/",
        {"action": "mark_resolved", "reason": "twice"},
        format="json",
    )
    assert again.status_code == 409 and _resolved_events().count() == 1


def test_resolving_is_the_host_admins(stuck):
    payload = {"action": "mark_resolved", "reason": "checked"}
    operator = _client("operator")
    refused = operator.post(f"/api/migrations/{stuck.pk}/resolve/", payload, format="json")
    assert refused.status_code == 403 and "host admin" in refused.json()["detail"]
    assert operator.get(f"/api/migrations/{stuck.pk}/attention/").status_code == 200
    host_admin = _client("host admin")
    done = host_admin.post(f"/api/migrations/{stuck.pk}/resolve/", payload, format="json")
    assert done.status_code == 200 and done.json()["status"] == "failed"
    assert _resolved_events().get().actor_name == "host-admin"


def test_the_page_shows_the_panel_and_the_buttons_only_to_host_admins(client, stuck):
    for role, can in (("host admin", True), ("operator", False)):
        user = get_user_model().objects.create_user(username=f"p-{role}", password="pw-123-x")
        user.groups.add(Group.objects.get(name=role))
        client.force_login(user)
        page = client.get(f"/migrations/{stuck.pk}/").content.decode()
        assert 'id="attention-panel"' in page and "portal/attention.js" in page
        assert f'data-can-resolve="{str(can).lower()}"' in page
        assert ('id="attention-form"' in page) is can
        assert ("Resolving needs the host admin role." in page) is not can
    Migration.objects.filter(pk=stuck.pk).update(status="failed")
    page = client.get(f"/migrations/{stuck.pk}/").content.decode()
    assert "attention-panel" not in page
