"""Every migration option, proven on the lab hosts: libvirt and QEMU did what was asked.

The proof is read where it is true, not from the portal's own record: QEMU's monitor on
the source while the job runs (`virsh qemu-monitor-command --hmp <vm> 'info
migrate_capabilities'` / `'info migrate_parameters'`), libvirt's job statistics, its max
downtime (virDomainMigrateGetMaxDowntime), and the destination's storage pool. A
bandwidth limit keeps each migration running long enough to look (the guest dirties
its memory); the limit is then lifted through the API so that it ends quickly.
"""

from __future__ import annotations

import re
import subprocess
from contextlib import contextmanager

import pytest
from django.conf import settings

from hosts.connections import host_connect
from hosts.hypervisor import GatewayError
from hosts.models import Host
from lab import layout, machines, proc
from migrations_app.models import Migration, MigrationSample
from migrations_app.worker.runner import migration_execute
from tests import labtools
from tests.labtools import request_migration, run_in_thread, wait_until_migrating

pytestmark = [pytest.mark.lab, pytest.mark.django_db(transaction=True)]

MiB = 2**20


def hmp(host: layout.LabHost, uuid: str, command: str) -> dict[str, str]:
    """QEMU's answer to an HMP `info` command on `host`, as {name: value}."""
    output = machines.virsh(host, "qemu-monitor-command", "--hmp", uuid, command).stdout
    return dict(re.findall(r"([\w-]+): ([^\n]*?)\s*$", output, re.MULTILINE))


def migrate_slowly(api, vm, **options) -> tuple[int, object, layout.LabHost, layout.LabHost]:
    """Start a bandwidth-limited migration in a worker thread and wait until it runs."""
    source = vm.source
    destination = vm.other(source)
    options.setdefault("bandwidth_mib_s", 8)
    migration_id = request_migration(
        api, vm.uuid, remote_host=destination.name, delete_source=True, **options
    )
    worker = run_in_thread(migration_id)
    wait_until_migrating(migration_id, min_percent=1.0)
    return migration_id, worker, source, destination


def finish(api, migration_id: int, worker, vm, destination: layout.LabHost) -> Migration:
    """Lift the bandwidth limit and wait for the migration to succeed."""
    labtools.lift_bandwidth_limit(api, migration_id)
    worker.join(180)
    assert not worker.is_alive()
    record = Migration.objects.get(pk=migration_id)
    assert record.status == "succeeded", record.error
    assert labtools.where(vm.hosts, vm.uuid) == {destination.name: "running"}
    return record


def job_stats(host_name: str, uuid: str) -> dict:
    with host_connect(Host.objects.get(name=host_name)) as conn:
        return conn.job_stats(uuid)


def job_stats_while_running(host_name: str, uuid: str, migration_id: int) -> dict:
    """The source's job statistics, or a clear failure once the migration has left it."""
    try:
        return job_stats(host_name, uuid)
    except GatewayError:
        status = Migration.objects.get(pk=migration_id).status
        if status == "migrating":
            raise
        pytest.fail(f"the migration ended ({status}) before QEMU had throttled the guest")


