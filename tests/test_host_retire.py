"""Issue #22 item 6: removing a host with migration history is a 409 (it was a 500,
ProtectedError), and a host admin retires such a host instead: kept for the history, out
of placement, lists and the inventory poll."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

import listeners.runner as runner_module
from audit.events import EventType
from audit.models import AuditEvent
from hosts.models import Host
from listeners.selectors import hosts_due_for_poll
from migrations_app.models import Migration
from migrations_app.selectors import destinations_ranked, evacuation_plan
from tests.test_roles import _user

pytestmark = pytest.mark.django_db


@pytest.fixture
def history(vm, admin_user) -> Migration:
    """A migration of `vm` from src to dst: dst has history."""
    return Migration.objects.create(
        vm_uuid=vm.uuid,
        vm_name=vm.name,
        source=vm.host,
        destination=Host.objects.get(name="dst"),
        requested_by=admin_user,
        requested_by_name=admin_user.username,
        status="succeeded",
        max_downtime_ms=500,
        timeout_s=600,
    )


def _dst() -> Host:
    return Host.objects.get(name="dst")


def test_deleting_a_host_with_history_is_a_409_and_changes_nothing(api, history):
    events = AuditEvent.objects.count()
    response = api.delete(f"/api/hosts/{_dst().pk}/")
    assert response.status_code == 409, response.content
    assert "retire" in response.json()["detail"]
    assert Host.objects.filter(name="dst").exists()
    assert Migration.objects.filter(pk=history.pk).exists()
    assert AuditEvent.objects.count() == events  # the host.deleted row rolled back


def test_a_host_without_history_is_still_removed(api, vm):
    assert api.delete(f"/api/hosts/{_dst().pk}/").status_code == 204
    assert not Host.objects.filter(name="dst").exists()


def test_a_host_admin_retires_a_host_an_operator_may_not(vm, history):
    host_admin, operator = APIClient(), APIClient()
    host_admin.force_authenticate(_user("host admin"))
    operator.force_authenticate(_user("operator"))
    path = f"/api/hosts/{_dst().pk}/retire/"
    assert operator.post(path, {}, format="json").status_code == 403
    assert not _dst().retired
    response = host_admin.post(path, {}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["retired"] is True and response.json()["retired_at"]
    event = AuditEvent.objects.filter(target_id=str(_dst().pk)).order_by("-id").first()
    assert (event.event_type, event.actor_name) == (EventType.HOST_RETIRED, "host-admin")
    # A repeat records nothing; bringing it back is audited too.
    assert host_admin.post(path, {}, format="json").status_code == 200
    assert AuditEvent.objects.filter(event_type=EventType.HOST_RETIRED).count() == 1
    response = host_admin.post(path, {"retired": False}, format="json")
    assert response.json()["retired"] is False and response.json()["retired_at"] is None
    assert AuditEvent.objects.filter(event_type=EventType.HOST_UNRETIRED).count() == 1


def test_a_retired_host_is_hidden_from_lists_unless_asked_for(api, vm, history, admin_user):
    api.post(f"/api/hosts/{_dst().pk}/retire/", {}, format="json")
    names = [h["name"] for h in api.get("/api/hosts/").json()["results"]]
    assert names == ["src"]
    names = [h["name"] for h in api.get("/api/hosts/?retired=true").json()["results"]]
    assert names == ["dst", "src"]
    assert api.get("/api/hosts/?retired=maybe").json() == {
        "retired": ["Not a boolean: true or false."]
    }
    assert api.get(f"/api/hosts/{_dst().pk}/").status_code == 200  # kept for the history
    assert api.get(f"/api/migrations/{history.pk}/").json()["destination"]
    browser = Client()
    browser.force_login(admin_user)
    dashboard = browser.get("/").content.decode()
    assert f'href="/hosts/{vm.host_id}/"' in dashboard
    assert f'href="/hosts/{_dst().pk}/"' not in dashboard
    host_page = browser.get(f"/hosts/{_dst().pk}/")
    assert host_page.status_code == 200
    assert 'data-field="retired-badge"' in host_page.content.decode()


def test_a_retired_host_is_out_of_placement(vm, history, api):
    assert [p.host.name for p in destinations_ranked(vm)] == ["dst"]
    api.post(f"/api/hosts/{_dst().pk}/retire/", {}, format="json")
    assert destinations_ranked(vm) == []
    assert evacuation_plan(vm.host).destinations == {}
    assert api.get(f"/api/vms/{vm.uuid}/destinations/").json()["destinations"] == []


def test_a_retired_host_is_neither_polled_nor_listened_to(vm, history, api, monkeypatch):
    assert set(hosts_due_for_poll()) == {vm.host, _dst()}
    api.post(f"/api/hosts/{_dst().pk}/retire/", {}, format="json")
    assert set(hosts_due_for_poll()) == {vm.host}
    started = []

    class _Watcher:  # the lease loop's choice is tested, not a libvirt connection
        def __init__(self, host_id: int, epoch: int, events) -> None:
            started.append(host_id)

        def start(self) -> None:
            pass

    monkeypatch.setattr(runner_module, "Watcher", _Watcher)
    runner_module.ListenerProcess(owner="test").tick()
    assert started == [vm.host_id]
