"""The lab: real hypervisor hosts (libvirtd + QEMU + sshd) on this one machine.

Each host ``<prefix>-<i>`` lives on its own loopback address and in its own mount
namespace, in which per-host folders are bind-mounted over libvirt's fixed system
paths (/run/libvirt, /var/lib/libvirt, /etc/libvirt, /var/log/libvirt,
/var/cache/libvirt).  See shared/LAB.md for the measured facts this is built on.

Process tree of one host (nothing is a child of the Python process that ran ``up``)::

    python -I lab/holder.py <spec>     (unshare'd mount namespace; subreaper)
      +- libvirtd --listen             (tcp on <address>:16509, unix socket for ssh)
      |    `- qemu-system-x86_64 ...   (reparented to the holder: libvirt daemonizes it)
      `- sshd -D                       (<address>:22, for qemu+ssh:// via virt-ssh-helper)

Layout under ``LabConfig.root``::

    shared/                 storage pool "shared" on every host (same path everywhere)
    boot/                   guest kernel + initramfs used by the lab's domains
    console/<vm>.log        serial console of the Linux guest (appended across hosts)
    hosts/<name>/{run,lib,etc,log,cache}   bind-mounted over libvirt's system paths
    hosts/<name>/lib/images storage pool "default" (= /var/lib/libvirt/images inside)
    hosts/<name>/root       /root inside the host (root's own ~/.ssh: libvirtd's home)
    hosts/<name>/pki        /etc/pki inside the host (its TLS certificates)
    hosts/<name>/sudoers    /etc/sudoers.d inside the host (its users' sudo rights)
    hosts/<name>/home       the host's ssh user's home (libvirt group + sudo)
    hosts/<name>/home-sudo  the home of its sudo-only user (not in group libvirt)
    hosts/<name>/state      holder spec/pid/FIFO, host uuid, ssh passwords + host key

A host shares nothing with the portal: inside its namespace the portal's data folder
(database, ssh key and wrapper, secret key, other hosts' folders) is an empty tmpfs;
only the lab's shared storage, boot files, console logs and the host's own folder are
bind-mounted back, at the same paths, as a separate machine with NFS would see them.

Plain Python: no Django, no libvirt bindings (libvirt is driven through ``virsh``).
"""

from __future__ import annotations

import fcntl
import grp
import ipaddress
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from lab import guest_images

LINUX_VM_NAME = "lab-vm"
TINY_VM_NAME = "lab-tiny"
SHARED_POOL = "shared"
PRIVATE_POOL = "default"
# Inside every host, the private images folder is libvirt's usual one.
HOST_IMAGES_DIR = "/var/lib/libvirt/images"
LIBVIRT_TCP_PORT = 16509
LIBVIRT_TLS_PORT = 16514
SSH_PORT = 22
# QEMU listens for an incoming migration on one of these (libvirt's defaults, set
# explicitly in qemu.conf so that lab.faults and the hosts agree).
MIGRATION_PORT_MIN = 49152
MIGRATION_PORT_MAX = 49215
LINUX_VM_DISK = "lab-vm-data.qcow2"
LINUX_VM_DISK_MIB = 64
TINY_VM_DISK = "lab-tiny.qcow2"
TINY_VM_DISK_MIB = 16
TINY_VM_MEMORY_MIB = 128
# `lab up --vms N`: N more small diskless guests on every host (f"{host}-extra-{k}").
EXTRA_VM_MEMORY_MIB = 64
SSH_GROUP = "libvirt"
# Guest RAM the kernel itself needs besides the filled tmpfs.
GUEST_OVERHEAD_MIB = 96

LIBVIRTD = "/usr/sbin/libvirtd"
BINDFS = "/usr/bin/bindfs"
SSHD = "/usr/sbin/sshd"
QEMU = "/usr/bin/qemu-system-x86_64"
HOLDER_SCRIPT = Path(__file__).resolve().with_name("holder.py")

# Host folder -> system path it is bind-mounted over inside the host's namespace.
BIND_MOUNTS = {
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "etc": "/etc/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
    "root": "/root",
    "pki": "/etc/pki",
    "sudoers": "/etc/sudoers.d",
    # The host's `systemctl` (a shim: `restart libvirtd` asks the holder), first on
    # root's PATH and sudo's secure_path.
    "sbin": "/usr/local/sbin",
}
# Per-folder modes (the rest are 0755): root's home and sudoers are private.
_BIND_MODES = {"root": 0o700, "sudoers": 0o750}
# A process belongs to a host when this path, seen from its mount namespace, is the
# host's own folder.
_IDENTITY_FOLDER = ("lib", "/var/lib/libvirt")

START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0


class LabError(RuntimeError):
    """The lab could not do what was asked; the message says why."""


class VirshError(subprocess.CalledProcessError):
    """A failed ``virsh`` call; unlike CalledProcessError its text includes stderr."""

    def __str__(self) -> str:
        detail = (self.stderr or self.stdout or "").strip()
        return f"{' '.join(map(str, self.cmd))} failed ({self.returncode}): {detail}"


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
    # Folders of the portal that no host may see (hidden by a tmpfs in each host's
    # namespace). Empty: the folder that holds the lab root (the portal's data folder).
    private_paths: tuple[Path, ...] = ()
    # Indexes of TLS-only hosts: their libvirtd listens on the unix socket only (reached
    # over ssh) until certificates are installed in their /etc/pki, then on TLS only
    # (listen_tls = 1, listen_tcp = 0). The lab drives them with virsh inside their
    # namespace (nsenter), never over the network.
    tls_hosts: tuple[int, ...] = ()
    # Small diskless TCG guests started on every host (`lab up --vms N`), named
    # f"{host}-extra-{k}": many VMs to move around for little RAM.
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

    @property
    def ssh_uri(self) -> str:
        """libvirt over ssh; the remote end runs virt-ssh-helper inside this host."""
        return f"qemu+ssh://{self.ssh_user}@{self.address}/system"


