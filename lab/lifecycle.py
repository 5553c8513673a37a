"""The lab: real hypervisor hosts (libvirtd + QEMU + sshd) on this machine, up and down."""

from __future__ import annotations

from pathlib import Path

from lab import domains, faults, guest_images, host_setup, layout, proc
from lab.machines import (
    ensure_daemon,
    ensure_holder,
    make_host,
    reap_spawned,
    stop_host,
    wait_libvirtd,
    wait_sshd,
)


def up(config: layout.LabConfig, hosts: int = 2) -> list[layout.LabHost]:
    """Start hosts 1..N (and the lab VMs); what already runs is left alone."""
    layout.require_root()
    if hosts < 1:
        raise layout.LabError("a lab needs at least one host")
    if (
        config.start_vms
        and config.guest_fill_mib + layout.GUEST_OVERHEAD_MIB > config.guest_memory_mib
    ):
        raise layout.LabError(
            f"guest_fill_mib={config.guest_fill_mib} does not fit in "
            f"guest_memory_mib={config.guest_memory_mib} (the kernel needs "
            f"~{layout.GUEST_OVERHEAD_MIB} MiB besides)"
        )
    config.root.mkdir(parents=True, exist_ok=True)
    reap_spawned()
    with layout.lab_lock(config):
        images = guest_images.ensure_guest_images(config.image_cache) if config.start_vms else None
        for system_path in layout.BIND_MOUNTS.values():
            # Mount points must exist in the root namespace; they stay empty there.
            Path(system_path).mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privsep dir
        if not Path(host_setup.BINDFS).exists():
            raise layout.LabError(
                f"{host_setup.BINDFS} missing: run scripts/install-system.sh (package bindfs)"
            )
        for kept in (
            layout.shared_storage_dir(config),
            config.root / "boot",
            config.root / "console",
        ):
            kept.mkdir(parents=True, exist_ok=True)  # bind-mounted into every host

        indexes = list(range(1, hosts + 1))
        for index in indexes:
            host_setup.prepare_host(config, index)
        for index in indexes:
            ensure_holder(config, index)
        # Start every daemon first, then wait: the hosts boot in parallel.
        for index in indexes:
            ensure_daemon(config, index, "libvirtd")
            ensure_daemon(config, index, "sshd")
        lab_hosts = [make_host(config, index) for index in indexes]
        for host in lab_hosts:
            wait_libvirtd(config, host)
            wait_sshd(config, host)
            domains.ensure_pools(config, host)
        if images is not None:
            domains.ensure_vms(config, images)
        if config.extra_vms > 0:
            domains.ensure_extra_vms(config, lab_hosts)
        return [make_host(config, index) for index in indexes]


def down(config: layout.LabConfig) -> None:
    """Destroy the domains and stop every process of the lab; no mount or fault remains."""
    layout.require_root()
    if not config.root.exists():
        return
    # First: a cut-off or frozen libvirtd would not answer the virsh calls of stop_host.
    faults.heal_all(config)
    faults.thaw_all(config)
    with layout.lab_lock(config):
        for hdir in sorted(p for p in (config.root / "hosts").glob("*") if p.is_dir()):
            stop_host(hdir)
        proc.sweep_strays(config.root)
    reap_spawned()
    # Processes merely working in the root (a shell cd'ed there) are not ours to kill.
    leftovers = proc.lab_processes(config, include_cwd=False)
    if leftovers:
        raise layout.LabError(f"lab processes survived down: {leftovers}")
    mounts = proc.lab_mounts(config)
    if mounts:
        raise layout.LabError(f"lab mounts survived down: {mounts}")
    tables = faults.lab_tables(config)
    if tables:
        raise layout.LabError(f"lab nft tables survived down: {tables}")
