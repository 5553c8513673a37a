"""The out-of-band matrix (issue #20, item 4): what guests, people and other tools do to a
VM around its migration, on the real lab hosts.

Each case ends as the fault matrix does: the VM runs (or is off) where the record says and
nowhere else, its definition is kept where it still existed, the record is final with
exactly one terminal audit event, the inventory follows, and nothing the portal did
overrode what a person or the guest chose. `tests/test_outside_actions_lab.py` has
`virsh destroy` mid-migration.
"""

from __future__ import annotations

import contextlib
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from lab import domains, layout, machines
from migrations_app.domain.lifecycle import FailureReason
from migrations_app.models import Migration
from migrations_app.scheduling.schedule import migrations_schedule_run
from migrations_app.worker.reconciler import migrations_reconcile
from tests import labtools
from tests.labtools import (
    events_of,
    lift_bandwidth_limit,
    request_migration,
    run_in_thread,
    wait_until_migrating,
)
from vms.models import VM

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]

TERMINAL_EVENTS = {"migration.succeeded", "migration.failed", "migration.cancelled"}
SLOW = 8  # MiB/s: the filled guest dirties as much, so the migration runs until lifted


def _ending(placement, migration_id: int, status: str, truth: dict[str, str]) -> Migration:
    """The common ending: final `status`, the VM exactly where `truth` says (host name ->
    virsh state), one terminal audit event, and the inventory showing the same."""
    record = Migration.objects.get(pk=migration_id)
    assert record.status == status, (record.status, record.error)
    seen = labtools.where(placement.hosts, placement.uuid)
    assert seen == truth, (seen, record.error)
    terminal = [e for e in events_of(migration_id) if e in TERMINAL_EVENTS]
    assert terminal == [f"migration.{status}"], events_of(migration_id)
    rows = {
        row.host.name: row.state
        for row in VM.objects.filter(uuid=placement.uuid, gone_at__isnull=True)
    }
    assert rows == {host: state.replace(" ", "_") for host, state in truth.items()}, rows
    return record


def _run(migration_id: int, timeout: float = 150) -> None:
    worker = run_in_thread(migration_id)
    worker.join(timeout)
    assert not worker.is_alive(), f"migration {migration_id} did not end within {timeout} s"


def _started_slow(api, placement, destination) -> tuple[int, object]:
    migration_id = request_migration(
        api, placement.uuid, remote_host=destination.name, bandwidth_mib_s=SLOW
    )
    worker = run_in_thread(migration_id)
    wait_until_migrating(migration_id)
    return migration_id, worker


@contextlib.contextmanager
def definition_restored(config: layout.LabConfig, host: layout.LabHost, uuid: str):
    """Keep the VM's definition to put it back on `host` after a test that removes it;
    started again there if it runs nowhere (the next test needs it as it was)."""
    xml = machines.virsh(host, "dumpxml", "--inactive", uuid).stdout
    try:
        yield
    finally:
        states = labtools.where([host], uuid)
        if not states or not labtools.persistent(host, uuid):
            domains._define_xml(config, host, xml)
        if labtools.domstate(host, uuid) != "running":
            machines.virsh(host, "start", uuid)


def test_the_guest_powers_itself_off_mid_migration(api, linux_vm):
    """SysRq O in the source copy while the memory is copied: the guest chose to be off."""
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id, worker = _started_slow(api, linux_vm, destination)
    machines.guest_power_off(source, linux_vm.uuid)
    worker.join(120)
    assert not worker.is_alive(), "the worker must settle a VM its guest turned off"

    record = _ending(linux_vm, migration_id, "failed", {source.name: "shut off"})
    assert labtools.persistent(source, linux_vm.uuid)
    assert record.failure_reason == FailureReason.GUEST_SHUTDOWN, record.error
    assert "by its guest" in record.error and "stays off" in record.error, record.error
    assert "restarted" not in record.error, record.error
    row = VM.objects.get(uuid=linux_vm.uuid, host__name=source.name)
    assert row.state_reason == "shutdown"
    print(record.failure_reason, record.error)