# --- paths -----------------------------------------------------------------------


def shared_storage_dir(config: LabConfig) -> Path:
    """The folder every lab host sees at the same path (the lab's "NFS")."""
    return config.root / "shared"


SHARED_STORAGE_DIR = shared_storage_dir  # the name the brief used


def host_dir(config: LabConfig, host: LabHost | str) -> Path:
    return config.root / "hosts" / _name(host)


def private_images_dir(config: LabConfig, host: LabHost | str) -> Path:
    """Real path of a host's private images folder (HOST_IMAGES_DIR inside the host)."""
    return host_dir(config, host) / "lib" / "images"


def console_log_path(config: LabConfig, vm_name: str = LINUX_VM_NAME) -> Path:
    """Serial console of the Linux guest; the same file whichever host runs it."""
    return config.root / "console" / f"{vm_name}.log"


def libvirtd_log_path(config: LabConfig, host: LabHost | str) -> Path:
    return host_dir(config, host) / "log" / "libvirtd.log"


def host_address(config: LabConfig, index: int) -> str:
    return str(ipaddress.IPv4Address(config.first_address) + (index - 1))


def host_name(config: LabConfig, index: int) -> str:
    return f"{config.name_prefix}-{index}"


def ssh_user_for(address: str) -> str:
    # Derived from the address, not the lab root: two lab roots never run on one
    # address at the same time, and a user name must be unique machine-wide.
    return f"labops{int(ipaddress.IPv4Address(address)) & 0xFFFFFF}"


def sudo_user_for(address: str) -> str:
    return f"labsudo{int(ipaddress.IPv4Address(address)) & 0xFFFFFF}"


def _name(host: LabHost | str) -> str:
    return host.name if isinstance(host, LabHost) else host


def _index(config: LabConfig, host: LabHost | str) -> int:
    match = re.fullmatch(re.escape(config.name_prefix) + r"-(\d+)", _name(host))
    if not match:
        raise LabError(f"{_name(host)!r} is not a host of lab prefix {config.name_prefix!r}")
    return int(match.group(1))


def _state(config: LabConfig, index: int) -> Path:
    return host_dir(config, host_name(config, index)) / "state"


