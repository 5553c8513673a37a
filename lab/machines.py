"""The lab's running hosts: their holder and daemons (start, wait, kill, stop), ``virsh``.

Process tree of one host (nothing is a child of the Python process that ran ``up``)::

    python -I lab/holder.py <spec>     (unshare'd mount namespace; subreaper)
      +- libvirtd --listen             (tcp on <address>:16509, unix socket for ssh)
      |    `- qemu-system-x86_64 ...   (reparented to the holder: libvirt daemonizes it)
      `- sshd -D                       (<address>:22, for qemu+ssh:// via virt-ssh-helper)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from lab import layout, proc

HOLDER_SCRIPT = Path(__file__).resolve().with_name("holder.py")
START_TIMEOUT_S = 90.0


class VirshError(subprocess.CalledProcessError):
    """A failed ``virsh`` call; unlike CalledProcessError its text includes stderr."""

    def __str__(self) -> str:
        detail = (self.stderr or self.stdout or "").strip()
        return f"{' '.join(map(str, self.cmd))} failed ({self.returncode}): {detail}"


def status(config: layout.LabConfig) -> list[layout.LabHost]:
    return [make_host(config, index) for index in layout.existing_indexes(config)]


def make_host(config: layout.LabConfig, index: int) -> layout.LabHost:
    address = layout.host_address(config, index)
    state = layout.state_dir(config, layout.host_name(config, index))

    def secret(name: str) -> str:
        return (state / name).read_text().strip() if (state / name).exists() else ""

    tls_only = index in config.tls_hosts
    return layout.LabHost(
        name=layout.host_name(config, index),
        address=address,
        libvirt_uri=f"qemu+{'tls' if tls_only else 'tcp'}://{address}/system",
        ssh_port=layout.SSH_PORT,
        ssh_user=layout.ssh_user_for(address),
        ssh_password=secret("ssh_password"),
        running=_running(config, index),
        sudo_user=layout.sudo_user_for(address),
        sudo_password=secret("sudo_password"),
        tls_only=tls_only,
        holder_pid_file=str(state / "holder.pid"),
    )


def _running(config: layout.LabConfig, index: int) -> bool:
    if proc.daemon_pid(config, index, "libvirtd") is None:
        return False
    return index in config.tls_hosts or proc.listening(
        layout.host_address(config, index), layout.LIBVIRT_TCP_PORT
    )


def virsh_argv(host: layout.LabHost) -> list[str]:
    """``virsh`` connected to the host, without a command (TLS-only: inside its namespace)."""
    if host.tls_only:
        return _nsenter_virsh(layout.read_pid(Path(host.holder_pid_file)) or 0)
    return ["virsh", "-q", "-c", host.libvirt_uri]


def _nsenter_virsh(holder_pid: int) -> list[str]:
    return ["nsenter", "-t", str(holder_pid), "-m", "virsh", "-q", "-c", "qemu:///system"]


def virsh(
    host: layout.LabHost, *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    cmd = [*virsh_argv(host), *args]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise layout.LabError(f"{' '.join(cmd)} timed out after {timeout:.0f} s") from exc
    if check and result.returncode != 0:
        raise VirshError(result.returncode, cmd, result.stdout, result.stderr)
    return result


# Holders this process started: polled so that a long-lived caller reaps them (no zombies).
_SPAWNED: list[subprocess.Popen[bytes]] = []


def reap_spawned() -> None:
    _SPAWNED[:] = [p for p in _SPAWNED if p.poll() is None]


def ensure_holder(config: layout.LabConfig, index: int) -> None:
    if proc.holder_pid(config, index) is not None:
        return
    name = layout.host_name(config, index)
    hdir = layout.host_dir(config, name)
    state = hdir / "state"
    # A namespace without holder (holder crashed): its processes are orphans.
    proc.kill_all(proc.host_processes(hdir), signal.SIGKILL)
    address = layout.host_address(config, index)
    for port in (layout.LIBVIRT_TCP_PORT, layout.SSH_PORT):
        owners = proc.listener_pids(address, port)
        if owners:
            raise layout.LabError(
                f"{address}:{port} is already taken by "
                f"{[proc.cmdline(pid) for pid in owners]}: another lab on the same address?"
            )
    # /run/libvirt is a tmpfs on a real host: start every namespace with an empty one.
    for entry in (hdir / "run").iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    (state / "holder.pid").unlink(missing_ok=True)
    python = _python()
    with open(state / "holder.log", "ab") as log:
        holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", python, "-I"]
            + [str(HOLDER_SCRIPT), str(state / "holder.json")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd="/",
            start_new_session=True,  # survives the caller and its terminal
        )
    _SPAWNED.append(holder)

    def ready() -> bool:
        if holder.poll() is not None:
            raise layout.LabError(
                f"the holder of {name} exited:\n{layout.tail(state / 'holder.log')}"
            )
        return proc.holder_pid(config, index) is not None

    layout.wait_until(
        ready, 15, f"the namespace of {name}", lambda: layout.tail(state / "holder.log")
    )


def _python() -> str:
    # The holder needs only the standard library; any python3 will do.
    if sys.executable and Path(sys.executable).name.startswith("python"):
        return sys.executable
    return shutil.which("python3") or "/usr/bin/python3"


def ensure_daemon(config: layout.LabConfig, index: int, name: str) -> None:
    if proc.daemon_pid(config, index, name) is not None:
        return
    fd = os.open(
        layout.state_dir(config, layout.host_name(config, index)) / "control",
        os.O_WRONLY | os.O_NONBLOCK,
    )
    try:
        os.write(fd, f"{name}\n".encode())
    finally:
        os.close(fd)


def wait_libvirtd(config: layout.LabConfig, host: layout.LabHost) -> None:
    index = layout.index_of(config, host)
    started = time.monotonic()
    last_error = ""
    while time.monotonic() - started < START_TIMEOUT_S:
        if host.tls_only:
            ready = (layout.host_dir(config, host) / "run" / "libvirt-sock").exists()
        else:
            ready = proc.listening(host.address, layout.LIBVIRT_TCP_PORT)
        if ready:
            result = virsh(host, "version", check=False, timeout=30)
            if result.returncode == 0:
                return
            last_error = result.stderr.strip()
        elif time.monotonic() - started > 3 and proc.daemon_pid(config, index, "libvirtd") is None:
            last_error = "libvirtd is not running"
            break  # it died (the holder had 3 s to start it): waiting won't help
        time.sleep(0.2)
    log = layout.libvirtd_log_path(config, host)
    raise layout.LabError(
        f"libvirtd of {host.name} does not answer on {host.libvirt_uri}: {last_error}\n"
        f"--- {log} (tail):\n{layout.tail(log)}\n--- stderr (tail):\n"
        f"{layout.tail(layout.host_dir(config, host) / 'log' / 'libvirtd.stderr.log')}"
    )


def wait_sshd(config: layout.LabConfig, host: layout.LabHost) -> None:
    hdir = layout.host_dir(config, host)
    layout.wait_until(
        lambda: proc.listening(host.address, layout.SSH_PORT),
        20,
        f"sshd of {host.name} on {host.address}:{layout.SSH_PORT}",
        lambda: layout.tail(layout.sshd_log_path(hdir))
        + layout.tail(hdir / "log" / "sshd.stderr.log"),
    )


def kill_libvirtd(host: layout.LabHost) -> None:
    """SIGKILL the host's libvirtd only; its QEMU processes keep running."""
    pid = proc.libvirtd_pid(host)
    if pid is None:
        raise layout.LabError(f"no libvirtd listens on {host.address}:{layout.LIBVIRT_TCP_PORT}")
    os.kill(pid, signal.SIGKILL)
    layout.wait_until(lambda: not proc.alive(pid), 10, f"libvirtd {pid} of {host.name} to die")