def test_the_guest_reboots_mid_migration(api, linux_vm, lab_config):
    """SysRq B in the source copy: a reboot keeps the QEMU process, so the migration goes
    on and the rebooted guest arrives; it runs on the destination only."""
    console = layout.console_log_path(lab_config)
    booted = "LAB-GUEST userspace"  # the guest's /init says so at every boot
    before = console.read_text(errors="replace").count(booted)
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id, worker = _started_slow(api, linux_vm, destination)
    machines.guest_reboot(source, linux_vm.uuid)
    labtools.wait_for(
        lambda: console.read_text(errors="replace").count(booted) > before,
        timeout=20,
        what="the guest to boot again",
    )
    time.sleep(2)  # the migration goes on through the reset
    lift_bandwidth_limit(api, migration_id)
    worker.join(120)
    assert not worker.is_alive()

    # Without delete_source the source keeps its definition, shut off (reason migrated).
    truth = {destination.name: "running", source.name: "shut off"}
    _ending(linux_vm, migration_id, "succeeded", truth)
    assert labtools.persistent(destination, linux_vm.uuid)


def _migrated_away_outside(source, destination, uuid: str) -> None:
    machines.virsh(
        source,
        "migrate",
        "--live",
        "--persistent",
        "--undefinesource",
        uuid,
        destination.libvirt_uri,
        timeout=180,
    )


def _failed_because_moved(record: Migration, source, destination) -> None:
    assert record.failure_reason == FailureReason.PRECHECK, record.error
    assert f"not on {source.name} any more" in record.error, record.error
    assert f"runs on {destination.name}" in record.error, record.error
    assert record.started_at is None or record.phase == "checks_failed", record.phase


def test_migrated_away_with_virsh_while_queued(api, linux_vm):
    """`virsh migrate` moves the VM while the portal's migration waits in the queue: the
    worker finds it gone from the source, touches nothing and says where it is now."""
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id = request_migration(api, linux_vm.uuid, remote_host=destination.name)
    assert Migration.objects.get(pk=migration_id).status == "queued"
    _migrated_away_outside(source, destination, linux_vm.uuid)
    _run(migration_id)

    record = _ending(linux_vm, migration_id, "failed", {destination.name: "running"})
    _failed_because_moved(record, source, destination)
    assert labtools.persistent(destination, linux_vm.uuid)


def test_migrated_away_with_virsh_while_scheduled(api, linux_vm):
    """The same while the migration is scheduled for later; then it becomes due."""
    source = linux_vm.source
    destination = linux_vm.other(source)
    not_before = timezone.now() + timedelta(hours=1)
    migration_id = request_migration(
        api, linux_vm.uuid, remote_host=destination.name, not_before=not_before.isoformat()
    )
    assert Migration.objects.get(pk=migration_id).status == "scheduled"
    _migrated_away_outside(source, destination, linux_vm.uuid)
    assert migrations_schedule_run(now=not_before + timedelta(seconds=1))["queued"] == [
        migration_id
    ]
    _run(migration_id)

    record = _ending(linux_vm, migration_id, "failed", {destination.name: "running"})
    _failed_because_moved(record, source, destination)
    assert labtools.persistent(destination, linux_vm.uuid)


def test_undefined_outside_while_queued_keeps_running_transient(
    api, linux_vm, lab_config, lab_registered
):
    """`virsh undefine` of the running VM while its migration is queued: a person removed
    its definition. The portal does not migrate it (that would define it again on the
    destination); it keeps running, transient, on the source. The record keeps what the
    portal knew when it was requested, so an inventory sync in between changes nothing."""
    source = linux_vm.source
    destination = linux_vm.other(source)
    with definition_restored(lab_config, source, linux_vm.uuid):
        migration_id = request_migration(api, linux_vm.uuid, remote_host=destination.name)
        assert Migration.objects.get(pk=migration_id).source_was_persistent is True
        machines.virsh(source, "undefine", linux_vm.uuid)
        refreshed = api.post(f"/api/hosts/{lab_registered[source.name].pk}/refresh/")
        assert refreshed.status_code == 200, refreshed.json()
        assert not VM.objects.get(uuid=linux_vm.uuid, host__name=source.name).persistent
        _run(migration_id)

        record = _ending(linux_vm, migration_id, "failed", {source.name: "running"})
        assert not labtools.persistent(source, linux_vm.uuid)
        assert not VM.objects.get(uuid=linux_vm.uuid, host__name=source.name).persistent
        assert record.failure_reason == FailureReason.PRECHECK, record.error
        assert "transient" in record.error and "definition" in record.error, record.error