def _existing_indexes(config: LabConfig) -> list[int]:
    hosts = config.root / "hosts"
    if not hosts.is_dir():
        return []
    pattern = re.compile(re.escape(config.name_prefix) + r"-(\d+)")
    found = (pattern.fullmatch(entry.name) for entry in hosts.iterdir() if entry.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


def _make_host(config: LabConfig, index: int) -> LabHost:
    address = host_address(config, index)
    password_file = _state(config, index) / "ssh_password"
    password = password_file.read_text().strip() if password_file.exists() else ""
    sudo_file = _state(config, index) / "sudo_password"
    sudo_password = sudo_file.read_text().strip() if sudo_file.exists() else ""
    tls_only = index in config.tls_hosts
    return LabHost(
        name=host_name(config, index),
        address=address,
        libvirt_uri=f"qemu+{'tls' if tls_only else 'tcp'}://{address}/system",
        ssh_port=SSH_PORT,
        ssh_user=ssh_user_for(address),
        ssh_password=password,
        running=_host_running(config, index),
        sudo_user=sudo_user_for(address),
        sudo_password=sudo_password,
        tls_only=tls_only,
        holder_pid_file=str(_state(config, index) / "holder.pid"),
    )


# --- public API ------------------------------------------------------------------


def up(config: LabConfig, hosts: int = 2) -> list[LabHost]:
    """Start hosts 1..N (and the lab VMs); what already runs is left alone."""
    _require_root()
    if hosts < 1:
        raise LabError("a lab needs at least one host")
    if config.start_vms and config.guest_fill_mib + GUEST_OVERHEAD_MIB > config.guest_memory_mib:
        raise LabError(
            f"guest_fill_mib={config.guest_fill_mib} does not fit in "
            f"guest_memory_mib={config.guest_memory_mib} (the kernel needs "
            f"~{GUEST_OVERHEAD_MIB} MiB besides)"
        )
    config.root.mkdir(parents=True, exist_ok=True)
    _reap_spawned()
    with _lab_lock(config):
        images = guest_images.ensure_guest_images(config.image_cache) if config.start_vms else None
        for system_path in BIND_MOUNTS.values():
            # Mount points must exist in the root namespace; they stay empty there.
            Path(system_path).mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privsep dir
        if not Path(BINDFS).exists():
            raise LabError(f"{BINDFS} missing: run scripts/install-system.sh (package bindfs)")
        for kept in (shared_storage_dir(config), config.root / "boot", config.root / "console"):
            kept.mkdir(parents=True, exist_ok=True)  # bind-mounted into every host

        indexes = list(range(1, hosts + 1))
        for index in indexes:
            _prepare_host(config, index)
        for index in indexes:
            _ensure_holder(config, index)
        # Start every daemon first, then wait: the hosts boot in parallel.
        for index in indexes:
            if _daemon_pid(config, index, "libvirtd") is None:
                _holder_request(config, index, "libvirtd")
            if _daemon_pid(config, index, "sshd") is None:
                _holder_request(config, index, "sshd")
        lab_hosts = [_make_host(config, index) for index in indexes]
        for host in lab_hosts:
            _wait_libvirtd(config, host)
            _wait_sshd(config, host)
            _ensure_pools(config, host)
        if images is not None:
            _ensure_vms(config, images)
        if config.extra_vms > 0:
            _ensure_extra_vms(config, lab_hosts)
        return [_make_host(config, index) for index in indexes]


def status(config: LabConfig) -> list[LabHost]:
    """Every host this lab root has ever had, running or not."""
    return [_make_host(config, index) for index in _existing_indexes(config)]


def down(config: LabConfig) -> None:
    """Destroy the domains and stop every process of the lab; leaves no mount and no
    fault (nft table, frozen libvirtd) behind."""
    _require_root()
    if not config.root.exists():
        return
    # First: a cut-off or frozen libvirtd would not answer the virsh calls below.
    from lab import faults  # lab.faults imports this module

    faults.heal_all(config)
    faults.thaw_all(config)
    with _lab_lock(config):
        host_dirs = sorted(p for p in (config.root / "hosts").glob("*") if p.is_dir())
        for hdir in host_dirs:
            _stop_host(hdir)
        _sweep_strays(config.root)
    _reap_spawned()
    # Processes merely working in the root (a shell cd'ed there) are not ours to kill.
    leftovers = lab_processes(config, include_cwd=False)
    if leftovers:
        raise LabError(f"lab processes survived down: {leftovers}")
    mounts = lab_mounts(config)
    if mounts:
        raise LabError(f"lab mounts survived down: {mounts}")
    tables = faults.lab_tables(config)
    if tables:
        raise LabError(f"lab nft tables survived down: {tables}")


def virsh_argv(host: LabHost) -> list[str]:
    """``virsh`` connected to the host, without a command (an interactive shell reads
    commands from its stdin). A TLS-only host is driven from inside its namespace."""
    if host.tls_only:
        pid = str(_read_pid(Path(host.holder_pid_file)) or 0)
        return ["nsenter", "-t", pid, "-m", "virsh", "-q", "-c", "qemu:///system"]
    return ["virsh", "-q", "-c", host.libvirt_uri]


def virsh(
    host: LabHost, *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``virsh -c <host uri> <args>``; raises VirshError (with stderr) if check.
    A TLS-only host is driven from inside its namespace (``qemu:///system``)."""
    cmd = [*virsh_argv(host), *args]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(cmd)} timed out after {timeout:.0f} s") from exc
    if check and result.returncode != 0:
        raise VirshError(result.returncode, cmd, result.stdout, result.stderr)
    return result


def libvirtd_pid(host: LabHost) -> int | None:
    """The pid of the libvirtd listening on the host's address, if any."""
    ports = (LIBVIRT_TLS_PORT,) if host.tls_only else (LIBVIRT_TCP_PORT,)
    for pid in (p for port in ports for p in _listener_pids(host.address, port)):
        if _comm(pid) == "libvirtd":
            return pid
    return None


def kill_libvirtd(host: LabHost) -> None:
    """SIGKILL the host's libvirtd only; its QEMU processes keep running."""
    pid = libvirtd_pid(host)
    if pid is None:
        raise LabError(f"no libvirtd listens on {host.address}:{LIBVIRT_TCP_PORT}")
    os.kill(pid, signal.SIGKILL)
    _wait_until(lambda: not _alive(pid), 10, f"libvirtd {pid} of {host.name} to die")


def start_libvirtd(host: LabHost | str, config: LabConfig) -> None:
    """Start the host's libvirtd again (after kill_libvirtd) in the SAME namespace.

    The holder of the host's namespace starts it, so the new libvirtd sees the same
    /run/libvirt as the QEMUs that outlived the old one and re-attaches to them.
    """
    _require_root()
    index = _index(config, host)
    if _holder_pid(config, index) is None:
        raise LabError(f"{host_name(config, index)} is down (no namespace): run `lab up`")
    with _lab_lock(config):
        if _daemon_pid(config, index, "libvirtd") is None:
            _holder_request(config, index, "libvirtd")
        _wait_libvirtd(config, _make_host(config, index))


def wait_for_console(
    config: LabConfig,
    text: str = guest_images.MARKER_FILLED,
    timeout: float = 180.0,
    vm_name: str = LINUX_VM_NAME,
) -> float:
    """Wait until the guest's serial console shows ``text``; returns seconds waited."""
    path = console_log_path(config, vm_name)
    started = time.monotonic()

    def seen() -> bool:
        return path.exists() and text in path.read_text(errors="replace")

    _wait_until(seen, timeout, f"{text!r} on the console of {vm_name} ({path})")
    return time.monotonic() - started


def lab_processes(config: LabConfig, include_cwd: bool = True) -> list[str]:
    """Live processes of the lab: in a host's namespace, naming the lab root on their
    command line, or (include_cwd) working in it. The caller and its ancestors are
    never listed."""
    root = str(config.root)
    identities = _host_identities(config.root)
    protected = _ancestors(os.getpid())
    found = []
    for pid in _pids():
        if pid in protected or not _alive(pid):
            continue
        cmdline = _cmdline(pid)
        if _mentions(cmdline, config.root) or _identity(pid) in identities:
            found.append(f"{pid} {cmdline}")
        elif include_cwd:
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                continue
            if cwd == root or cwd.startswith(root + "/"):
                found.append(f"{pid} (cwd {cwd}) {cmdline}")
    return found


def lab_mounts(config: LabConfig) -> list[str]:
    """Mounts in this (the root) namespace that mention the lab root."""
    with open("/proc/self/mountinfo") as handle:
        return [line.strip() for line in handle if _mentions(line, config.root)]


# --- host set-up -----------------------------------------------------------------


def _prepare_host(config: LabConfig, index: int) -> None:
    """Folders, configs, identity and ssh user of one host (cheap, idempotent)."""
    name = host_name(config, index)
    address = host_address(config, index)
    hdir = host_dir(config, name)
    state = hdir / "state"
    for sub in (*BIND_MOUNTS, "lib/images"):
        (hdir / sub).mkdir(parents=True, exist_ok=True)
        (hdir / sub).chmod(_BIND_MODES.get(sub, 0o755))
    (hdir / "home").mkdir(exist_ok=True)
    (hdir / "home-sudo").mkdir(exist_ok=True)
    state.mkdir(mode=0o700, parents=True, exist_ok=True)

    host_uuid = _stored(state / "host_uuid", lambda: str(uuid.uuid4()), 0o644)
    password = _stored(state / "ssh_password", lambda: secrets.token_urlsafe(12), 0o600)
    key = state / "ssh_host_ed25519_key"
    if not key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
            check=True,
            capture_output=True,
        )

    tls_only = index in config.tls_hosts
    conf = _libvirtd_conf(address, host_uuid)
    if tls_only:
        conf = conf.replace("listen_tls = 0\nlisten_tcp = 1\n", "listen_tls = 1\nlisten_tcp = 0\n")
    _write_if_changed(hdir / "etc" / "libvirtd.conf", conf)
    _write_if_changed(hdir / "sbin" / "systemctl", _systemctl_shim(state / "control"))
    (hdir / "sbin" / "systemctl").chmod(0o755)
    _write_if_changed(hdir / "etc" / "qemu.conf", _qemu_conf(address))
    _write_if_changed(state / "sshd_config", _sshd_config(address, state))
    sudo_password = _stored(state / "sudo_password", lambda: secrets.token_urlsafe(12), 0o600)
    user, sudo_user = ssh_user_for(address), sudo_user_for(address)
    _ensure_ssh_user(user, password, hdir / "home", f"lab host {name}")
    _ensure_ssh_user(
        sudo_user, sudo_password, hdir / "home-sudo", f"lab host {name} (sudo)", libvirt=False
    )
    # Like an administrator's account on a real host: both may sudo without a password,
    # on this host only (the file is /etc/sudoers.d inside its namespace).
    _write_if_changed(
        hdir / "sudoers" / "lab-users",
        f"# Written by lab.core for {name}.\n{user} ALL=(ALL) NOPASSWD: ALL\n"
        f"{sudo_user} ALL=(ALL) NOPASSWD: ALL\n",
    )
    (hdir / "sudoers" / "lab-users").chmod(0o440)
    shared = shared_storage_dir(config)
    hidden = config.hidden_paths
    # Seen again inside the host, at the same paths: the guests' boot files and
    # consoles, and the host's own folder (its daemons' configs and logs).
    kept = [config.root / "boot", config.root / "console", hdir]
    keep = [[str(p), str(p)] for p in kept if any(p.is_relative_to(h) for h in hidden)]
    # The shared folder (the lab's "NFS") is exported from a staging point inside the
    # hiding tmpfs, so that only the FUSE mount below sits at its path: libvirt takes
    # the first mount it finds at the longest matching path as the disk's filesystem.
    export = shared
    hiding = next((h for h in hidden if shared.is_relative_to(h)), None)
    if hiding is not None:
        export = hiding / ".lab-nfs-export"
        keep.append([str(shared), str(export)])
    spec = {
        "mounts": [[str(hdir / sub), target] for sub, target in BIND_MOUNTS.items()],
        "hide": [str(p) for p in hidden],
        "keep": keep,
        # libvirt only lets a disk migrate without copying when it sits on a shared
        # filesystem (NFS, GlusterFS, ...); on a plain local folder it answers "Migration
        # without shared storage is unsafe". Inside each host the shared folder is
        # therefore a FUSE passthrough of itself whose type reads "fuse.glusterfs",
        # one FUSE daemon per host like one NFS client per real host; the root
        # namespace sees the plain folder. No caching, so hosts see each other's writes.
        "setup": [
            ["mkdir", "-p", str(shared)],
            [
                BINDFS,
                "-o",
                "subtype=glusterfs,fsname=lab-shared,allow_other,"
                "attr_timeout=0,entry_timeout=0,negative_timeout=0",
                str(export),
                str(shared),
            ],
        ],
        "fifo": str(state / "control"),
        "pid_file": str(state / "holder.pid"),
        "commands": {
            "libvirtd": {
                "argv": _libvirtd_argv(hdir, tls_only),
                "log": str(hdir / "log" / "libvirtd.stderr.log"),
            },
            "sshd": {
                "argv": [SSHD, "-D", "-f", str(state / "sshd_config"), "-E", str(_sshd_log(hdir))],
                "log": str(hdir / "log" / "sshd.stderr.log"),
            },
        },
    }
    _write_if_changed(state / "holder.json", json.dumps(spec, indent=2) + "\n")


def _libvirtd_argv(hdir: Path, tls_only: bool) -> list[str]:
    argv = [
        LIBVIRTD,
        "--listen",
        "--config",
        str(hdir / "etc" / "libvirtd.conf"),
        "--pid-file",
        "/run/libvirt/libvirtd.pid",  # inside the namespace: hosts/<n>/run
    ]
    if not tls_only:
        return argv
    # TLS-only: --listen (TLS) only once a server certificate is there; before that
    # the unix socket alone (reached over ssh). Decided at each (re)start.
    without = " ".join(a for a in argv if a != "--listen")
    return [
        "/bin/sh",
        "-c",
        f"if [ -s /etc/pki/libvirt/servercert.pem ]; then exec {' '.join(argv)}; "
        f"else exec {without}; fi",
    ]


def _systemctl_shim(fifo: Path) -> str:
    return f"""#!/bin/sh
# Written by lab.core: a lab host has no systemd. `systemctl restart libvirtd` asks
# the host's holder (FIFO {fifo}) to restart it and waits until the new one answers;
# QEMU guests keep running (libvirtd re-attaches to them).
case "$1 $2" in
  "restart libvirtd"|"restart libvirtd.service"|"restart libvirtd.socket") ;;
  *) echo "lab systemctl: only 'restart libvirtd' is supported here" >&2; exit 2 ;;
esac
old=$(cat /run/libvirt/libvirtd.pid 2>/dev/null)
echo "restart libvirtd" > {fifo}
i=0
while [ $i -lt 600 ]; do
  new=$(cat /run/libvirt/libvirtd.pid 2>/dev/null)
  if [ -n "$new" ] && [ "$new" != "$old" ]; then
    virsh -q -c qemu:///system version >/dev/null 2>&1 && exit 0
  fi
  sleep 0.1
  i=$((i + 1))
done
echo "lab systemctl: libvirtd did not come back within 60 s" >&2
exit 1
"""


def _libvirtd_conf(address: str, host_uuid: str) -> str:
    return f"""# Written by lab.core for the lab host on {address}. Lab only: no auth on TCP.
listen_tls = 0
listen_tcp = 1
listen_addr = "{address}"
tcp_port = "{LIBVIRT_TCP_PORT}"
auth_tcp = "none"
unix_sock_group = "{SSH_GROUP}"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0770"
unix_sock_dir = "/run/libvirt"
# Debian's default for unix sockets is polkit, and there is no polkitd here: the
# group/permissions above are the access control for the ssh user.
auth_unix_ro = "none"
auth_unix_rw = "none"
# Distinct per host: libvirt refuses to migrate to a host with its own UUID.
host_uuid = "{host_uuid}"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
max_clients = 200
max_anonymous_clients = 100
# Lab: a client that stops answering (frozen, cut off) is dropped after ~2 * 2 s of
# silence instead of libvirt's default 5 * 5 s.
keepalive_interval = 2
keepalive_count = 2
"""


def _qemu_conf(address: str) -> str:
    return f"""# Written by lab.core for the lab host on {address}. Lab only.
migration_address = "{address}"
migration_host = "{address}"
# Without virtlogd (not running here) QEMU's stdio goes to plain files.
stdio_handler = "file"
security_driver = "none"
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
cgroup_controllers = [ ]
namespaces = [ ]
# QEMU's incoming migration (and NBD disk copy) ports; lab.faults cuts exactly these.
migration_port_min = {MIGRATION_PORT_MIN}
migration_port_max = {MIGRATION_PORT_MAX}
# Keepalive of this host's p2p connection to a destination libvirtd: a frozen or
# cut-off destination is noticed after ~2 * 2 s (libvirt's default is 5 * 5 s).
keepalive_interval = 2
keepalive_count = 2
"""


def _sshd_config(address: str, state: Path) -> str:
    return f"""# Written by lab.core for the lab host on {address}.
ListenAddress {address}
Port {SSH_PORT}
AddressFamily inet
HostKey {state / "ssh_host_ed25519_key"}
PidFile {state / "sshd.pid"}
UsePAM no
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitEmptyPasswords no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
MaxStartups 100:30:200
MaxSessions 50
Subsystem sftp internal-sftp
"""


def _sshd_log(hdir: Path) -> Path:
    return hdir / "log" / "sshd.log"


def _ensure_ssh_user(
    user: str, password: str, home: Path, comment: str, *, libvirt: bool = True
) -> None:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        groups = ["--groups", SSH_GROUP] if libvirt else []
        subprocess.run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                str(home),
                "--shell",
                "/bin/sh",
                *groups,
                "--comment",
                comment,
                user,
            ],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(user)
    if entry.pw_dir != str(home):
        # The same address may be used by another lab root at another time.
        subprocess.run(["usermod", "--home", str(home), user], check=True, capture_output=True)
    if libvirt and user not in grp.getgrnam(SSH_GROUP).gr_mem:
        subprocess.run(
            ["usermod", "--append", "--groups", SSH_GROUP, user], check=True, capture_output=True
        )
    subprocess.run(["chpasswd"], input=f"{user}:{password}\n", text=True, check=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    home.chmod(0o700)


def _ensure_holder(config: LabConfig, index: int) -> None:
    if _holder_pid(config, index) is not None:
        return
    name = host_name(config, index)
    hdir = host_dir(config, name)
    state = hdir / "state"
    # A namespace without holder (holder crashed): its processes are orphans.
    _kill_all(_host_processes(hdir), signal.SIGKILL)
    address = host_address(config, index)
    for port in (LIBVIRT_TCP_PORT, SSH_PORT):
        owners = _listener_pids(address, port)
        if owners:
            raise LabError(
                f"{address}:{port} is already taken by "
                f"{[_cmdline(pid) for pid in owners]}: another lab on the same address?"
            )
    # /run/libvirt is a tmpfs on a real host: start every namespace with an empty one.
    for entry in (hdir / "run").iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    (state / "holder.pid").unlink(missing_ok=True)
    log = open(state / "holder.log", "ab")
    try:
        holder = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                _python(),
                "-I",
                str(HOLDER_SCRIPT),
                str(state / "holder.json"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd="/",
            start_new_session=True,  # survives the caller and its terminal
        )
    finally:
        log.close()
    _SPAWNED.append(holder)

    def ready() -> bool:
        if holder.poll() is not None:
            raise LabError(f"the holder of {name} exited:\n{_tail(state / 'holder.log')}")
        return _holder_pid(config, index) is not None

    _wait_until(ready, 15, f"the namespace of {name}", lambda: _tail(state / "holder.log"))


# Holders this process started: polled now and then so that a long-lived caller (a test
# session, a worker) reaps them once they exit, instead of keeping zombies.
_SPAWNED: list[subprocess.Popen[bytes]] = []


def _reap_spawned() -> None:
    _SPAWNED[:] = [p for p in _SPAWNED if p.poll() is None]


def _python() -> str:
    # The holder needs only the standard library; any python3 will do.
    if sys.executable and Path(sys.executable).name.startswith("python"):
        return sys.executable
    return shutil.which("python3") or "/usr/bin/python3"


def _holder_request(config: LabConfig, index: int, command: str) -> None:
    fifo = _state(config, index) / "control"
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, f"{command}\n".encode())
    finally:
        os.close(fd)