def test_auto_converge_and_xbzrle_compression(api, linux_vm):
    # QEMU throttles once the guest dirties more than a share of what a period sent (half
    # by default). A guest slowed by a loaded machine may dirty less, and the copy then
    # ends before any throttle: 1 % makes any running guest count. With the smallest
    # downtime the copy does not end on its own before that.
    source = linux_vm.source
    machines.virsh(
        source,
        "qemu-monitor-command",
        "--hmp",
        linux_vm.uuid,
        "migrate_set_parameter throttle-trigger-threshold 1",
    )
    migration_id, worker, source, destination = migrate_slowly(
        api,
        linux_vm,
        auto_converge=True,
        compressed=True,
        compression_method="xbzrle",
        max_downtime_ms=settings.MIGRATION_MIN_DOWNTIME_MS,
    )
    capabilities = hmp(source, linux_vm.uuid, "info migrate_capabilities")
    parameters = hmp(source, linux_vm.uuid, "info migrate_parameters")
    stats = job_stats(source.name, linux_vm.uuid)
    seen: list[dict] = []

    def throttle() -> int | None:
        seen.append(job_stats_while_running(source.name, linux_vm.uuid, migration_id))
        return seen[-1].get("auto_converge_throttle")

    try:
        throttled = labtools.wait_for(
            throttle, timeout=90, what="QEMU to throttle the guest", interval=0.5
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the last job statistics: {seen[-1:]}") from None
    tuned = api.post(
        f"/api/migrations/{migration_id}/tune/",
        {"max_downtime_ms": settings.MIGRATION_MAX_DOWNTIME_MS},
        format="json",
    )
    assert tuned.status_code in (200, 409), tuned.json()
    record = finish(api, migration_id, worker, linux_vm, destination)

    assert capabilities["auto-converge"] == "on"
    assert capabilities["xbzrle"] == "on"
    assert capabilities["compress"] == "off" and capabilities["multifd"] == "off"
    # auto-converge throttles the guest from cpu-throttle-initial, by steps of -increment.
    assert parameters["cpu-throttle-initial"] == "20"
    assert throttled >= 20
    # libvirt reports the XBZRLE cache while the job runs, and the completed figures.
    assert stats["compression_cache"] == int(parameters["xbzrle-cache-size"].split()[0]) > 0
    assert record.completed_stats["compression_cache"] == stats["compression_cache"]
    assert "compression_bytes" in record.completed_stats


def test_compression_method_mt_with_its_level(api, linux_vm):
    migration_id, worker, source, destination = migrate_slowly(
        api, linux_vm, compressed=True, compression_method="mt", compression_level=7
    )
    capabilities = hmp(source, linux_vm.uuid, "info migrate_capabilities")
    parameters = hmp(source, linux_vm.uuid, "info migrate_parameters")
    record = finish(api, migration_id, worker, linux_vm, destination)

    assert capabilities["compress"] == "on"
    assert capabilities["xbzrle"] == "off" and capabilities["multifd"] == "off"
    assert parameters["compress-level"] == "7"
    assert (record.compression_method, record.compression_level) == ("mt", 7)


def test_parallel_connections_are_multifd_channels(api, linux_vm):
    migration_id, worker, source, destination = migrate_slowly(
        api, linux_vm, parallel_connections=3
    )
    capabilities = hmp(source, linux_vm.uuid, "info migrate_capabilities")
    parameters = hmp(source, linux_vm.uuid, "info migrate_parameters")
    # The QEMU migration stream: one connection per channel (and the main one) from
    # the source's QEMU to the destination's migration port.
    connections = subprocess.run(
        ["ss", "-tnH", "state", "established", "dst", f"{destination.address}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    finish(api, migration_id, worker, linux_vm, destination)

    assert capabilities["multifd"] == "on"
    assert parameters["multifd-channels"] == "3"
    ports = [int(m) for m in re.findall(rf"{re.escape(destination.address)}:(\d+)", connections)]
    migration_ports = [p for p in ports if 49152 <= p <= 49215]
    assert len(migration_ports) >= 1 + 3, connections


def test_max_downtime_is_read_back_from_libvirt_also_after_a_tune(api, linux_vm):
    migration_id, worker, source, destination = migrate_slowly(api, linux_vm, max_downtime_ms=350)
    try:
        labtools.wait_for(
            lambda: Migration.objects.get(pk=migration_id).max_downtime_read_ms,
            timeout=10,
            what="the engine to read back the max downtime",
        )
        with host_connect(Host.objects.get(name=source.name)) as conn:
            asked = conn.max_downtime(linux_vm.uuid)
        limit_asked = hmp(source, linux_vm.uuid, "info migrate_parameters")["downtime-limit"]
        response = api.post(
            f"/api/migrations/{migration_id}/tune/", {"max_downtime_ms": 1200}, format="json"
        )
        assert response.status_code == 200, response.json()
        tuned = response.json()
        with host_connect(Host.objects.get(name=source.name)) as conn:
            after_tune = conn.max_downtime(linux_vm.uuid)
        limit_tuned = hmp(source, linux_vm.uuid, "info migrate_parameters")["downtime-limit"]
        read_after_start = Migration.objects.get(pk=migration_id)
    finally:
        record = finish(api, migration_id, worker, linux_vm, destination)

    assert asked == 350 and limit_asked == "350 ms"
    assert after_tune == 1200 and limit_tuned == "1200 ms"
    assert tuned["max_downtime_ms"] == tuned["max_downtime_read_ms"] == 1200
    assert record.max_downtime_read_ms == 1200
    assert read_after_start is not None


def _remove_leftover_copy(lab_config, host: layout.LabHost) -> None:
    (layout.private_images_dir(lab_config, host) / layout.TINY_VM_DISK).unlink(missing_ok=True)
    machines.virsh(host, "pool-refresh", layout.PRIVATE_POOL)


def test_copy_storage_shows_disk_progress_and_the_disk_arrives(api, tiny_vm, lab_config):
    source = tiny_vm.source
    destination = tiny_vm.other(source)
    _remove_leftover_copy(lab_config, destination)
    capacity = labtools.disk_capacity(source, tiny_vm.uuid, "vda")

    migration_id = request_migration(
        api,
        tiny_vm.uuid,
        remote_host=destination.name,
        storage="copy",
        delete_source=True,
        bandwidth_mib_s=20,
    )
    assert migration_execute(migration_id=migration_id) == "succeeded"

    record = api.get(f"/api/migrations/{migration_id}/").json()
    space = next(c for c in record["checks"] if c["name"] == "destination_has_space")
    assert space["status"] == "pass"
    assert space["message"].startswith(f"pool 'default' on {destination.name} has ")
    samples = api.get(f"/api/migrations/{migration_id}/samples/").json()
    copying = [s for s in samples if s["disk_total_bytes"]]
    assert copying, samples
    assert max(s["disk_processed_bytes"] for s in copying) > 0
    assert record["disk_total_bytes"] > 0
    assert record["disk_processed_bytes"] == record["disk_total_bytes"]
    assert record["disk_remaining_bytes"] == 0
    # The disk is on the destination, a volume of its pool, as large as the source's.
    assert labtools.where(tiny_vm.hosts, tiny_vm.uuid) == {destination.name: "running"}
    volume = machines.virsh(
        destination, "vol-info", "--pool", layout.PRIVATE_POOL, layout.TINY_VM_DISK, "--bytes"
    ).stdout
    assert int(re.search(r"Capacity:\s+(\d+)", volume)[1]) == capacity
    assert labtools.disk_capacity(destination, tiny_vm.uuid, "vda") == capacity


@contextmanager
def small_images_folder(lab_config, host: layout.LabHost, size: str):
    """The host's private images folder replaced by a tmpfs of `size`, inside the host's
    own mount namespace only (its libvirtd sees it; the machine does not)."""
    pid = proc.libvirtd_pid(host)
    assert pid, f"no libvirtd for {host.name}"
    enter = ["nsenter", "-t", str(pid), "-m", "--"]
    subprocess.run(
        [*enter, "mount", "-t", "tmpfs", "-o", f"size={size}", "optlab", layout.HOST_IMAGES_DIR],
        check=True,
    )
    try:
        machines.virsh(host, "pool-refresh", layout.PRIVATE_POOL)
        yield
    finally:
        subprocess.run([*enter, "umount", layout.HOST_IMAGES_DIR], check=True)
        machines.virsh(host, "pool-refresh", layout.PRIVATE_POOL)


def test_copy_storage_refused_when_the_destination_lacks_space(api, tiny_vm, lab_config):
    source = tiny_vm.source
    destination = tiny_vm.other(source)
    with small_images_folder(lab_config, destination, "64k"):
        pool = machines.virsh(destination, "pool-info", layout.PRIVATE_POOL, "--bytes").stdout
        available = int(re.search(r"Available:\s+(\d+)", pool)[1])
        migration_id = request_migration(
            api, tiny_vm.uuid, remote_host=destination.name, storage="copy"
        )
        assert migration_execute(migration_id=migration_id) == "failed"
        volumes = machines.virsh(destination, "vol-list", layout.PRIVATE_POOL).stdout

    record = Migration.objects.get(pk=migration_id)
    assert record.failure_reason == "precheck"
    space = next(c for c in record.checks if c["name"] == "destination_has_space")
    assert space["status"] == "fail"
    assert space["message"].startswith(
        f"pool 'default' on {destination.name} (/var/lib/libvirt/images) has "
        f"{available / MiB:.1f} MiB free, the disks to copy there (lab-tiny.qcow2) take "
    )
    assert "or choose another destination or shared storage" in space["message"]
    assert record.error == f"Pre-checks failed: destination_has_space: {space['message']}"
    # Nothing moved: the VM runs where it was, nothing was created on the destination.
    assert labtools.where(tiny_vm.hosts, tiny_vm.uuid) == {source.name: "running"}
    assert layout.TINY_VM_DISK not in volumes
    assert not MigrationSample.objects.filter(migration_id=migration_id).exists()
