"""Real live migrations between the lab hosts (libvirtd + QEMU), checked with virsh.

The engine runs in the test process here (`migration_execute`), exactly as a worker
runs it; test_worker_lab.py drives it through real django-q2 worker processes.
"""

from __future__ import annotations

import statistics
import time
from datetime import timedelta

import pytest
from django.conf import settings

from audit.models import AuditEvent
from hosts.models import Host
from lab import layout, machines
from migrations_app.models import Migration, MigrationSample
from migrations_app.scheduling.dispatch import migrations_dispatch_waiting
from migrations_app.worker.reconciler import migrations_reconcile
from migrations_app.worker.runner import migration_execute
from tests import labtools
from tests.labtools import events_of, request_migration, run_in_thread, wait_until_migrating

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]

MiB = 2**20


def sync(api) -> None:
    for host in Host.objects.all():
        api.post(f"/api/hosts/{host.pk}/refresh/")


def domjobinfo_completed(host: layout.LabHost, uuid: str) -> dict[str, str]:
    output = machines.virsh(host, "domjobinfo", uuid, "--completed", "--keep-completed").stdout
    return {
        k.strip(): v.strip()
        for k, _, v in (line.partition(":") for line in output.splitlines())
        if v
    }


def test_live_migration_with_shared_storage(api, linux_vm):
    source = linux_vm.source
    destination = linux_vm.other(source)
    # Capped so that it lasts a few sample intervals even on a quiet machine (uncapped
    # it can end within one, leaving no sample between 0 and 100 %).
    migration_id = request_migration(
        api, linux_vm.uuid, remote_host=destination.name, bandwidth_mib_s=64
    )

    assert migration_execute(migration_id=migration_id) == "succeeded"

    assert labtools.domstate(destination, linux_vm.uuid) == "running"
    # delete_source is false: the source keeps an inactive definition.
    assert labtools.domstate(source, linux_vm.uuid) == "shut off"
    record = api.get(f"/api/migrations/{migration_id}/").json()
    assert record["status"] == "succeeded"
    assert record["percent"] == 100
    # Every check passed, but the TLS one: not needed between tcp hosts without the option.
    statuses = {c["name"]: c["status"] for c in record["checks"]}
    assert statuses.pop("tls_certificates") == "skipped"
    assert set(statuses.values()) == {"pass"}, record["checks"]
    # libvirt's completed statistics, exactly as virsh reads them on the destination.
    stats = record["completed_stats"]
    virsh_stats = domjobinfo_completed(destination, linux_vm.uuid)
    assert (
        record["downtime_ms"] == stats["downtime"] == int(virsh_stats["Total downtime"].split()[0])
    )
    assert (
        record["total_time_ms"]
        == stats["time_elapsed"]
        == int(virsh_stats["Time elapsed"].split()[0])
    )
    assert record["setup_time_ms"] == stats["setup_time"]
    assert record["transferred_bytes"] == stats["data_processed"]
    # The guest filled its RAM with random data: at least that much crossed.
    assert record["transferred_bytes"] > 100 * MiB

    samples = api.get(f"/api/migrations/{migration_id}/samples/").json()
    percents = [s["percent"] for s in samples]
    assert len(percents) >= 3, percents
    assert percents == sorted(percents), "progress went backwards"
    assert percents[-1] == 100 and percents[0] < 100
    vm = api.get(f"/api/vms/{linux_vm.uuid}/").json()
    assert vm["host"] == destination.name
    assert vm["state"] == "running"
    assert {"host": source.name, "state": "shut_off", "persistent": True} in vm["other_definitions"]
    assert events_of(migration_id) == [
        "migration.requested",
        "migration.checking",
        "migration.started",
        "migration.completing",
        "migration.succeeded",
    ]


def test_delete_source_removes_the_source_definition(api, linux_vm):
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id = request_migration(
        api, linux_vm.uuid, remote_host=destination.address, delete_source=True
    )
    assert migration_execute(migration_id=migration_id) == "succeeded"
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {destination.name: "running"}
    assert api.get(f"/api/vms/{linux_vm.uuid}/").json()["other_definitions"] == [
        {"host": source.name, "state": "gone", "persistent": True}
    ]