def _wait_libvirtd(config: LabConfig, host: LabHost) -> None:
    index = _index(config, host)
    started = time.monotonic()
    last_error = ""
    while time.monotonic() - started < START_TIMEOUT_S:
        if host.tls_only:
            ready = (host_dir(config, host) / "run" / "libvirt-sock").exists()
        else:
            ready = _listening(host.address, LIBVIRT_TCP_PORT)
        if ready:
            result = virsh(host, "version", check=False, timeout=30)
            if result.returncode == 0:
                return
            last_error = result.stderr.strip()
        elif time.monotonic() - started > 3 and _daemon_pid(config, index, "libvirtd") is None:
            last_error = "libvirtd is not running"
            break  # it died (the holder had 3 s to start it): waiting won't help
        time.sleep(0.2)
    hdir = host_dir(config, host)
    raise LabError(
        f"libvirtd of {host.name} does not answer on {host.libvirt_uri}: {last_error}\n"
        f"--- {libvirtd_log_path(config, host)} (tail):\n{_tail(libvirtd_log_path(config, host))}"
        f"\n--- stderr (tail):\n{_tail(hdir / 'log' / 'libvirtd.stderr.log')}"
    )


def _wait_sshd(config: LabConfig, host: LabHost) -> None:
    hdir = host_dir(config, host)
    _wait_until(
        lambda: _listening(host.address, SSH_PORT),
        20,
        f"sshd of {host.name} on {host.address}:{SSH_PORT}",
        lambda: _tail(_sshd_log(hdir)) + _tail(hdir / "log" / "sshd.stderr.log"),
    )


