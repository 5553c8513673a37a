"""The destination ranking, maintenance and the evacuation plan on the real lab hosts
(libvirtd + QEMU; libvirt's own CPU comparison, the hosts' own memory figures)."""

from __future__ import annotations

import re

import pytest

from audit.events import EventType
from audit.models import AuditEvent
from hosts.models import Host
from lab import layout, machines
from migrations_app.models import Migration, MigrationBatch
from migrations_app.worker.runner import migration_execute
from tests import labtools
from tests.labtools import request_migration

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]

GIB = 2**30


def _maintenance(api, name: str, enabled: bool, reason: str = "") -> dict:
    host = Host.objects.get(name=name)
    response = api.post(
        f"/api/hosts/{host.pk}/maintenance/",
        {"enabled": enabled, "reason": reason},
        format="json",
    )
    assert response.status_code == 200, response.json()
    return response.json()


def _virsh_free_bytes(host: layout.LabHost) -> int:
    output = machines.virsh(host, "freecell").stdout  # libvirt's getFreeMemory, as the refresh
    return int(re.search(r"Total:\s+(\d+) KiB", output)[1]) * 1024


def test_ranking_on_the_lab_hosts(api, linux_vm):
    source = linux_vm.source
    others = sorted(h.name for h in linux_vm.hosts if h.name != source.name)
    resting = others[0]
    _maintenance(api, resting, True, "lab placement test")
    vm = api.get(f"/api/vms/{linux_vm.uuid}/").json()
    vm_bytes = vm["memory_kib"] * 1024

    response = api.get(f"/api/vms/{linux_vm.uuid}/destinations/")
    assert response.status_code == 200, response.json()
    ranking = response.json()["destinations"]
    names = [row["host"] for row in ranking]
    assert sorted(names) == others  # every other host, never the source
    last = ranking[-1]
    assert last["host"] == resting and last["fit"] is False
    assert last["reasons"][0] == "in maintenance: lab placement test: takes no new VMs"
    fit = [row for row in ranking if row["fit"]]
    assert [row["host"] for row in fit] == [n for n in others if n != resting]
    for row in fit:
        # libvirt's comparison on the destination (the pre-check's), not a guess.
        assert any(r.startswith("CPU: ") for r in row["reasons"]), row["reasons"]
        assert "reachable" in row["reasons"]
        record = Host.objects.get(name=row["host"])
        # The host's own figure (libvirt's getFreeMemory at its last refresh) less the VM.
        assert row["memory_free_after_bytes"] == record.memory_free_bytes - vm_bytes
        lab_host = next(h for h in linux_vm.hosts if h.name == row["host"])
        # ... which is what the host says now, give or take what other processes
        # of this machine allocated since the refresh.
        assert abs(record.memory_free_bytes - _virsh_free_bytes(lab_host)) < 2 * GIB
        assert row["score"] > 0
    assert all(f["score"] >= u["score"] for f, u in zip(fit, fit[1:], strict=False))


def test_migration_to_a_host_in_maintenance_fails_its_precheck(api, linux_vm):
    source = linux_vm.source
    destination = linux_vm.other(source)
    _maintenance(api, destination.name, True, "disk swap")
    migration_id = request_migration(api, linux_vm.uuid, remote_host=destination.name)

    assert migration_execute(migration_id=migration_id) == "failed"

    record = Migration.objects.get(pk=migration_id)
    assert record.failure_reason == "precheck"
    assert record.error.startswith(
        f"Pre-checks failed: destination_not_in_maintenance: {destination.name} is in "
        "maintenance since"
    ), record.error
    assert "(disk swap) and takes no new VMs" in record.error
    assert record.samples.count() == 0  # libvirt was never asked to migrate
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {source.name: "running"}

    # Out of maintenance, the same migration's pre-check passes.
    _maintenance(api, destination.name, False)
    check = api.post(
        f"/api/vms/{linux_vm.uuid}/migrate/check/", {"remote_host": destination.name}, format="json"
    ).json()
    by_name = {c["name"]: c for c in check["checks"]}
    assert by_name["destination_not_in_maintenance"]["status"] == "pass"