def test_tunnelled_migration(api, linux_vm):
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id = request_migration(
        api, linux_vm.uuid, remote_host=destination.name, transport="tunnelled", delete_source=True
    )
    assert migration_execute(migration_id=migration_id) == "succeeded"
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {destination.name: "running"}
    assert Migration.objects.get(pk=migration_id).completed_stats["data_processed"] > 100 * MiB


def test_new_name_renames_at_the_destination_and_back(api, linux_vm):
    source = linux_vm.source
    destination = linux_vm.other(source)
    renamed = "lab-vm-renamed"
    first = request_migration(
        api, linux_vm.uuid, remote_host=destination.name, new_name=renamed, delete_source=True
    )
    assert migration_execute(migration_id=first) == "succeeded"
    assert labtools.domain_name(destination, linux_vm.uuid) == renamed
    assert api.get(f"/api/vms/{linux_vm.uuid}/").json()["name"] == renamed
    back = request_migration(
        api,
        linux_vm.uuid,
        remote_host=source.name,
        new_name=layout.LINUX_VM_NAME,
        delete_source=True,
    )
    assert migration_execute(migration_id=back) == "succeeded"
    assert labtools.domain_name(source, linux_vm.uuid) == layout.LINUX_VM_NAME
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {source.name: "running"}


def test_bandwidth_limit_caps_throughput(api, linux_vm):
    source = linux_vm.source
    destination = linux_vm.other(source)
    limit = 40
    migration_id = request_migration(
        api, linux_vm.uuid, remote_host=destination.name, bandwidth_mib_s=limit, delete_source=True
    )
    assert migration_execute(migration_id=migration_id) == "succeeded"
    record = Migration.objects.get(pk=migration_id)
    rates = [
        s.throughput_bytes_s for s in record.samples.exclude(phase="done") if s.throughput_bytes_s
    ]
    assert rates, "no throughput samples"
    taken = [s.taken_at for s in record.samples.exclude(phase="done").order_by("id")]
    gaps = [(b - a).total_seconds() for a, b in zip(taken, taken[1:], strict=False)]
    assert len(gaps) > 10 and statistics.median(gaps) <= 0.25, gaps  # >= 4 samples/s
    assert max(rates) <= limit * MiB * 1.25, [r / MiB for r in rates]
    # Sending what it sent at that cap takes at least this long.
    assert record.total_time_ms >= 0.8 * 1000 * record.transferred_bytes / (limit * MiB)
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {destination.name: "running"}


def test_copy_storage_migrates_local_disks(api, tiny_vm, lab_config):
    source = tiny_vm.source
    destination = tiny_vm.other(source)
    # The destination's local storage has no copy before (an earlier run may have
    # left one; no domain there uses it).
    copied = layout.private_images_dir(lab_config, destination) / layout.TINY_VM_DISK
    copied.unlink(missing_ok=True)
    machines.virsh(destination, "pool-refresh", layout.PRIVATE_POOL)
    # On shared storage mode the local disk is missing at the destination: refused.
    check = api.post(
        f"/api/vms/{tiny_vm.uuid}/migrate/check/", {"remote_host": destination.name}, format="json"
    ).json()
    disks = next(c for c in check["checks"] if c["name"] == "disks_available")
    assert check["ok"] is False
    assert disks["status"] == "fail"
    assert "use storage 'copy'" in disks["message"]

    source_capacity = labtools.disk_capacity(source, tiny_vm.uuid, "vda")

    migration_id = request_migration(
        api, tiny_vm.uuid, remote_host=destination.name, storage="copy", delete_source=True
    )
    assert migration_execute(migration_id=migration_id) == "succeeded"
    assert labtools.where(tiny_vm.hosts, tiny_vm.uuid) == {destination.name: "running"}
    assert copied.exists()
    assert labtools.disk_capacity(destination, tiny_vm.uuid, "vda") == source_capacity


def test_cancel_during_a_bandwidth_limited_migration(api, linux_vm):
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id = request_migration(
        api, linux_vm.uuid, remote_host=destination.name, bandwidth_mib_s=8
    )
    worker = run_in_thread(migration_id)
    wait_until_migrating(migration_id)
    response = api.post(f"/api/migrations/{migration_id}/cancel/")
    assert response.status_code == 200
    worker.join(60)
    assert not worker.is_alive()
    record = Migration.objects.get(pk=migration_id)
    assert record.status == "cancelled", record.error
    assert "cancel" in record.error.lower()
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {source.name: "running"}
    assert events_of(migration_id)[-2:] == ["migration.cancel_requested", "migration.cancelled"]