def _ensure_pools(config: LabConfig, host: LabHost) -> None:
    pools = {
        PRIVATE_POOL: HOST_IMAGES_DIR,
        SHARED_POOL: str(shared_storage_dir(config)),
    }
    existing = set(virsh(host, "pool-list", "--all", "--name").stdout.split())
    for pool, path in pools.items():
        if pool not in existing:
            virsh(host, "pool-define-as", "--name", pool, "--type", "dir", "--target", path)
            virsh(host, "pool-autostart", pool)
        info = virsh(host, "pool-info", pool).stdout
        if not re.search(r"^State:\s+running", info, re.MULTILINE):
            virsh(host, "pool-start", pool)


# --- lab VMs ---------------------------------------------------------------------


def _ensure_vms(config: LabConfig, images: guest_images.GuestImages) -> None:
    first = _make_host(config, 1)
    # Every running host of this lab: a VM may have been migrated away from lab-1.
    live_hosts = [h for h in status(config) if h.running]
    boot = _install_boot_files(config, images)
    for vm in (LINUX_VM_NAME, TINY_VM_NAME):
        states = {}
        for host in live_hosts:
            result = virsh(host, "domstate", vm, check=False)
            if result.returncode == 0:
                states[host.name] = (host, result.stdout.strip())
        if any(state != "shut off" and state != "crashed" for _, state in states.values()):
            continue  # running (or paused, migrating...) somewhere: leave it alone
        if states:
            # Defined but stopped: start it where it is defined (lab-1 preferred).
            host = states.get(first.name, next(iter(states.values())))[0]
        else:
            host = first
            _define_vm(config, host, vm, boot)
        _start_vm(config, host, vm)