def start_libvirtd(host: layout.LabHost | str, config: layout.LabConfig) -> None:
    """Start libvirtd again in the SAME namespace (via its holder): it re-attaches to QEMUs."""
    layout.require_root()
    index = layout.index_of(config, host)
    if proc.holder_pid(config, index) is None:
        raise layout.LabError(
            f"{layout.host_name(config, index)} is down (no namespace): run `lab up`"
        )
    with layout.lab_lock(config):
        ensure_daemon(config, index, "libvirtd")
        wait_libvirtd(config, make_host(config, index))


def restart_libvirtd(host: layout.LabHost, config: layout.LabConfig) -> None:
    """A clean restart, as `systemctl restart libvirtd` does: SIGTERM, wait until it has
    exited, start it again in the same namespace. Its QEMUs keep running meanwhile."""
    pid = proc.libvirtd_pid(host)
    if pid is None:
        raise layout.LabError(f"no libvirtd listens on {host.address}:{layout.LIBVIRT_TCP_PORT}")
    os.kill(pid, signal.SIGTERM)
    layout.wait_until(lambda: not proc.alive(pid), 30, f"libvirtd {pid} of {host.name} to exit")
    start_libvirtd(host, config)


def qemu_pid(config: layout.LabConfig, host: layout.LabHost, uuid: str) -> int | None:
    """The QEMU process of domain `uuid` on `host` (libvirt gives QEMU `-uuid <uuid>`)."""
    hdir = layout.host_dir(config, host)
    for pid in proc.host_processes(hdir):
        if proc.comm(pid).startswith("qemu-system") and f"-uuid {uuid}" in proc.cmdline(pid):
            return pid
    return None