def test_tune_a_running_migration(api, linux_vm):
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id = request_migration(
        api, linux_vm.uuid, remote_host=destination.name, bandwidth_mib_s=8, delete_source=True
    )
    worker = run_in_thread(migration_id)
    wait_until_migrating(migration_id)
    response = api.post(
        f"/api/migrations/{migration_id}/tune/",
        {"bandwidth_mib_s": 0, "max_downtime_ms": 800},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["max_downtime_ms"] == 800
    worker.join(120)
    record = Migration.objects.get(pk=migration_id)
    assert record.status == "succeeded", record.error
    tuned = AuditEvent.objects.get(event_type="migration.tuned", target_id=str(migration_id))
    assert tuned.before == {"max_downtime_ms": 500, "bandwidth_mib_s": 8}
    assert tuned.after == {"max_downtime_ms": 800, "bandwidth_mib_s": 0}


def test_destination_libvirtd_killed_mid_migration(api, linux_vm, lab_config):
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id = request_migration(
        api, linux_vm.uuid, remote_host=destination.name, bandwidth_mib_s=8
    )
    worker = run_in_thread(migration_id)
    wait_until_migrating(migration_id)
    machines.kill_libvirtd(destination)
    try:
        worker.join(120)
        assert not worker.is_alive()
        record = Migration.objects.get(pk=migration_id)
        assert record.status == "failed"
        assert record.error
        # Killed, not frozen: libvirt says why at once, and the settlement could not
        # reach the destination.
        assert record.failure_reason in ("unreachable", "libvirt"), record.error
        assert labtools.domstate(source, linux_vm.uuid) == "running"
    finally:
        machines.start_libvirtd(destination, lab_config)
    # Once the destination answers again nothing of the VM is left there.
    migrations_reconcile()
    labtools.wait_for(
        lambda: labtools.domstate(destination, linux_vm.uuid) is None,
        timeout=30,
        what="no leftover on the destination",
    )
    assert Migration.objects.get(pk=migration_id).needs_cleanup is False
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {source.name: "running"}


PROBE_XML = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='GiB'>4096</memory>
  <vcpu>1</vcpu>
  <cpu mode='host-passthrough'/>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <source file='/nonexistent/{name}.qcow2'/><target dev='vda' bus='virtio'/>
    </disk>
    <hostdev mode='subsystem' type='pci' managed='yes'>
      <source><address domain='0x0000' bus='0x00' slot='0x1f' function='0x0'/></source>
    </hostdev>
  </devices>
</domain>"""


def test_every_precheck_fails_with_its_message(api, linux_vm, lab_registered, tmp_path):
    source = linux_vm.source
    destination = linux_vm.other(source)

    def check(uuid: str, **payload) -> dict[str, dict]:
        response = api.post(f"/api/vms/{uuid}/migrate/check/", payload, format="json")
        assert response.status_code == 200, response.json()
        assert response.json()["ok"] is False
        return {c["name"]: c for c in response.json()["checks"]}

    def failed(checks: dict, name: str, fragment: str) -> None:
        assert checks[name]["status"] == "fail", checks[name]
        assert fragment in checks[name]["message"], checks[name]

    # A probe domain with everything a migration cannot take, defined on the source.
    xml = tmp_path / "probe.xml"
    xml.write_text(PROBE_XML.format(name="probe-vm"))
    machines.virsh(source, "define", str(xml))
    same_name = tmp_path / "same.xml"
    same_name.write_text(
        "<domain type='qemu'><name>probe-vm</name><memory unit='MiB'>32</memory>"
        "<os><type arch='x86_64'>hvm</type></os></domain>"
    )
    machines.virsh(destination, "define", str(same_name))
    try:
        sync(api)
        probe_uuid = machines.virsh(source, "domuuid", "probe-vm").stdout.strip()
        # Shut off and `live` not given: checked as an offline migration, which fits its
        # state and starts nothing on the destination (memory is not needed there).
        checks = check(probe_uuid, remote_host=destination.name)
        passed = {name for name, c in checks.items() if c["status"] == "pass"}
        assert {"vm_state_fits_mode", "enough_memory"} <= passed, checks
        # host-passthrough between the lab's identical CPUs: libvirt accepts it.
        assert "host-passthrough" in checks["cpu_compatible"]["message"], checks
        assert "cpu_compatible" in passed, checks["cpu_compatible"]
        failed(checks, "no_host_devices", "PCI/USB host devices")
        failed(checks, "disks_available", "/nonexistent/probe-vm.qcow2")
        failed(checks, "no_name_or_uuid_clash", "already has another domain named 'probe-vm'")
        # Live is refused for a shut-off VM before any check runs.
        live = api.post(
            f"/api/vms/{probe_uuid}/migrate/check/",
            {"remote_host": destination.name, "live": True},
            format="json",
        )
        assert live.status_code == 400 and "live" in live.json(), live.json()
    finally:
        machines.virsh(source, "undefine", "probe-vm", check=False)
        machines.virsh(destination, "undefine", "probe-vm", check=False)

    checks = check(linux_vm.uuid, remote_host=source.name)
    failed(checks, "destination_is_not_source", "is the host the VM runs on now")

    # A registered destination that does not answer (the check registers nothing: the
    # host is registered here, with tcp so that the failure is libvirt's connection).
    nowhere = {"name": "127.0.0.99", "address": "127.0.0.99", "transport": "tcp"}
    assert api.post("/api/hosts/", nowhere, format="json").status_code == 201
    checks = check(linux_vm.uuid, remote_host="127.0.0.99")
    failed(checks, "destination_reachable", "127.0.0.99 is not reachable within 5 s")
    assert checks["cpu_compatible"]["status"] == "skipped"

    Host.objects.filter(name=source.name).update(arch="aarch64")
    checks = check(linux_vm.uuid, remote_host=destination.name)
    failed(checks, "same_hypervisor_and_arch", f"{source.name} is QEMU on aarch64")
    Host.objects.filter(name=source.name).update(arch="x86_64")

    queued = request_migration(api, linux_vm.uuid, remote_host=destination.name)
    checks = check(linux_vm.uuid, remote_host=destination.name)
    failed(checks, "no_other_migration", f"migration {queued} of this VM is already queued")
    conflict = api.post(
        f"/api/vms/{linux_vm.uuid}/migrate/", {"remote_host": destination.name}, format="json"
    )
    assert conflict.status_code == 409
    api.post(f"/api/migrations/{queued}/cancel/")

    # The source host stops answering (its address moved): the VM cannot be read.
    Host.objects.filter(name=source.name).update(address="127.0.0.98")
    checks = check(linux_vm.uuid, remote_host=destination.name)
    failed(checks, "source_reachable", "is not reachable")
    Host.objects.filter(name=source.name).update(address=source.address)


def test_a_failing_precheck_fails_the_queued_migration(api, linux_vm):
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id = request_migration(api, linux_vm.uuid, remote_host=destination.name, live=False)
    assert migration_execute(migration_id=migration_id) == "failed"
    record = Migration.objects.get(pk=migration_id)
    assert record.error.startswith("Pre-checks failed: vm_state_fits_mode: the VM is running")
    assert record.failure_reason == "precheck"
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {source.name: "running"}
    assert events_of(migration_id)[-1] == "migration.failed"


def test_redelivered_task_does_not_start_twice(api, linux_vm):
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id = request_migration(
        api, linux_vm.uuid, remote_host=destination.name, delete_source=True
    )
    assert migration_execute(migration_id=migration_id) == "succeeded"
    # The same task delivered again finds the migration claimed and finished.
    assert migration_execute(migration_id=migration_id) == "succeeded"
    assert events_of(migration_id).count("migration.started") == 1


def test_offline_migration_moves_the_definition(api, linux_vm):
    source = linux_vm.source
    destination = linux_vm.other(source)
    machines.virsh(source, "destroy", linux_vm.uuid)
    sync(api)
    url = f"/api/vms/{linux_vm.uuid}/migrate/"
    # Asked live, a shut-off VM is refused on `live` (nothing queued to fail later).
    refused = api.post(url, {"remote_host": destination.name, "live": True}, format="json")
    assert refused.status_code == 400 and list(refused.json()) == ["live"]
    # Not said: it moves offline, and the answer says why.
    response = api.post(
        url, {"remote_host": destination.name, "delete_source": True}, format="json"
    )
    assert response.status_code == 202, response.json()
    assert (response.json()["live"], response.json()["live_from"]) == (False, "vm_shut_off")
    migration_id = response.json()["id"]
    assert migration_execute(migration_id=migration_id) == "succeeded", Migration.objects.get(
        pk=migration_id
    ).error
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {destination.name: "shut off"}
    vm = api.get(f"/api/vms/{linux_vm.uuid}/").json()
    assert (vm["host"], vm["state"]) == (destination.name, "shut_off")


def test_timeout_aborts_and_leaves_the_vm_on_the_source(api, linux_vm):
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id = request_migration(
        api, linux_vm.uuid, remote_host=destination.name, bandwidth_mib_s=8, timeout_s=2
    )
    assert migration_execute(migration_id=migration_id) == "failed"
    record = Migration.objects.get(pk=migration_id)
    assert record.error.startswith("timed out after 2 s")
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {source.name: "running"}


def test_over_the_host_limit_a_migration_waits_in_the_queue(api, linux_vm, settings):
    """Waiting for a slot does not hold a worker: the task returns at once, the
    migration stays queued, and it is enqueued again when the slot frees up."""
    settings.MIGRATION_MAX_OUTGOING_PER_HOST = 1
    source = linux_vm.source
    destination = linux_vm.other(source)
    # Another migration from the same source holds the only outgoing slot.
    busy = Migration.objects.create(
        vm_uuid="00000000-0000-0000-0000-000000000001",
        vm_name="other-vm",
        source=Host.objects.get(name=source.name),
        destination=Host.objects.get(name=destination.name),
        requested_by_name="test",
        status="migrating",
        max_downtime_ms=500,
        timeout_s=600,
    )
    migration_id = request_migration(
        api, linux_vm.uuid, remote_host=destination.name, delete_source=True
    )
    started = time.monotonic()
    assert migration_execute(migration_id=migration_id) == "queued"
    assert time.monotonic() - started < 2, "the task must not wait for the slot"
    waiting = Migration.objects.get(pk=migration_id)
    assert (waiting.status, waiting.phase, waiting.claimed_by) == ("queued", "waiting_for_slot", "")
    # Still no slot: nothing is dispatched.
    assert migrations_dispatch_waiting() == []
    Migration.objects.filter(pk=busy.pk).update(status="succeeded")
    assert migrations_dispatch_waiting() == [migration_id]
    # The re-enqueued task runs it (executed here as the worker would).
    assert migration_execute(migration_id=migration_id) == "succeeded"
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {destination.name: "running"}


def test_switch_to_postcopy(api, linux_vm):
    source = linux_vm.source
    destination = linux_vm.other(source)
    migration_id = request_migration(
        api,
        linux_vm.uuid,
        remote_host=destination.name,
        bandwidth_mib_s=8,
        allow_postcopy=True,
        delete_source=True,
    )
    worker = run_in_thread(migration_id)
    wait_until_migrating(migration_id)
    deadline = time.monotonic() + 30  # a pre-copy sample first (8 MiB/s: seconds of it)
    while not MigrationSample.objects.filter(migration_id=migration_id).exists():
        assert time.monotonic() < deadline, "no sample while pre-copying"
        time.sleep(0.05)
    response = api.post(f"/api/migrations/{migration_id}/postcopy/")
    assert response.status_code == 200, response.json()
    assert response.json()["postcopy_started_at"]
    worker.join(120)
    record = Migration.objects.get(pk=migration_id)
    assert record.status == "succeeded", record.error
    # The samples say post-copy from the switch on. Post-copy itself may end within one
    # sample interval (0.2 s: the destination pulls the rest at full speed), so there is
    # not always a post-copy sample; but none comes before the switch, and every sample
    # taken a full interval after it is one (or the final one, "done").
    switched = record.postcopy_started_at
    samples = record.samples.all()
    assert samples.filter(phase="postcopy", taken_at__lt=switched).count() == 0
    settled = switched + timedelta(seconds=2 * settings.MIGRATION_SAMPLE_INTERVAL_S)
    late = samples.filter(taken_at__gte=settled).exclude(phase__in=["postcopy", "done"])
    assert not late.exists(), list(late.values_list("phase", flat=True))
    assert samples.filter(phase="done").count() == 1
    assert samples.filter(taken_at__lt=switched).exists()
    assert labtools.where(linux_vm.hosts, linux_vm.uuid) == {destination.name: "running"}
    assert "migration.postcopy" in events_of(migration_id)