def extra_vm_name(host: LabHost | str, k: int) -> str:
    return f"{_name(host)}-extra-{k}"


def _ensure_extra_vms(config: LabConfig, hosts: list[LabHost]) -> None:
    """Define and start `config.extra_vms` small guests per host, each on its own host
    unless it already runs somewhere (it may have been migrated away). Every host's
    guests start in a thread of their own: starting one costs about a second."""
    live_hosts = [h for h in status(config) if h.running]
    where: dict[str, dict[str, tuple[LabHost, str]]] = {}
    for other in live_hosts:
        for vm, state in _domain_states(other).items():
            where.setdefault(vm, {})[other.name] = (other, state)

    def start_on(host: LabHost) -> None:
        for k in range(1, config.extra_vms + 1):
            vm = extra_vm_name(host, k)
            states = where.get(vm, {})
            if any(state not in ("shut off", "crashed") for _, state in states.values()):
                continue
            if states:
                target = states.get(host.name, next(iter(states.values())))[0]
            else:
                target = host
                _define_xml(config, target, _extra_vm_xml(vm))
            result = virsh(target, "start", vm, check=False)
            if result.returncode != 0:
                raise LabError(f"cannot start {vm} on {target.name}: {result.stderr.strip()}")

    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        for started in [pool.submit(start_on, host) for host in hosts]:
            started.result()


def _domain_states(host: LabHost) -> dict[str, str]:
    """Every domain defined on the host and its state (`virsh list --all`)."""
    states = {}
    for line in virsh(host, "list", "--all").stdout.splitlines():
        fields = line.split(maxsplit=2)
        if len(fields) == 3:
            states[fields[1]] = fields[2].strip()
    return states


