"""Maintenance, the destination ranking and the evacuation plan through the API, with
hosts recorded in the database (no lab). The hosts' libvirt is a closed port on
loopback: the CPU comparison really tries and is refused at once, as a host that is
down would be (a reason, never an exception)."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from audit.events import EventType
from audit.models import AuditEvent
from hosts.models import Host
from migrations_app.domain.lifecycle import MigrationStatus
from migrations_app.evacuation import NOTHING_TO_MOVE
from migrations_app.models import Migration, MigrationBatch
from migrations_app.prechecks import CheckName
from vms.models import VM

pytestmark = pytest.mark.django_db

GIB = 2**30


def _host(name: str, last_octet: int, **fields) -> Host:
    values = {
        "name": name,
        "address": f"127.0.0.{last_octet}",
        "transport": "tcp",
        "port": 1,  # nothing listens: refused at once
        "status": "reachable",
        "arch": "x86_64",
        "hypervisor_type": "QEMU",
        "memory_total_bytes": 16 * GIB,
        "memory_free_bytes": 8 * GIB,
    }
    values.update(fields)
    return Host.objects.create(**values)


def _vm(host: Host, name: str, memory_gib: float = 1, state: str = "running", **fields) -> VM:
    values = {
        "uuid": uuid.uuid4(),
        "name": name,
        "host": host,
        "state": state,
        "persistent": True,
        "vcpus": 1,
        "memory_kib": int(memory_gib * GIB) // 1024,
        "max_memory_kib": int(memory_gib * GIB) // 1024,
        "last_synced_at": timezone.now(),
    }
    values.update(fields)
    return VM.objects.create(**values)


@pytest.fixture
def fleet():
    return {
        "src": _host("src", 201),
        "big": _host("big", 202, memory_free_bytes=12 * GIB),
        "small": _host("small", 203, memory_free_bytes=2 * GIB),
        "down": _host("down", 204, status="unreachable", last_error="connection refused"),
        "arm": _host("arm", 205, arch="aarch64"),
    }


# --- Maintenance -----------------------------------------------------------------------


def test_enter_and_leave_maintenance_audited(api, fleet):
    host = fleet["big"]
    response = api.post(
        f"/api/hosts/{host.pk}/maintenance/",
        {"enabled": True, "reason": "BIOS update"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["maintenance"] is True
    assert body["maintenance_reason"] == "BIOS update"
    assert body["maintenance_since"]
    assert body["running_vm_count"] == 0  # the full host shape (vms' serializer)
    event = AuditEvent.objects.get(event_type=EventType.HOST_MAINTENANCE_ENTERED)
    assert event.target_id == str(host.pk)
    assert event.before == {"maintenance": False, "maintenance_reason": ""}
    assert event.after == {"maintenance": True, "maintenance_reason": "BIOS update"}

    # The same request again changes nothing and records nothing.
    again = api.post(
        f"/api/hosts/{host.pk}/maintenance/",
        {"enabled": True, "reason": "BIOS update"},
        format="json",
    )
    assert again.json()["maintenance_since"] == body["maintenance_since"]
    assert AuditEvent.objects.filter(event_type=EventType.HOST_MAINTENANCE_ENTERED).count() == 1

    left = api.post(f"/api/hosts/{host.pk}/maintenance/", {"enabled": False}, format="json")
    assert left.status_code == 200
    assert (left.json()["maintenance"], left.json()["maintenance_reason"]) == (False, "")
    assert left.json()["maintenance_since"] is None
    assert AuditEvent.objects.filter(event_type=EventType.HOST_MAINTENANCE_LEFT).count() == 1
    host.refresh_from_db()
    assert host.maintenance is False


@pytest.mark.parametrize(
    "body,field",
    [
        ({}, "enabled"),
        ({"enabled": "perhaps"}, "enabled"),
        ({"enabled": True, "reason": "x" * 501}, "reason"),
    ],
)
def test_maintenance_bad_input_names_the_field(api, fleet, body, field):
    response = api.post(f"/api/hosts/{fleet['big'].pk}/maintenance/", body, format="json")
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert not Host.objects.get(pk=fleet["big"].pk).maintenance


def test_maintenance_needs_an_administrator(viewer_api, fleet):
    response = viewer_api.post(
        f"/api/hosts/{fleet['big'].pk}/maintenance/", {"enabled": True}, format="json"
    )
    assert response.status_code == 403
    assert not Host.objects.get(pk=fleet["big"].pk).maintenance


def test_precheck_refuses_a_destination_in_maintenance(api, fleet):
    vm = _vm(fleet["src"], "web")
    fleet["big"].maintenance = True
    fleet["big"].maintenance_reason = "disk swap"
    fleet["big"].maintenance_since = timezone.now()
    fleet["big"].save()
    response = api.post(f"/api/vms/{vm.uuid}/migrate/check/", {"remote_host": "big"}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    by_name = {c["name"]: c for c in body["checks"]}
    assert list(by_name) == list(CheckName)
    check = by_name["destination_not_in_maintenance"]
    assert check["status"] == "fail"
    assert "big is in maintenance since" in check["message"]
    assert "(disk swap) and takes no new VMs" in check["message"]
    assert body["ok"] is False
    # Out of maintenance the check passes.
    fleet["big"].maintenance = False
    fleet["big"].save()
    response = api.post(f"/api/vms/{vm.uuid}/migrate/check/", {"remote_host": "big"}, format="json")
    check = {c["name"]: c for c in response.json()["checks"]}["destination_not_in_maintenance"]
    assert check["status"] == "pass"


# --- Destination ranking ---------------------------------------------------------------


def test_destinations_rank_every_other_host_unfit_with_reasons(api, fleet):
    vm = _vm(fleet["src"], "web", memory_gib=4)
    fleet["small"].maintenance = True
    fleet["small"].save()
    response = api.get(f"/api/vms/{vm.uuid}/destinations/")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["vm"], body["vm_name"], body["source"]) == (str(vm.uuid), "web", "src")
    rows = {row["host"]: row for row in body["destinations"]}
    assert set(rows) == {"big", "small", "down", "arm"}  # the source is not offered
    assert all(not row["fit"] for row in rows.values())  # no host's libvirt answers here
    assert rows["small"]["reasons"][0] == "in maintenance: takes no new VMs"
    assert rows["down"]["reasons"][0] == "unreachable: connection refused"
    assert "aarch64" in rows["arm"]["reasons"][0]
    # big: only the CPU comparison could not be made (the VM's host did not answer).
    big = rows["big"]
    assert big["reasons"][0].startswith("CPU compatibility not checked: src")
    assert "did not answer" in big["reasons"][0]
    assert big["memory_free_after_bytes"] == 8 * GIB
    assert any(
        "8,192 MiB free of 16,384 MiB after placing the VM (4,096 MiB)" in r for r in big["reasons"]
    )
    # Among the unfit the score orders: big (12 GiB free) first.
    assert body["destinations"][0]["host"] == "big"
    scores = [row["score"] for row in body["destinations"]]
    assert scores == sorted(scores, reverse=True)


def test_destinations_count_memory_and_migrations_in_flight(api, fleet):
    vm = _vm(fleet["src"], "web", memory_gib=1)
    incoming = _vm(fleet["src"], "moving", memory_gib=3)
    Migration.objects.create(
        vm_uuid=incoming.uuid,
        vm_name=incoming.name,
        source=fleet["src"],
        destination=fleet["big"],
        status=MigrationStatus.QUEUED,
        max_downtime_ms=500,
        timeout_s=600,
    )
    _vm(fleet["big"], "resident")
    body = api.get(f"/api/vms/{vm.uuid}/destinations/").json()
    big = next(row for row in body["destinations"] if row["host"] == "big")
    assert big["memory_free_after_bytes"] == (12 - 3 - 1) * GIB
    assert any("3,072 MiB already migrating there" in r for r in big["reasons"])
    assert "1 migration(s) coming in (0 running, 1 queued)" in big["reasons"]
    assert "1 running VM(s)" in big["reasons"]


def test_destinations_need_an_administrator_and_a_vm(api, viewer_api, fleet):
    vm = _vm(fleet["src"], "web")
    assert viewer_api.get(f"/api/vms/{vm.uuid}/destinations/").status_code == 403
    assert api.get(f"/api/vms/{uuid.uuid4()}/destinations/").status_code == 404


# --- Evacuation ------------------------------------------------------------------------


def test_evacuate_dry_run_lists_what_stays_and_why_and_changes_nothing(api, fleet):
    _vm(fleet["src"], "web", memory_gib=2)
    _vm(fleet["src"], "off", state="shut_off")
    _vm(fleet["src"], "gpu", has_hostdev=True)
    events = AuditEvent.objects.count()
    response = api.post(f"/api/hosts/{fleet['src'].pk}/evacuate/", {"dry_run": True}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["host"], body["dry_run"], body["maintenance"], body["batch"]) == (
        "src",
        True,
        False,
        None,
    )
    # No host's libvirt answers here: the running VM has no fit destination.
    assert body["migrations"] == []
    stays = {row["vm_name"]: row for row in body["unmovable"]}
    assert set(stays) == {"web", "off", "gpu"}
    assert "shut off: stays defined on this host" in stays["off"]["reasons"][0]
    assert "host devices" in stays["gpu"]["reasons"][0]
    web = stays["web"]["reasons"]
    assert len(web) == 4 and all(r.startswith("no fit destination (") for r in web)
    assert any(r.startswith("no fit destination (down: unreachable") for r in web)
    assert AuditEvent.objects.count() == events
    assert not Host.objects.get(pk=fleet["src"].pk).maintenance


def test_evacuate_default_is_a_dry_run(api, fleet):
    response = api.post(f"/api/hosts/{fleet['src'].pk}/evacuate/", {}, format="json")
    assert response.status_code == 200
    assert response.json()["dry_run"] is True


def test_evacuate_for_real_with_nothing_movable_is_400_and_changes_nothing(api, fleet):
    _vm(fleet["src"], "web")  # no host's libvirt answers here: no fit destination
    response = api.post(
        f"/api/hosts/{fleet['src'].pk}/evacuate/", {"dry_run": False}, format="json"
    )
    assert response.status_code == 400
    assert response.json() == {"dry_run": [NOTHING_TO_MOVE]}
    assert not Host.objects.get(pk=fleet["src"].pk).maintenance
    assert not AuditEvent.objects.filter(event_type=EventType.HOST_MAINTENANCE_ENTERED).exists()
    assert not MigrationBatch.objects.exists() and not Migration.objects.exists()


def test_evacuate_bad_input_and_permissions(api, viewer_api, fleet):
    url = f"/api/hosts/{fleet['src'].pk}/evacuate/"
    response = api.post(url, {"dry_run": "maybe"}, format="json")
    assert response.status_code == 400 and list(response.json()) == ["dry_run"]
    for bandwidth in (-1, "fast", 10**7):
        response = api.post(url, {"dry_run": False, "bandwidth_mib_s": bandwidth}, format="json")
        assert response.status_code == 400 and list(response.json()) == ["bandwidth_mib_s"]
    assert not Host.objects.get(pk=fleet["src"].pk).maintenance
    assert viewer_api.post(url, {}, format="json").status_code == 403
    assert api.post("/api/hosts/999999/evacuate/", {}, format="json").status_code == 404


def test_schema_documents_placement(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    paths = schema["paths"]
    assert "get" in paths["/api/vms/{uuid}/destinations/"]
    assert "post" in paths["/api/hosts/{id}/evacuate/"]
    assert "post" in paths["/api/hosts/{id}/maintenance/"]
    placement = schema["components"]["schemas"]["Placement"]["properties"]
    assert {"fit", "score", "reasons", "memory_free_after_bytes"} <= set(placement)
    assert "Higher is better" in placement["score"]["description"]
    evacuation = schema["components"]["schemas"]["Evacuation"]["properties"]
    assert {"migrations", "unmovable", "batch"} <= set(evacuation)


def test_a_batch_item_without_destination_is_placed_or_refused_with_why(api, fleet):
    vm = _vm(fleet["src"], "web")
    response = api.post("/api/migration-batches/", {"items": [{"vm": str(vm.uuid)}]}, format="json")
    # No host's libvirt answers here: no host fits, and the answer says why.
    assert response.status_code == 400, response.json()
    (message,) = response.json()["items"]
    assert message.startswith("No fit destination for web (big: CPU compatibility not checked")
    assert not MigrationBatch.objects.exists() and not Migration.objects.exists()
