"""Datacenter faults for the lab hosts, each with start/stop and an always-undoing context.

A frozen libvirtd (SIGSTOP) hangs every client while its QEMUs carry on. A cut (nftables
on the ``output`` hook, so established connections stall too) drops TCP to the host's
migration ports (DATA) or libvirt and ssh (CONTROL); tables are named per lab and host.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from lab import layout, proc
from lab.machines import status

NFT = "nft"
NFT_FAMILY = "inet"


class Plane(enum.StrEnum):
    DATA = "data"  # QEMU's migration streams into the host
    CONTROL = "ctrl"  # libvirtd and sshd of the host
    # QEMU's migration streams into the host, broken: the open ones aborted (both ends
    # get an error at once) and new ones reset until healed. A drop only stalls TCP, and
    # a post-copy destination blocked on a page sends nothing, so it would never know.
    LINK = "link"


PLANE_PORTS = {
    Plane.DATA: f"{layout.MIGRATION_PORT_MIN}-{layout.MIGRATION_PORT_MAX}",
    Plane.CONTROL: f"{{ {layout.LIBVIRT_TCP_PORT}, {layout.SSH_PORT} }}",
    Plane.LINK: f"{layout.MIGRATION_PORT_MIN}-{layout.MIGRATION_PORT_MAX}",
}
_TABLE_RE = re.compile(r"^table\s+(\S+)\s+(\S+)\s*$")


def freeze_libvirtd(host: layout.LabHost) -> int:
    """SIGSTOP the host's libvirtd and wait until it is stopped; returns its pid."""
    return _signal_libvirtd(_libvirtd_pid(host), signal.SIGSTOP)


def thaw_libvirtd(host: layout.LabHost) -> int:
    """SIGCONT the host's libvirtd; harmless if it is not frozen. Returns its pid."""
    return _signal_libvirtd(_libvirtd_pid(host), signal.SIGCONT)


@contextmanager
def frozen_libvirtd(host: layout.LabHost) -> Iterator[int]:
    """The host's libvirtd stopped inside the block, continued however it is left."""
    pid = _libvirtd_pid(host)
    try:
        yield _signal_libvirtd(pid, signal.SIGSTOP)
    finally:
        # The pid, not a fresh lookup: it names the process we stopped.
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def thaw_all(config: layout.LabConfig) -> list[int]:
    thawed = []
    for host in status(config):
        pid = proc.libvirtd_pid(host)
        if pid is not None and proc.stopped(pid):
            os.kill(pid, signal.SIGCONT)
            thawed.append(pid)
    return thawed


def _signal_libvirtd(pid: int, sig: signal.Signals) -> int:
    os.kill(pid, sig)
    stop = sig == signal.SIGSTOP
    layout.wait_until(
        lambda: proc.stopped(pid) == stop,
        5,
        f"libvirtd {pid} to {'stop' if stop else 'continue'}",
        interval=0.02,
    )
    return pid


def cut(host: layout.LabHost, plane: Plane) -> str:
    """Drop (LINK: reset) TCP to the plane's ports of the host (idempotent); the table."""
    name = cut_table_name(host, plane)
    address = _lab_address(host.address)
    ports = PLANE_PORTS[plane]
    rules = f"    ip daddr {address} tcp dport {ports} counter drop\n"
    if plane == Plane.LINK:
        # The resets it sends (and the aborted connections' ones) must pass.
        rst = "tcp flags & (fin | rst) == 0"
        rules = (
            f"    ip daddr {address} tcp dport {ports} {rst} counter reject with tcp reset\n"
            f"    ip saddr {address} tcp sport {ports} {rst} counter reject with tcp reset\n"
        )
    # One transaction: create-if-missing, delete, re-create. Atomic and idempotent.
    script = (
        f"table {NFT_FAMILY} {name} {{}}\n"
        f"delete table {NFT_FAMILY} {name}\n"
        f"table {NFT_FAMILY} {name} {{\n"
        f"  chain output {{\n"
        f"    type filter hook output priority filter; policy accept;\n"
        f"{rules}"
        f"  }}\n"
        f"}}\n"
    )
    _nft("-f", "-", input=script)
    if plane == Plane.LINK:
        for end in ("dst", "src"):  # both ends, so each learns of it at once
            _abort_connections(address, end, layout.MIGRATION_PORT_MIN, layout.MIGRATION_PORT_MAX)
    return name