def test_evacuate_dry_run_plans_every_running_vm_onto_the_other_hosts(api, linux_vm, tiny_vm):
    source = linux_vm.source
    if labtools.running_on(linux_vm.hosts, tiny_vm.uuid) != [source.name]:
        # Both VMs on the host to evacuate (an earlier test may have parted them); the
        # tiny guest's disk is local: copied.
        moved = request_migration(api, tiny_vm.uuid, remote_host=source.name, storage="copy")
        assert migration_execute(migration_id=moved) == "succeeded"
        labtools.normalize(linux_vm.hosts, tiny_vm.uuid)
        for lab_host in Host.objects.all():
            api.post(f"/api/hosts/{lab_host.pk}/refresh/")
    migrations_before = Migration.objects.count()
    others = {h.name for h in linux_vm.hosts if h.name != source.name}
    running_here = {
        layout.LINUX_VM_NAME: linux_vm.uuid,
        layout.TINY_VM_NAME: tiny_vm.uuid,
    }
    host = Host.objects.get(name=source.name)

    response = api.post(f"/api/hosts/{host.pk}/evacuate/", {"dry_run": True}, format="json")

    assert response.status_code == 200, response.json()
    plan = response.json()
    assert plan["dry_run"] is True and plan["batch"] is None
    rows = plan["migrations"]
    assert {row["vm_name"] for row in rows} == set(running_here)
    assert plan["unmovable"] == []
    # Spread over the other hosts, largest memory first.
    assert {row["destination"] for row in rows} == others
    assert [row["vm_name"] for row in rows] == [layout.LINUX_VM_NAME, layout.TINY_VM_NAME]
    assert rows[0]["memory_mib"] > rows[1]["memory_mib"]
    for row in rows:
        assert any(r.startswith("CPU: ") for r in row["reasons"]), row["reasons"]
        assert row["wave"] == 1  # two VMs: within the limits of 2
        # The tiny guest's disk is local to its host: it moves with it.
        assert row["copies_storage"] is (row["vm_name"] == layout.TINY_VM_NAME)
    # A dry run changes nothing.
    assert Migration.objects.count() == migrations_before
    assert not Host.objects.get(pk=host.pk).maintenance
    for uuid in running_here.values():
        assert labtools.running_on(linux_vm.hosts, uuid) == [source.name]


def test_evacuate_for_real_empties_the_host_as_planned(api, linux_vm, tiny_vm, running_workers):
    source = linux_vm.source
    if labtools.running_on(linux_vm.hosts, tiny_vm.uuid) != [source.name]:
        # Both VMs on the host to evacuate (an earlier test may have parted them).
        # Through the workers (running here); its disk is local: copied.
        moved = request_migration(api, tiny_vm.uuid, remote_host=source.name, storage="copy")
        labtools.wait_for(
            lambda: Migration.objects.filter(pk=moved, status="succeeded").exists(),
            timeout=120,
            what=f"migration {moved} of the tiny VM",
        )
        labtools.normalize(linux_vm.hosts, tiny_vm.uuid)
        for lab_host in Host.objects.all():
            api.post(f"/api/hosts/{lab_host.pk}/refresh/")
    host = Host.objects.get(name=source.name)
    planned = api.post(f"/api/hosts/{host.pk}/evacuate/", {"dry_run": True}, format="json")
    plan = {row["vm_name"]: row["destination"] for row in planned.json()["migrations"]}
    copies = {row["vm_name"]: row["copies_storage"] for row in planned.json()["migrations"]}
    assert copies == {layout.LINUX_VM_NAME: False, layout.TINY_VM_NAME: True}
    assert set(plan) == {layout.LINUX_VM_NAME, layout.TINY_VM_NAME}

    response = api.post(
        f"/api/hosts/{host.pk}/evacuate/",
        {"dry_run": False, "reason": "lab evacuation"},
        format="json",
    )

    assert response.status_code == 202, response.json()
    body = response.json()
    assert response["Location"] == f"/api/migration-batches/{body['batch']}/"
    assert body["maintenance"] is True
    host.refresh_from_db()
    assert (host.maintenance, host.maintenance_reason) == (True, "lab evacuation")
    assert AuditEvent.objects.filter(
        event_type=EventType.HOST_MAINTENANCE_ENTERED, target_id=str(host.pk)
    ).exists()
    batch = labtools.wait_for(
        lambda: MigrationBatch.objects.filter(pk=body["batch"], finished_at__isnull=False).first(),
        timeout=300,
        what=f"evacuation batch {body['batch']} to finish",
        interval=0.5,
    )
    outcome = [(m.vm_name, m.status, m.error) for m in batch.children.all()]
    assert (batch.kind, batch.host_id, batch.status) == ("evacuation", host.pk, "succeeded"), (
        outcome
    )
    children = {m.vm_name: m for m in batch.children.all()}
    assert {name: m.destination.name for name, m in children.items()} == plan
    assert all(m.status == "succeeded" for m in children.values())
    assert children[layout.TINY_VM_NAME].storage == "copy"
    assert children[layout.LINUX_VM_NAME].storage == "shared"
    # Each VM runs where the plan said (virsh), nothing runs on the evacuated host.
    for name, uuid in ((layout.LINUX_VM_NAME, linux_vm.uuid), (layout.TINY_VM_NAME, tiny_vm.uuid)):
        assert labtools.running_on(linux_vm.hosts, uuid) == [plan[name]]
    assert machines.virsh(source, "list", "--name").stdout.split() == []


def test_a_batch_item_without_destination_goes_to_the_best_fit_host(api, linux_vm, running_workers):
    source = linux_vm.source
    resting, free = sorted(h.name for h in linux_vm.hosts if h.name != source.name)
    _maintenance(api, resting, True, "not this one")
    response = api.post(
        "/api/migration-batches/", {"items": [{"vm": linux_vm.uuid}]}, format="json"
    )
    assert response.status_code == 202, response.json()
    batch = labtools.wait_for(
        lambda: MigrationBatch.objects.filter(
            pk=response.json()["id"], finished_at__isnull=False
        ).first(),
        timeout=240,
        what="the batch to finish",
        interval=0.5,
    )
    (child,) = batch.children.all()
    assert (child.destination.name, child.status) == (free, "succeeded"), child.error
    assert labtools.running_on(linux_vm.hosts, linux_vm.uuid) == [free]
