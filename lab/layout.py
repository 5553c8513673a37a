"""Where a lab's pieces are: names, addresses, ports, folders, LabConfig and LabHost.

Layout under ``LabConfig.root``::

    shared/                 storage pool "shared" on every host (same path everywhere)
    boot/                   guest kernel + initramfs used by the lab's domains
    console/<vm>.log        serial console of the Linux guest (appended across hosts)
    hosts/<name>/*          bind-mounted over system paths inside the host (BIND_MOUNTS)
    hosts/<name>/lib/images storage pool "default" (= /var/lib/libvirt/images inside)
    hosts/<name>/home       the host's ssh user's home (libvirt group + sudo)
    hosts/<name>/home-sudo  the home of its sudo-only user (not in group libvirt)
    hosts/<name>/state      holder spec/pid/FIFO, host uuid, ssh passwords + host key
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

LINUX_VM_NAME = "lab-vm"
TINY_VM_NAME = "lab-tiny"
SHARED_POOL = "shared"
PRIVATE_POOL = "default"
HOST_IMAGES_DIR = "/var/lib/libvirt/images"
LIBVIRT_TCP_PORT = 16509
LIBVIRT_TLS_PORT = 16514
SSH_PORT = 22
# QEMU's incoming migration ports (libvirt's defaults, set in qemu.conf for lab.faults).
MIGRATION_PORT_MIN = 49152
MIGRATION_PORT_MAX = 49215
LINUX_VM_DISK = "lab-vm-data.qcow2"
LINUX_VM_DISK_MIB = 64
TINY_VM_DISK = "lab-tiny.qcow2"
TINY_VM_DISK_MIB = 16
TINY_VM_MEMORY_MIB = 128
EXTRA_VM_MEMORY_MIB = 64
# A filled extra guest's RAM beyond what it fills: its kernel and initramfs.
FILLED_VM_OVERHEAD_MIB = 128
# Guest RAM the kernel itself needs besides the filled tmpfs.
GUEST_OVERHEAD_MIB = 96

QEMU = "/usr/bin/qemu-system-x86_64"

BIND_MOUNTS = {
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "etc": "/etc/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
    "root": "/root",
    "pki": "/etc/pki",
    "sudoers": "/etc/sudoers.d",
    # The host's `systemctl` shim (`restart libvirtd` asks the holder).
    "sbin": "/usr/local/sbin",
}


class LabError(RuntimeError):
    """The lab could not do what was asked; the message says why."""


@dataclass(frozen=True)
class LabConfig:
    root: Path  # all lab state lives under here, e.g. <data>/lab
    image_cache: Path  # guest kernel/initramfs cache, shared between lab roots
    first_address: str = "127.0.0.2"  # lab-1 gets this, lab-2 the next, ...
    name_prefix: str = "lab"  # hosts are f"{prefix}-{i}"
    guest_memory_mib: int = 512  # Linux guest RAM
    guest_fill_mib: int = 300  # MiB of RAM filled with /dev/urandom data by the guest's /init
    guest_dirty_mib_s: int = 16  # MiB rewritten every second after filling
    start_vms: bool = True  # define+start the lab VMs on the first host
    # Portal folders no host may see (a tmpfs in each namespace); empty: the lab root's parent.
    private_paths: tuple[Path, ...] = ()
    # TLS-only hosts: unix socket only until certificates are installed, then TLS only;
    # the lab drives them with virsh inside their namespace (nsenter).
    tls_hosts: tuple[int, ...] = ()
    # Small diskless guests per host (`lab up --vms N`), named f"{host}-extra-{k}".
    extra_vms: int = 0

    @property
    def hidden_paths(self) -> tuple[Path, ...]:
        return tuple(Path(p) for p in self.private_paths) or (self.root.parent,)


@dataclass(frozen=True)
class LabHost:
    name: str  # "lab-1"
    address: str  # "127.0.0.2"
    libvirt_uri: str  # "qemu+tcp://127.0.0.2/system"
    ssh_port: int  # 22
    ssh_user: str  # per-host login user, member of group libvirt, may sudo
    ssh_password: str  # generated once, stored in the lab root (0600)
    running: bool
    sudo_user: str = ""  # per-host login user NOT in group libvirt; full sudo rights
    sudo_password: str = ""
    tls_only: bool = False  # see LabConfig.tls_hosts
    holder_pid_file: str = ""  # the namespace's first process (for nsenter)


def shared_storage_dir(config: LabConfig) -> Path:
    """The folder every lab host sees at the same path (the lab's "NFS")."""
    return config.root / "shared"


def host_dir(config: LabConfig, host: LabHost | str) -> Path:
    return config.root / "hosts" / name_of(host)


def state_dir(config: LabConfig, host: LabHost | str) -> Path:
    return host_dir(config, host) / "state"


def private_images_dir(config: LabConfig, host: LabHost | str) -> Path:
    """Real path of a host's private images folder (HOST_IMAGES_DIR inside the host)."""
    return host_dir(config, host) / "lib" / "images"


def console_log_path(config: LabConfig, vm_name: str = LINUX_VM_NAME) -> Path:
    """Serial console of the Linux guest; the same file whichever host runs it."""
    return config.root / "console" / f"{vm_name}.log"


def libvirtd_log_path(config: LabConfig, host: LabHost | str) -> Path:
    return host_dir(config, host) / "log" / "libvirtd.log"


def sshd_log_path(hdir: Path) -> Path:
    return hdir / "log" / "sshd.log"


def host_address(config: LabConfig, index: int) -> str:
    return str(ipaddress.IPv4Address(config.first_address) + (index - 1))


def host_name(config: LabConfig, index: int) -> str:
    return f"{config.name_prefix}-{index}"


def extra_vm_name(host: LabHost | str, k: int) -> str:
    return f"{name_of(host)}-extra-{k}"


def ssh_user_for(address: str) -> str:
    # From the address: unique machine-wide, as one address runs one lab at a time.
    return f"labops{int(ipaddress.IPv4Address(address)) & 0xFFFFFF}"


def sudo_user_for(address: str) -> str:
    return f"labsudo{int(ipaddress.IPv4Address(address)) & 0xFFFFFF}"


def name_of(host: LabHost | str) -> str:
    return host.name if isinstance(host, LabHost) else host


def index_of(config: LabConfig, host: LabHost | str) -> int:
    match = re.fullmatch(re.escape(config.name_prefix) + r"-(\d+)", name_of(host))
    if not match:
        raise LabError(f"{name_of(host)!r} is not a host of lab prefix {config.name_prefix!r}")
    return int(match.group(1))


def existing_indexes(config: LabConfig) -> list[int]:
    hosts = config.root / "hosts"
    if not hosts.is_dir():
        return []
    pattern = re.compile(re.escape(config.name_prefix) + r"-(\d+)")
    found = (pattern.fullmatch(entry.name) for entry in hosts.iterdir() if entry.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError(
            "the lab needs root: it uses unshare, bind mounts, useradd and a system-mode "
            "libvirtd per host"
        )


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def lab_lock(config: LabConfig) -> AbstractContextManager[None]:
    return file_lock(config.root / ".lock")


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} not readable)"


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    detail: Callable[[], str] | None = None,
    interval: float = 0.1,
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            extra = f"\n{detail()}" if detail else ""
            raise LabError(f"timed out after {timeout:g} s waiting for {what}{extra}")
        time.sleep(interval)