def test_destroyed_and_undefined_outside_while_queued(api, linux_vm, lab_config):
    """`virsh destroy` + `virsh undefine` while queued: the VM is gone; the record says so
    and the inventory drops it; nothing is created anywhere."""
    source = linux_vm.source
    destination = linux_vm.other(source)
    with definition_restored(lab_config, source, linux_vm.uuid):
        migration_id = request_migration(api, linux_vm.uuid, remote_host=destination.name)
        machines.virsh(source, "destroy", linux_vm.uuid)
        machines.virsh(source, "undefine", linux_vm.uuid)
        _run(migration_id)

        record = _ending(linux_vm, migration_id, "failed", {})
        assert record.failure_reason == FailureReason.PRECHECK, record.error
        assert f"not on {source.name} any more" in record.error, record.error


def _restart_mid_migration(api, placement, config, side: str) -> tuple[Migration, object]:
    source = placement.source
    destination = placement.other(source)
    migration_id, worker = _started_slow(api, placement, destination)
    started = time.monotonic()
    machines.restart_libvirtd(source if side == "source" else destination, config)
    print(f"libvirtd of the {side} restarted in {time.monotonic() - started:.1f} s")
    worker.join(150)
    assert not worker.is_alive(), f"the worker must settle after {side}'s libvirtd restart"
    print(f"the worker ended {time.monotonic() - started:.1f} s after the restart began")
    record = Migration.objects.get(pk=migration_id)
    print(f"settled by the worker: {record.status} ({record.failure_reason}): {record.error}")
    if record.status == "needs_attention":
        # It settled while the restarted libvirtd did not answer yet: nothing was touched,
        # and the reconciler settles it once both hosts answer (its next pass).
        assert labtools.where(placement.hosts, placement.uuid)[source.name] == "running"
        assert "nothing was changed" in record.error, record.error
        assert migrations_reconcile() == [migration_id]
        record.refresh_from_db()
    return record, (source, destination)


def test_libvirtd_restarted_on_the_source_mid_migration(api, linux_vm, lab_config):
    """A clean restart of the source's libvirtd (SIGTERM, start): the job ends with it and
    libvirt resumes the VM on the source when it starts again; the incoming copy goes."""
    record, (source, destination) = _restart_mid_migration(api, linux_vm, lab_config, "source")
    _ending(linux_vm, record.pk, "failed", {source.name: "running"})
    assert labtools.persistent(source, linux_vm.uuid)
    assert "restarted it" not in record.error, record.error


def test_libvirtd_restarted_on_the_destination_mid_migration(api, linux_vm, lab_config):
    """The destination's libvirtd restarted: it drops the incoming copy when it starts
    again; the VM keeps running on the source."""
    record, (source, destination) = _restart_mid_migration(api, linux_vm, lab_config, "destination")
    _ending(linux_vm, record.pk, "failed", {source.name: "running"})
    assert labtools.persistent(source, linux_vm.uuid)
    assert "restarted it" not in record.error, record.error
    print(record.failure_reason, record.error)
    if record.needs_cleanup:  # settled while the destination did not answer yet
        migrations_reconcile()  # it answers now: the reconciler looks, finds nothing left
        record.refresh_from_db()
        assert not record.needs_cleanup
        assert "migration.cleaned_up" in events_of(record.pk)
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {source.name: "running"}


def test_the_destination_qemu_killed_mid_migration(api, linux_vm, lab_config):
    """SIGKILL of the incoming QEMU, as a crash of the destination would end it: the VM
    keeps running on the source, and the record says the destination's copy died."""
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id, worker = _started_slow(api, linux_vm, destination)
    machines.kill_qemu(lab_config, destination, linux_vm.uuid)
    worker.join(120)
    assert not worker.is_alive()

    record = _ending(linux_vm, migration_id, "failed", {source.name: "running"})
    assert labtools.persistent(source, linux_vm.uuid)
    assert record.failure_reason == FailureReason.LIBVIRT, record.error
    assert "restarted it" not in record.error and "runs on" in record.error, record.error
    print(record.failure_reason, record.error)