def kill_qemu(config: layout.LabConfig, host: layout.LabHost, uuid: str) -> int:
    """SIGKILL the domain's QEMU on `host`, as a crash of that host would end it."""
    pid = qemu_pid(config, host, uuid)
    if pid is None:
        raise layout.LabError(f"no QEMU of {uuid} runs on {host.name}")
    os.kill(pid, signal.SIGKILL)
    layout.wait_until(lambda: not proc.alive(pid), 10, f"QEMU {pid} on {host.name} to die")
    return pid


# The guest's own power-off and reboot, through its keyboard: Magic SysRq (Alt+SysRq+O /
# B). The lab guest is a busybox initramfs with no ACPI daemon, so `virsh shutdown` /
# `virsh reboot` (ACPI) would go unanswered; the Debian cloud kernel has the i8042 keyboard
# built in and allows SysRq poweroff and reboot by default (0x1b6). Libvirt then names a
# power-off `shutdown`, the reason a guest's own `poweroff` gets, not `destroyed`.
# The keys go through QEMU's monitor (HMP `sendkey`), not `virsh send-key`: libvirt 9.0
# refuses send-key while a migration job holds the domain ("cannot acquire state change
# lock"), and a guest powers off or reboots mid-migration when it likes.
def guest_power_off(host: layout.LabHost, domain: str) -> None:
    _guest_sysrq(host, domain, "o")


def guest_reboot(host: layout.LabHost, domain: str) -> None:
    """The guest resets itself (SysRq B: an immediate reboot); the QEMU process stays."""
    _guest_sysrq(host, domain, "b")


def _guest_sysrq(host: layout.LabHost, domain: str, key: str) -> None:
    virsh(host, "qemu-monitor-command", domain, "--hmp", f"sendkey alt-sysrq-{key}")


GUEST_CHECK_MARKER = "LAB-GUEST memory check "


def guest_memory_check(
    config: layout.LabConfig, host: layout.LabHost, domain: str, timeout: float = 60
) -> str:
    """Ask the lab Linux guest on `host` to verify its never-rewritten region against the
    checksum it took at boot (an NMI; its /init answers on the console within a second or
    so); returns the answer line ("... ok ..." or "... FAILED ...")."""
    console = layout.console_log_path(config, domain)
    start = console.stat().st_size if console.exists() else 0
    virsh(host, "inject-nmi", domain)
    found: list[str] = []

    def answered() -> bool:
        with console.open("rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
        # Whole lines only: the serial console writes a byte at a time.
        whole = text.splitlines()[: text.count("\n")]
        found[:] = [line for line in whole if GUEST_CHECK_MARKER in line]
        return bool(found)

    layout.wait_until(answered, timeout, f"the memory check of {domain} on {console}")
    return found[0].strip()


def stop_host(hdir: Path) -> None:
    """Destroy the host's running domains (kept defined), stop its daemons, then its holder."""
    members = proc.host_processes(hdir)
    if not members:
        return
    holder = layout.read_pid(hdir / "state" / "holder.pid")
    address = _address_from_conf(hdir)
    base = None
    if address and proc.listening(address, layout.LIBVIRT_TCP_PORT):
        base = ["virsh", "-q", "-c", f"qemu+tcp://{address}/system"]
    elif holder and proc.in_host(holder, hdir) and (hdir / "run" / "libvirt-sock").exists():
        base = _nsenter_virsh(holder)  # a TLS-only host
    if base is not None:
        listed = subprocess.run(
            [*base, "list", "--name"], capture_output=True, text=True, timeout=30
        )
        for domain in listed.stdout.split():
            subprocess.run([*base, "destroy", domain], capture_output=True, timeout=30)
    daemons = [p for p in proc.host_processes(hdir) if p != holder]
    proc.kill_all(daemons, signal.SIGTERM)
    try:
        layout.wait_until(lambda: not any(map(proc.alive, daemons)), 3, "daemons to stop")
    except layout.LabError:
        pass
    # The holder goes last: while it lives it reaps the others (no zombies).
    proc.kill_all([p for p in proc.host_processes(hdir) if p != holder], signal.SIGKILL)
    proc.kill_all(proc.host_processes(hdir), signal.SIGKILL)


def _address_from_conf(hdir: Path) -> str | None:
    conf = hdir / "etc" / "libvirtd.conf"
    if not conf.exists():
        return None
    for line in conf.read_text().splitlines():
        if line.startswith('listen_addr = "'):
            return line.split('"')[1]
    return None