def _extra_vm_xml(name: str) -> str:
    # No disk at all: nothing to share or copy, so it migrates live between any hosts.
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <title>lab extra guest</title>
  <description>SeaBIOS without any disk, under TCG: a small VM to move around.</description>
  <memory unit='MiB'>{EXTRA_VM_MEMORY_MIB}</memory>
  <currentMemory unit='MiB'>{EXTRA_VM_MEMORY_MIB}</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
  </os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <devices>
    <emulator>{QEMU}</emulator>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def _install_boot_files(
    config: LabConfig, images: guest_images.GuestImages
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


def _define_vm(config: LabConfig, host: LabHost, vm: str, boot: guest_images.GuestImages) -> None:
    if vm == LINUX_VM_NAME:
        xml = _linux_vm_xml(config, boot)
    else:
        xml = _tiny_vm_xml(config, "kvm" if _kvm_offered(host) else "qemu")
    _define_xml(config, host, xml)


def _define_xml(config: LabConfig, host: LabHost, xml: str) -> None:
    path = host_dir(config, host) / "state" / "define.xml"
    path.write_text(xml)
    try:
        virsh(host, "define", str(path))
    finally:
        path.unlink(missing_ok=True)


def _start_vm(config: LabConfig, host: LabHost, vm: str) -> None:
    if vm == LINUX_VM_NAME:
        _ensure_volume(host, SHARED_POOL, LINUX_VM_DISK, LINUX_VM_DISK_MIB)
        console = console_log_path(config)
        console.parent.mkdir(exist_ok=True)
        console.write_text("")  # fresh boot, fresh console: markers mean this boot
    else:
        _ensure_volume(host, PRIVATE_POOL, TINY_VM_DISK, TINY_VM_DISK_MIB)
    result = virsh(host, "start", vm, check=False)
    if result.returncode != 0 and vm == TINY_VM_NAME and "type='kvm'" in _dumpxml(host, vm):
        # KVM is offered but unusable (nested limits): the tiny guest runs under TCG.
        xml = _dumpxml(host, vm).replace("type='kvm'", "type='qemu'", 1)
        virsh(host, "undefine", vm)
        _define_xml(config, host, xml)
        result = virsh(host, "start", vm, check=False)
    if result.returncode != 0:
        raise LabError(
            f"cannot start {vm} on {host.name}: {result.stderr.strip()}\n"
            f"--- qemu log (tail):\n"
            f"{_tail(host_dir(config, host) / 'log' / 'qemu' / f'{vm}.log')}"
        )
    # Other hosts' pools see new files in the shared folder only after a refresh.
    for other in status(config):
        if other.running:
            virsh(other, "pool-refresh", SHARED_POOL, check=False)


def _dumpxml(host: LabHost, vm: str) -> str:
    return virsh(host, "dumpxml", "--inactive", vm).stdout


def _ensure_volume(host: LabHost, pool: str, name: str, size_mib: int) -> None:
    virsh(host, "pool-refresh", pool, check=False)
    if virsh(host, "vol-info", "--pool", pool, name, check=False).returncode != 0:
        virsh(host, "vol-create-as", pool, name, f"{size_mib}M", "--format", "qcow2")


def _kvm_offered(host: LabHost) -> bool:
    """Never assume KVM: /dev/kvm must open and libvirt must offer the kvm domain type."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    caps = virsh(host, "capabilities", check=False).stdout
    return "<domain type='kvm'" in caps


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


def _linux_vm_xml(config: LabConfig, boot: guest_images.GuestImages) -> str:
    shared = shared_storage_dir(config)
    cmdline = guest_images.kernel_cmdline(config.guest_fill_mib, config.guest_dirty_mib_s)
    return f"""<domain type='qemu'>
  <name>{LINUX_VM_NAME}</name>
  <title>lab Linux guest</title>
  <description>TCG guest whose /init fills {config.guest_fill_mib} MiB and rewrites
{config.guest_dirty_mib_s} MiB/s (Linux under KVM hangs on these machines).</description>
  <memory unit='MiB'>{config.guest_memory_mib}</memory>
  <currentMemory unit='MiB'>{config.guest_memory_mib}</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(boot.kernel))}</kernel>
    <initrd>{escape(str(boot.initrd))}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{QEMU}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='{_disk_cache_mode(shared)}'/>
      <source file={quoteattr(str(shared / LINUX_VM_DISK))}/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'>
      <source path={quoteattr(str(console_log_path(config)))} append='on'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def _tiny_vm_xml(config: LabConfig, domain_type: str) -> str:
    cache = _disk_cache_mode(private_images_dir(config, host_name(config, 1)))
    return f"""<domain type='{domain_type}'>
  <name>{TINY_VM_NAME}</name>
  <title>lab tiny guest</title>
  <description>SeaBIOS without a bootable disk: starts and migrates fast.</description>
  <memory unit='MiB'>{TINY_VM_MEMORY_MIB}</memory>
  <currentMemory unit='MiB'>{TINY_VM_MEMORY_MIB}</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <devices>
    <emulator>{QEMU}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='{cache}'/>
      <source file='{HOST_IMAGES_DIR}/{TINY_VM_DISK}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <memballoon model='none'/>
  </devices>
</domain>
"""


# --- stopping --------------------------------------------------------------------