def _abort_connections(address: str, end: str, port_min: int, port_max: int) -> None:
    """Abort the established TCP connections whose `end` ("dst" or "src") is `address`
    on those ports (the kernel's sock_destroy, as `ss -K`): ECONNABORTED here, a reset
    to the peer."""
    port = "dport" if end == "dst" else "sport"
    ports = [port, ">=", f":{port_min}", "and", port, "<=", f":{port_max}"]
    result = subprocess.run(
        ["ss", "-K", "-t", end, address, "and", *ports],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:
        raise layout.LabError(f"ss -K {end} {address} failed: {result.stderr.strip()}")


def heal(host: layout.LabHost, plane: Plane) -> bool:
    if shutil.which(NFT) is None:
        return False
    return _delete_table(cut_table_name(host, plane))


@contextmanager
def cut_during(host: layout.LabHost, plane: Plane) -> Iterator[str]:
    """The plane of ``host`` cut inside the block, healed however it is left."""
    try:
        yield cut(host, plane)
    finally:
        heal(host, plane)


def cut_table_name(host: layout.LabHost, plane: Plane) -> str:
    if plane not in PLANE_PORTS:
        raise layout.LabError(f"unknown plane {plane!r}: one of {sorted(PLANE_PORTS)}")
    prefix = _prefix_of(host)
    return f"{prefix}_cut_{plane}_{_lab_address(host.address).replace('.', '_')}"


def lab_tables(config: layout.LabConfig) -> list[str]:
    if shutil.which(NFT) is None:
        return []  # without nft no table can exist
    wanted = {cut_table_name(host, plane) for host in status(config) for plane in PLANE_PORTS}
    return [name for family, name in list_tables() if family == NFT_FAMILY and name in wanted]


def heal_all(config: layout.LabConfig) -> list[str]:
    """Remove every cut of this lab (not other labs'); returns the removed tables."""
    return [name for name in lab_tables(config) if _delete_table(name)]


def list_tables() -> list[tuple[str, str]]:
    matches = (_TABLE_RE.match(line.strip()) for line in _nft("list", "tables").stdout.splitlines())
    return [(m.group(1), m.group(2)) for m in matches if m]


def table_ruleset(name: str) -> str:
    return _nft("list", "table", NFT_FAMILY, name).stdout


def _delete_table(name: str) -> bool:
    if (NFT_FAMILY, name) not in list_tables():
        return False
    result = _nft("delete", "table", NFT_FAMILY, name, check=False)
    if result.returncode != 0 and (NFT_FAMILY, name) in list_tables():
        raise layout.LabError(f"cannot delete nft table {name}: {result.stderr.strip()}")
    return True


def _nft(*args: str, input: str | None = None, check: bool = True):
    if shutil.which(NFT) is None:
        raise layout.LabError("nft missing: run scripts/install-system.sh (package nftables)")
    result = subprocess.run([NFT, *args], input=input, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise layout.LabError(
            f"nft {' '.join(args)} failed: {result.stderr.strip()}\n{input or ''}"
        )
    return result


def _lab_address(address: str) -> str:
    """The host's address, checked to be a loopback one: no rule names anything else."""
    parsed = ipaddress.IPv4Address(address)
    if not parsed.is_loopback:
        raise layout.LabError(f"{address} is not a loopback lab address: refusing to cut it")
    return str(parsed)


def _prefix_of(host: layout.LabHost) -> str:
    prefix, sep, index = host.name.rpartition("-")
    if not sep or not index.isdigit() or not prefix:
        raise layout.LabError(f"{host.name!r} is not a lab host name (<prefix>-<n>)")
    # nft identifiers: letters, digits, '_' (others would need quoting).
    name = re.sub(r"[^A-Za-z0-9_]", "_", prefix)
    return name if name[0].isalpha() else f"lab_{name}"


def _libvirtd_pid(host: layout.LabHost) -> int:
    pid = proc.libvirtd_pid(host)
    if pid is None:
        raise layout.LabError(f"no libvirtd listens on {host.address}:{layout.LIBVIRT_TCP_PORT}")
    return pid
