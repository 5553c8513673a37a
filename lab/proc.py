"""The lab's processes seen from the root namespace (psutil): which host, which listener.

A process belongs to a host when its /var/lib/libvirt (via /proc/<pid>/root) is the host's.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
from collections.abc import Iterable
from pathlib import Path

import psutil

from lab import layout

_IDENTITY_FOLDER = ("lib", "/var/lib/libvirt")
STOP_TIMEOUT_S = 20.0


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return False


def stopped(pid: int) -> bool:
    try:
        status = psutil.Process(pid).status()
    except psutil.Error:
        return False
    return status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)


def comm(pid: int) -> str:
    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return ""


def cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def ancestors(pid: int) -> set[int]:
    try:
        return {pid, *(p.pid for p in psutil.Process(pid).parents())}
    except psutil.Error:
        return {pid}


def listener_pids(address: str, port: int) -> list[int]:
    return sorted(
        {
            c.pid
            for c in psutil.net_connections(kind="tcp4")
            if c.status == psutil.CONN_LISTEN and c.laddr == (address, port) and c.pid
        }
    )


def listening(address: str, port: int) -> bool:
    """Does a TCP socket listen on address:port? From /proc/net/tcp: a probe would log an
    error in the daemon each time, and psutil.net_connections costs ~80 ms."""
    # /proc/net/tcp prints the address as a little-endian hex word; state 0A = LISTEN.
    wanted = f"{ipaddress.IPv4Address(address).packed[::-1].hex().upper()}:{port:04X}"
    with open("/proc/net/tcp") as table:
        return any(
            fields[1] == wanted and fields[3] == "0A"
            for fields in (line.split() for line in list(table)[1:])
        )


def libvirtd_pid(host: layout.LabHost) -> int | None:
    port = layout.LIBVIRT_TLS_PORT if host.tls_only else layout.LIBVIRT_TCP_PORT
    return next((p for p in listener_pids(host.address, port) if comm(p) == "libvirtd"), None)


def holder_pid(config: layout.LabConfig, index: int) -> int | None:
    hdir = layout.host_dir(config, layout.host_name(config, index))
    pid = layout.read_pid(hdir / "state" / "holder.pid")
    if pid is None or not alive(pid) or not in_host(pid, hdir):
        return None
    return pid


def daemon_pid(config: layout.LabConfig, index: int, name: str) -> int | None:
    """The host's daemon ``name``: a direct child of the holder."""
    holder = holder_pid(config, index)
    if holder is None:
        return None
    try:
        children = psutil.Process(holder).children()
    except psutil.Error:
        return None
    return next((c.pid for c in children if comm(c.pid) == name and alive(c.pid)), None)


def host_processes(hdir: Path) -> list[int]:
    try:
        identity = _stat_identity(hdir / _IDENTITY_FOLDER[0])
    except OSError:
        return []
    return [pid for pid in psutil.pids() if alive(pid) and _identity(pid) == identity]


def in_host(pid: int, hdir: Path) -> bool:
    try:
        return _identity(pid) == _stat_identity(hdir / _IDENTITY_FOLDER[0])
    except OSError:
        return False


def lab_processes(config: layout.LabConfig, include_cwd: bool = True) -> list[str]:
    """Live processes of the lab (in a host, naming the root, or working in it), not ours."""
    root = str(config.root)
    identities = set()
    for hdir in (config.root / "hosts").glob("*"):
        try:
            identities.add(_stat_identity(hdir / _IDENTITY_FOLDER[0]))
        except OSError:
            pass
    protected = ancestors(os.getpid())
    found = []
    for pid in psutil.pids():
        if pid in protected or not alive(pid):
            continue
        line = cmdline(pid)
        if mentions(line, config.root) or _identity(pid) in identities:
            found.append(f"{pid} {line}")
        elif include_cwd:
            try:
                cwd = psutil.Process(pid).cwd()
            except psutil.Error:
                continue
            if cwd == root or cwd.startswith(root + "/"):
                found.append(f"{pid} (cwd {cwd}) {line}")
    return found


def lab_mounts(config: layout.LabConfig) -> list[str]:
    with open("/proc/self/mountinfo") as handle:
        return [line.strip() for line in handle if mentions(line, config.root)]


def sweep_strays(root: Path) -> None:
    """Kill leftovers outside any host namespace that name the lab root."""
    protected = ancestors(os.getpid())
    kill_all(
        [
            pid
            for pid in psutil.pids()
            if pid not in protected and alive(pid) and mentions(cmdline(pid), root)
        ],
        signal.SIGKILL,
    )


def mentions(text: str, root: Path) -> bool:
    # A path boundary matters: var/test-lab must not match var/test-lab-self.
    return re.search(re.escape(str(root)) + r"(?=/|\s|$)", text) is not None


def kill_all(pids: Iterable[int], sig: signal.Signals) -> None:
    pids = list(pids)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    if sig == signal.SIGKILL:
        layout.wait_until(
            lambda: not any(map(alive, pids)), STOP_TIMEOUT_S, f"processes {pids} to die"
        )


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