def _stop_host(hdir: Path) -> None:
    processes = _host_processes(hdir)
    if not processes:
        return
    # Let libvirt record the domains as shut off (persistent definitions stay).
    address = _address_from_conf(hdir)
    holder_pid = _read_pid(hdir / "state" / "holder.pid")
    base = None
    if address and _listening(address, LIBVIRT_TCP_PORT):
        base = ["virsh", "-q", "-c", f"qemu+tcp://{address}/system"]
    elif holder_pid and _in_host(holder_pid, hdir) and (hdir / "run" / "libvirt-sock").exists():
        # A TLS-only host: from inside its namespace.
        base = ["nsenter", "-t", str(holder_pid), "-m", "virsh", "-q", "-c", "qemu:///system"]
    if base is not None:
        listed = subprocess.run(
            [*base, "list", "--name"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        for domain in listed.stdout.split():
            subprocess.run([*base, "destroy", domain], capture_output=True, timeout=30)
    holder = _read_pid(hdir / "state" / "holder.pid")
    daemons = [p for p in _host_processes(hdir) if p != holder]
    _kill_all(daemons, signal.SIGTERM)
    try:
        _wait_until(lambda: not any(map(_alive, daemons)), 3, "daemons to stop")
    except LabError:
        pass
    # The holder goes last: while it lives it reaps the others (no zombies).
    _kill_all([p for p in _host_processes(hdir) if p != holder], signal.SIGKILL)
    _kill_all(_host_processes(hdir), signal.SIGKILL)


def _sweep_strays(root: Path) -> None:
    """Kill leftovers outside any host namespace that name the lab root (e.g. a holder
    whose namespace is already empty)."""
    protected = _ancestors(os.getpid())
    strays = [
        pid
        for pid in _pids()
        if pid not in protected and _alive(pid) and _mentions(_cmdline(pid), root)
    ]
    _kill_all(strays, signal.SIGKILL)


def _mentions(text: str, root: Path) -> bool:
    # A path boundary matters: var/test-lab must not match var/test-lab-self.
    return re.search(re.escape(str(root)) + r"(?=/|\s|$)", text) is not None


def _kill_all(pids: Iterable[int], sig: signal.Signals) -> None:
    pids = list(pids)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    if sig == signal.SIGKILL:
        _wait_until(
            lambda: not any(map(_alive, pids)),
            STOP_TIMEOUT_S,
            f"processes {pids} to die",
        )


def _address_from_conf(hdir: Path) -> str | None:
    conf = hdir / "etc" / "libvirtd.conf"
    if not conf.exists():
        return None
    match = re.search(r'^listen_addr = "([^"]+)"', conf.read_text(), re.MULTILINE)
    return match.group(1) if match else None


# --- processes -------------------------------------------------------------------


def _host_running(config: LabConfig, index: int) -> bool:
    if index in config.tls_hosts:
        return _daemon_pid(config, index, "libvirtd") is not None
    return _daemon_pid(config, index, "libvirtd") is not None and _listening(
        host_address(config, index), LIBVIRT_TCP_PORT
    )


def _holder_pid(config: LabConfig, index: int) -> int | None:
    hdir = host_dir(config, host_name(config, index))
    pid = _read_pid(hdir / "state" / "holder.pid")
    if pid is None or not _alive(pid) or not _in_host(pid, hdir):
        return None
    return pid


def _daemon_pid(config: LabConfig, index: int, comm: str) -> int | None:
    """The host's daemon ``comm``: a direct child of the holder (sshd's per-connection
    children and libvirtd's helpers have other parents)."""
    holder = _holder_pid(config, index)
    if holder is None:
        return None
    for pid in _children(holder):
        if _comm(pid) == comm and _alive(pid):
            return pid
    return None


def _host_processes(hdir: Path) -> list[int]:
    """Every live process whose mount namespace is this host's."""
    try:
        identity = _stat_identity(hdir / _IDENTITY_FOLDER[0])
    except OSError:
        return []
    return [pid for pid in _pids() if _alive(pid) and _identity(pid) == identity]


def _host_identities(root: Path) -> set[tuple[int, int]]:
    identities = set()
    for hdir in (root / "hosts").glob("*"):
        try:
            identities.add(_stat_identity(hdir / _IDENTITY_FOLDER[0]))
        except OSError:
            pass
    return identities


def _in_host(pid: int, hdir: Path) -> bool:
    try:
        return _identity(pid) == _stat_identity(hdir / _IDENTITY_FOLDER[0])
    except OSError:
        return False


def _identity(pid: int) -> tuple[int, int] | None:
    """(dev, inode) of /var/lib/libvirt as process ``pid`` sees it."""
    try:
        # /proc/<pid>/root walks the path through that process's own mounts.
        return _stat_identity(Path(f"/proc/{pid}/root{_IDENTITY_FOLDER[1]}"))
    except OSError:
        return None


def _stat_identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def _pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            raw = handle.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(")") + 2 :].split()


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return [p for p in _pids() if (_stat_fields(p) or ["", ""])[1] == str(pid)]


def _ancestors(pid: int) -> set[int]:
    seen = {pid}
    while pid > 1:
        fields = _stat_fields(pid)
        if fields is None:
            break
        pid = int(fields[1])
        seen.add(pid)
    return seen


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _listen_inodes(address: str, port: int) -> set[str]:
    # /proc/net/tcp prints the address as a little-endian hex word.
    packed = ipaddress.IPv4Address(address).packed[::-1].hex().upper()
    wanted = f"{packed}:{port:04X}"
    inodes = set()
    with open("/proc/net/tcp") as handle:
        next(handle)
        for line in handle:
            fields = line.split()
            if fields[1] == wanted and fields[3] == "0A":  # 0A = LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    return inodes


def _listener_pids(address: str, port: int) -> list[int]:
    """Pids holding a TCP socket that listens on address:port (from /proc/net/tcp)."""
    inodes = _listen_inodes(address, port)
    if not inodes:
        return []
    owners = []
    for pid in _pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    owners.append(pid)
                    break
            except OSError:
                continue
    return owners


def _listening(address: str, port: int) -> bool:
    # Read from /proc/net/tcp: a probing connection would show up as an error in the
    # daemon's log every time.
    return bool(_listen_inodes(address, port))


# --- small helpers ---------------------------------------------------------------


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError(
            "the lab needs root: it uses unshare, bind mounts, useradd and a system-mode "
            "libvirtd per host"
        )


@contextmanager
def _lab_lock(config: LabConfig) -> Iterator[None]:
    with open(config.root / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stored(path: Path, make, mode: int) -> str:
    """A value generated once and kept (host uuid, ssh password)."""
    if path.exists():
        return path.read_text().strip()
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def _write_if_changed(path: Path, content: str) -> None:
    if not path.exists() or path.read_text() != content:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(content)
        os.replace(tmp, path)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} not readable)"


def _wait_until(predicate, timeout: float, what: str, detail=None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            extra = f"\n{detail()}" if detail else ""
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(0.1)
