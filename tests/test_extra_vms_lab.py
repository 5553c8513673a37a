"""`manage.py lab up --vms N` (LabConfig.extra_vms): N small diskless guests on every
lab host, running there, that migrate live between hosts. Added to the running test
lab for this test and removed after, so the default lab stays as it is."""

from __future__ import annotations

import dataclasses

import pytest

from hosts.models import Host
from lab import layout, lifecycle, machines
from migrations_app.worker.runner import migration_execute
from tests import labtools
from tests.labtools import request_migration, run_in_thread

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]

EXTRA = 2


@pytest.fixture
def extra_lab(lab_hosts, lab_config):
    config = dataclasses.replace(lab_config, extra_vms=EXTRA)
    labtools.remove_extra_guests(config)
    hosts = lifecycle.up(config, hosts=len(lab_hosts))
    yield config, hosts
    labtools.remove_extra_guests(config)


def test_every_host_gets_its_extra_guests_and_they_migrate(api, extra_lab, lab_registered):
    config, hosts = extra_lab
    assert len(hosts) >= 2
    for host in hosts:
        running = machines.virsh(host, "list", "--name", "--state-running").stdout.split()
        extras = sorted(n for n in running if "-extra-" in n)
        assert extras == [layout.extra_vm_name(host, k) for k in range(1, EXTRA + 1)], running
        memory = machines.virsh(host, "dominfo", extras[0]).stdout
        assert f"{layout.EXTRA_VM_MEMORY_MIB * 1024} KiB" in memory
    # A second `up` leaves what runs alone.
    assert [h.name for h in lifecycle.up(config, hosts=len(hosts))] == [h.name for h in hosts]
    for host in Host.objects.all():
        assert api.post(f"/api/hosts/{host.pk}/refresh/").status_code == 200

    # One extra guest of every host moves to the next host, all at once.
    moves = []
    for i, host in enumerate(hosts):
        destination = hosts[(i + 1) % len(hosts)]
        uuid = machines.virsh(host, "domuuid", layout.extra_vm_name(host, 1)).stdout.strip()
        migration_id = request_migration(
            api, uuid, remote_host=destination.name, delete_source=True
        )
        moves.append((migration_id, uuid, destination))
    threads = [run_in_thread(migration_id) for migration_id, _, _ in moves[1:]]
    migration_execute(migration_id=moves[0][0])
    for thread in threads:
        thread.join(120)
    from migrations_app.models import Migration

    for migration_id, uuid, destination in moves:
        record = Migration.objects.get(pk=migration_id)
        assert record.status == "succeeded", record.error
        assert labtools.where(hosts, uuid) == {destination.name: "running"}
