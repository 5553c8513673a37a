"""What people, guests and tools do to a VM during its migration is kept (issue #20).

Each case ends like the fault matrix: the VM is where the record says, in the state that
was chosen for it (turned off stays off), its definition is kept, the record is final
with one terminal audit event, and nothing the portal did overrode the choice.
"""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from lab import machines
from migrations_app.domain.lifecycle import FailureReason
from migrations_app.models import Migration
from tests import labtools
from tests.labtools import events_of, request_migration, run_in_thread, wait_until_migrating
from vms.models import VM

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]

TERMINAL_EVENTS = {"migration.succeeded", "migration.failed", "migration.cancelled"}


def _ended_outside(placement, migration_id: int, source, state: str) -> Migration:
    record = Migration.objects.get(pk=migration_id)
    truth = labtools.where(placement.hosts, placement.uuid)
    assert truth == {source.name: state}, (truth, record.error)  # no copy left elsewhere
    assert labtools.persistent(source, placement.uuid), truth
    terminal = [e for e in events_of(migration_id) if e in TERMINAL_EVENTS]
    assert terminal == [f"migration.{record.status}"], events_of(migration_id)
    return record


def test_a_vm_destroyed_mid_migration_stays_off(api, linux_vm):
    """`virsh destroy` of the source copy while the memory is copied: a person turned
    it off. The portal must not start it again (it did before: 'restarted it')."""
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id = request_migration(
        api, linux_vm.uuid, remote_host=destination.name, bandwidth_mib_s=8
    )
    worker = run_in_thread(migration_id)
    wait_until_migrating(migration_id)
    machines.virsh(source, "destroy", linux_vm.uuid)
    worker.join(120)
    assert not worker.is_alive(), "the worker must settle a destroyed VM"

    record = _ended_outside(linux_vm, migration_id, source, "shut off")
    assert record.status == "failed", record.error
    assert record.failure_reason == FailureReason.STOPPED_OUTSIDE, record.error
    assert "stays off" in record.error and "restarted" not in record.error, record.error
    failed = AuditEvent.objects.get(target_id=str(migration_id), event_type="migration.failed")
    assert failed.detail["failure_reason"] == "stopped_outside"
    # The inventory says so too, with libvirt's reason.
    row = VM.objects.get(uuid=linux_vm.uuid, host__name=source.name)
    assert (row.state, row.state_reason) == ("shut_off", "destroyed")


def _paused_mid_migration(migration_id: int, source, uuid: str):
    """Run the migration in a worker thread, `virsh suspend` the source copy once it
    migrates, and wait until the monitor has recorded the pause as someone's."""
    worker = run_in_thread(migration_id)
    wait_until_migrating(migration_id)
    machines.virsh(source, "suspend", uuid)
    labtools.wait_for(
        lambda: Migration.objects.filter(pk=migration_id, paused_outside_at__isnull=False).exists(),
        timeout=30,
        what="the monitor to see the pause as someone's",
        interval=0.2,
    )
    return worker


def test_a_vm_paused_mid_migration_arrives_paused(api, linux_vm):
    """`virsh suspend` of the source copy while the memory is copied: a person paused it.
    libvirt resumes a VM on arrival; the portal pauses it again there."""
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id = request_migration(
        api, linux_vm.uuid, remote_host=destination.name, bandwidth_mib_s=4, delete_source=True
    )
    worker = _paused_mid_migration(migration_id, source, linux_vm.uuid)
    labtools.lift_bandwidth_limit(api, migration_id)
    worker.join(120)
    assert not worker.is_alive()

    record = Migration.objects.get(pk=migration_id)
    assert record.status == "succeeded", record.error
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {destination.name: "paused"}
    assert "paused again" in record.error, record.error
    events = events_of(migration_id)
    assert "migration.paused_outside" in events and events[-1] == "migration.succeeded", events
    row = VM.objects.get(uuid=linux_vm.uuid, host__name=destination.name)
    assert row.state == "paused"


def test_a_vm_paused_mid_migration_that_is_cancelled_stays_paused(api, linux_vm):
    """The same pause, then the migration is cancelled: libvirt resumes the source when
    the job ends; the portal pauses it again, where it stays."""
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id = request_migration(
        api, linux_vm.uuid, remote_host=destination.name, bandwidth_mib_s=4
    )
    worker = _paused_mid_migration(migration_id, source, linux_vm.uuid)
    cancelled = api.post(f"/api/migrations/{migration_id}/cancel/")
    assert cancelled.status_code in (200, 202), cancelled.json()
    worker.join(120)
    assert not worker.is_alive()

    record = _ended_outside(linux_vm, migration_id, source, "paused")
    assert record.status == "cancelled", record.error
    assert "paused" in record.error, record.error
