"""The lab's guests: pools, domain XML, and starting them where they are defined.

``lab-vm`` is Linux under TCG (under KVM it hangs here) dirtying its RAM, disk on the
shared pool; ``lab-tiny`` is SeaBIOS with a private empty disk; ``<host>-extra-<k>`` are
diskless, to move many guests around.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from lab import guest_images, layout
from lab.machines import make_host, status, virsh

_DOWN_STATES = ("shut off", "crashed")


def ensure_pools(config: layout.LabConfig, host: layout.LabHost) -> None:
    pools = {
        layout.PRIVATE_POOL: layout.HOST_IMAGES_DIR,
        layout.SHARED_POOL: str(layout.shared_storage_dir(config)),
    }
    existing = set(virsh(host, "pool-list", "--all", "--name").stdout.split())
    for pool, path in pools.items():
        if pool not in existing:
            virsh(host, "pool-define-as", "--name", pool, "--type", "dir", "--target", path)
            virsh(host, "pool-autostart", pool)
        info = virsh(host, "pool-info", pool).stdout
        if not re.search(r"^State:\s+running", info, re.MULTILINE):
            virsh(host, "pool-start", pool)


def ensure_vms(config: layout.LabConfig, images: guest_images.GuestImages) -> None:
    """Start the Linux and tiny guests where defined (else define them on lab-1)."""
    first = make_host(config, 1)
    where = _domains_by_host([h for h in status(config) if h.running])
    boot = _install_boot_files(config, images)
    for vm in (layout.LINUX_VM_NAME, layout.TINY_VM_NAME):
        host = _start_target(where.get(vm, {}), first)
        if host is None:
            continue
        if vm not in where:
            _define_xml(config, host, _guest_xml(config, host, vm, boot))
        elif vm == layout.LINUX_VM_NAME:
            _update_boot_files(config, host, vm, boot)
        _start_vm(config, host, vm)


def ensure_extra_vms(config: layout.LabConfig, hosts: list[layout.LabHost]) -> None:
    """Define and start `config.extra_vms` guests per host unless they run somewhere; one
    thread per host (a start costs about a second)."""
    where = _domains_by_host([h for h in status(config) if h.running])

    def start_on(host: layout.LabHost) -> None:
        for k in range(1, config.extra_vms + 1):
            vm = layout.extra_vm_name(host, k)
            target = _start_target(where.get(vm, {}), host)
            if target is None:
                continue
            if vm not in where:
                _define_xml(config, target, _extra_vm_xml(vm))
            result = virsh(target, "start", vm, check=False)
            if result.returncode != 0:
                raise layout.LabError(
                    f"cannot start {vm} on {target.name}: {result.stderr.strip()}"
                )

    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        for started in [pool.submit(start_on, host) for host in hosts]:
            started.result()


def extra_vms_start_on(
    config: layout.LabConfig, host: layout.LabHost, count: int, fill_mib: int = 0
) -> list[str]:
    """Define and start `count` extra guests on `host` only (an evacuation's load); their
    names, `<host>-extra-<k>`. remove_extra_guests (tests.labtools) takes them away.
    With `fill_mib`, each boots the lab's Linux guest (no disk) and fills that much of its
    RAM with data that does not change, so that a copy has that much to move
    (wait_for_console with the VM's name says when it has)."""
    names = [layout.extra_vm_name(host, k) for k in range(1, count + 1)]
    boot = guest_images.ensure_guest_images(config.image_cache) if fill_mib else None
    for name in names:
        xml = _filled_vm_xml(config, name, boot, fill_mib) if boot else _extra_vm_xml(name)
        _define_xml(config, host, xml)
        result = virsh(host, "start", name, check=False)
        if result.returncode != 0:
            raise layout.LabError(f"cannot start {name} on {host.name}: {result.stderr.strip()}")
    return names


def _domains_by_host(
    hosts: list[layout.LabHost],
) -> dict[str, dict[str, tuple[layout.LabHost, str]]]:
    """domain name -> host name -> (host, virsh state), over every domain defined."""
    where: dict[str, dict[str, tuple[layout.LabHost, str]]] = {}
    for host in hosts:
        for line in virsh(host, "list", "--all").stdout.splitlines():
            fields = line.split(maxsplit=2)
            if len(fields) == 3:
                where.setdefault(fields[1], {})[host.name] = (host, fields[2].strip())
    return where


def _start_target(
    states: dict[str, tuple[layout.LabHost, str]], home: layout.LabHost
) -> layout.LabHost | None:
    """None if the guest is up somewhere, else where it is defined (`home` preferred)."""
    if any(state not in _DOWN_STATES for _, state in states.values()):
        return None
    return states.get(home.name, next(iter(states.values()), (home, "")))[0]


def console_boots(
    config: layout.LabConfig, vm_name: str = layout.LINUX_VM_NAME
) -> tuple[list[str], str]:
    """The guest's console cut at each boot: (what each earlier boot printed, what the
    current boot has printed so far)."""
    path = layout.console_log_path(config, vm_name)
    text = path.read_text(errors="replace") if path.exists() else ""
    *earlier, current = text.split(guest_images.MARKER_BOOTED)
    return earlier, current


def wait_for_filled_guest(
    config: layout.LabConfig, timeout: float = 180.0, vm_name: str = layout.LINUX_VM_NAME
) -> None:
    """Until the guest's current boot has filled its RAM and has not crashed since: a
    guest whose kernel crashed reboots itself (oops=panic) and fills it again."""

    def filled() -> bool:
        earlier, current = console_boots(config, vm_name)
        return (
            bool(earlier)
            and guest_images.MARKER_FILLED in current
            and not any(sign in current for sign in guest_images.CRASH_SIGNS)
        )

    layout.wait_until(filled, timeout, f"{vm_name} booted, filled and not crashed")


def wait_for_console(
    config: layout.LabConfig,
    text: str = guest_images.MARKER_FILLED,
    timeout: float = 180.0,
    vm_name: str = layout.LINUX_VM_NAME,
) -> float:
    """Wait until the guest's serial console shows ``text``; returns seconds waited."""
    path = layout.console_log_path(config, vm_name)
    started = time.monotonic()

    def seen() -> bool:
        return path.exists() and text in path.read_text(errors="replace")

    layout.wait_until(seen, timeout, f"{text!r} on the console of {vm_name} ({path})")
    return time.monotonic() - started


def _install_boot_files(
    config: layout.LabConfig, images: guest_images.GuestImages
) -> guest_images.GuestImages:
    # Copied into the lab root: a later image-cache rebuild never changes what a
    # running (or migrating) domain references.
    boot = config.root / "boot"
    boot.mkdir(exist_ok=True)
    copies = []
    for source in (images.kernel, images.initrd):
        target = boot / source.name
        if not target.exists():
            shutil.copyfile(source, target.with_suffix(".part"))
            os.replace(target.with_suffix(".part"), target)
        copies.append(target)
    return guest_images.GuestImages(kernel=copies[0], initrd=copies[1])


def _update_boot_files(
    config: layout.LabConfig, host: layout.LabHost, vm: str, boot: guest_images.GuestImages
) -> None:
    """A kept lab's shut-off guest boots the current kernel and initramfs (a changed
    guest /init means a new initramfs); its definition is otherwise kept (UUID too)."""
    xml = _dumpxml(host, vm)
    updated = boot_files_set(xml, boot)
    if updated != xml:
        _define_xml(config, host, updated)


def boot_files_set(xml: str, boot: guest_images.GuestImages) -> str:
    """The domain XML with its <kernel> and <initrd> naming `boot`'s files."""
    for tag, path in (("kernel", boot.kernel), ("initrd", boot.initrd)):
        element = f"<{tag}>{escape(str(path))}</{tag}>"
        xml = re.sub(rf"<{tag}>[^<]*</{tag}>", lambda _m, e=element: e, xml)
    return xml


def _define_xml(config: layout.LabConfig, host: layout.LabHost, xml: str) -> None:
    path = layout.host_dir(config, host) / "state" / "define.xml"
    path.write_text(xml)
    try:
        virsh(host, "define", str(path))
    finally:
        path.unlink(missing_ok=True)


def _start_vm(config: layout.LabConfig, host: layout.LabHost, vm: str) -> None:
    if vm == layout.LINUX_VM_NAME:
        _ensure_volume(host, layout.SHARED_POOL, layout.LINUX_VM_DISK, layout.LINUX_VM_DISK_MIB)
        console = layout.console_log_path(config)
        console.parent.mkdir(exist_ok=True)
        console.write_text("")  # fresh boot, fresh console: markers mean this boot
    else:
        _ensure_volume(host, layout.PRIVATE_POOL, layout.TINY_VM_DISK, layout.TINY_VM_DISK_MIB)
    result = virsh(host, "start", vm, check=False)
    if result.returncode != 0 and vm == layout.TINY_VM_NAME and "type='kvm'" in _dumpxml(host, vm):
        # KVM is offered but unusable (nested limits): the tiny guest runs under TCG.
        xml = _dumpxml(host, vm).replace("type='kvm'", "type='qemu'", 1)
        virsh(host, "undefine", vm)
        _define_xml(config, host, xml)
        result = virsh(host, "start", vm, check=False)
    if result.returncode != 0:
        raise layout.LabError(
            f"cannot start {vm} on {host.name}: {result.stderr.strip()}\n"
            f"--- qemu log (tail):\n"
            f"{layout.tail(layout.host_dir(config, host) / 'log' / 'qemu' / f'{vm}.log')}"
        )
    # Other hosts' pools see new files in the shared folder only after a refresh.
    for other in status(config):
        if other.running:
            virsh(other, "pool-refresh", layout.SHARED_POOL, check=False)


def _dumpxml(host: layout.LabHost, vm: str) -> str:
    return virsh(host, "dumpxml", "--inactive", vm).stdout


def _ensure_volume(host: layout.LabHost, pool: str, name: str, size_mib: int) -> None:
    virsh(host, "pool-refresh", pool, check=False)
    if virsh(host, "vol-info", "--pool", pool, name, check=False).returncode != 0:
        virsh(host, "vol-create-as", pool, name, f"{size_mib}M", "--format", "qcow2")


def _kvm_offered(host: layout.LabHost) -> bool:
    """Never assume KVM: /dev/kvm must open and libvirt must offer the kvm domain type."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return "<domain type='kvm'" in virsh(host, "capabilities", check=False).stdout


def _disk_cache_mode(directory: Path) -> str:
    # cache=none (O_DIRECT) is what libvirt wants for a live migration with a disk
    # that is not copied; tmpfs has no O_DIRECT, so fall back there.
    probe = directory / ".odirect-probe"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_RDWR | getattr(os, "O_DIRECT", 0), 0o600)
        os.close(fd)
        return "none"
    except OSError:
        return "writeback"
    finally:
        probe.unlink(missing_ok=True)


def _guest_xml(
    config: layout.LabConfig, host: layout.LabHost, vm: str, boot: guest_images.GuestImages
) -> str:
    if vm == layout.LINUX_VM_NAME:
        return _linux_vm_xml(config, boot)
    return _tiny_vm_xml(config, "kvm" if _kvm_offered(host) else "qemu")


def _domain_xml(
    *,
    name: str,
    title: str,
    description: str,
    memory_mib: int,
    domain_type: str = "qemu",
    os_extra: str = "",
    extra: str = "",
    devices: str = "",
) -> str:
    return f"""<domain type='{domain_type}'>
  <name>{escape(name)}</name>
  <title>{title}</title>
  <description>{description}</description>
  <memory unit='MiB'>{memory_mib}</memory>
  <currentMemory unit='MiB'>{memory_mib}</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>{os_extra}
  </os>
  <features><acpi/></features>
  <clock offset='utc'/>{extra}
  <devices>
    <emulator>{layout.QEMU}</emulator>{devices}
    <memballoon model='none'/>
  </devices>
</domain>
"""


def _disk_xml(cache: str, source: str) -> str:
    return f"""
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='{cache}'/>
      <source file={quoteattr(source)}/>
      <target dev='vda' bus='virtio'/>
    </disk>"""


def _linux_vm_xml(config: layout.LabConfig, boot: guest_images.GuestImages) -> str:
    shared = layout.shared_storage_dir(config)
    cmdline = guest_images.kernel_cmdline(config.guest_fill_mib, config.guest_dirty_mib_s)
    return _domain_xml(
        name=layout.LINUX_VM_NAME,
        title="lab Linux guest",
        description=f"TCG guest whose /init fills {config.guest_fill_mib} MiB and rewrites\n"
        f"{config.guest_dirty_mib_s} MiB/s (Linux under KVM hangs on these machines).",
        memory_mib=config.guest_memory_mib,
        os_extra=f"""
    <kernel>{escape(str(boot.kernel))}</kernel>
    <initrd>{escape(str(boot.initrd))}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>""",
        extra="""
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>""",
        devices=_disk_xml(_disk_cache_mode(shared), str(shared / layout.LINUX_VM_DISK))
        + f"""
    <serial type='file'>
      <source path={quoteattr(str(layout.console_log_path(config)))} append='on'/>
      <target port='0'/>
    </serial>""",
    )


def _tiny_vm_xml(config: layout.LabConfig, domain_type: str) -> str:
    cache = _disk_cache_mode(layout.private_images_dir(config, layout.host_name(config, 1)))
    return _domain_xml(
        name=layout.TINY_VM_NAME,
        title="lab tiny guest",
        description="SeaBIOS without a bootable disk: starts and migrates fast.",
        memory_mib=layout.TINY_VM_MEMORY_MIB,
        domain_type=domain_type,
        os_extra="\n    <boot dev='hd'/>",
        devices=_disk_xml(cache, f"{layout.HOST_IMAGES_DIR}/{layout.TINY_VM_DISK}"),
    )


def _filled_vm_xml(
    config: layout.LabConfig, name: str, boot: guest_images.GuestImages, fill_mib: int
) -> str:
    console = layout.console_log_path(config, name)
    console.parent.mkdir(parents=True, exist_ok=True)
    console.unlink(missing_ok=True)
    return _domain_xml(
        name=name,
        title="lab filled extra guest",
        description=f"TCG guest without a disk whose /init fills {fill_mib} MiB once.",
        memory_mib=fill_mib + layout.FILLED_VM_OVERHEAD_MIB,
        os_extra=f"""
    <kernel>{escape(str(boot.kernel))}</kernel>
    <initrd>{escape(str(boot.initrd))}</initrd>
    <cmdline>{escape(guest_images.kernel_cmdline(fill_mib, 0))}</cmdline>""",
        devices=f"""
    <serial type='file'>
      <source path={quoteattr(str(console))} append='on'/>
      <target port='0'/>
    </serial>""",
    )


def _extra_vm_xml(name: str) -> str:
    # No disk at all: nothing to share or copy, so it migrates live between any hosts.
    return _domain_xml(
        name=name,
        title="lab extra guest",
        description="SeaBIOS without any disk, under TCG: a small VM to move around.",
        memory_mib=layout.EXTRA_VM_MEMORY_MIB,
    )
