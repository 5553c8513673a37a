"""Datacenter faults for the lab hosts: a frozen libvirtd and cut network links.

Two kinds of fault, each with explicit start/stop functions and a context manager
that always undoes it:

* **Frozen libvirtd** (``freeze_libvirtd`` / ``thaw_libvirtd`` / ``frozen_libvirtd``):
  SIGSTOP to the host's libvirtd.  The kernel still completes TCP handshakes into its
  listen backlog, but nothing answers: every libvirt client of that host hangs.  The
  host's QEMU processes are not touched and keep running their guests (and an
  ongoing migration stream), like a hung management daemon on a real host.

* **Cut links** (``cut`` / ``heal`` / ``cut_during``, nftables on loopback): a table
  of its own per (lab host, plane) with one chain on the ``output`` hook that drops TCP
  packets *to* the host's address:

  - ``Plane.DATA``: dports 49152-49215, QEMU's incoming migration (and NBD disk
    copy) ports. A running native migration into that host stalls; libvirt
    connections still work. (A tunnelled migration travels over libvirtd's
    connection instead: unaffected.)
  - ``Plane.CONTROL``: dports 16509 (libvirt tcp) and 22 (ssh). On loopback every
    client's source address is 127.0.0.1, so this cuts *every* client off from that
    host's libvirtd and sshd: the portal, virsh, and the p2p connection another
    host's libvirtd keeps to it during a migration. The host itself keeps running.

  Dropping on ``output`` (not ``input`` of a listener) affects packets of
  connections that are already established too: they stall, then resume through TCP
  retransmission once healed (unless a keepalive gave up on them meanwhile).  Rules
  name only the given lab host's loopback address.

Table names carry the lab's name prefix and the host's address
(``<prefix>_cut_<plane>_127_0_0_N``), so two labs never share a table even when they
use the same prefix.  ``heal_all(config)`` removes every table of one lab;
``lab.lifecycle.down`` calls it (and ``thaw_all``) before it stops anything.

Plain Python, no libvirt bindings: processes are signalled, ``nft`` is run.
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


# Destination ports each plane's cut drops (to the host's address only).
PLANE_PORTS = {
    Plane.DATA: f"{layout.MIGRATION_PORT_MIN}-{layout.MIGRATION_PORT_MAX}",
    Plane.CONTROL: f"{{ {layout.LIBVIRT_TCP_PORT}, {layout.SSH_PORT} }}",
}
_TABLE_RE = re.compile(r"^table\s+(\S+)\s+(\S+)\s*$")


# --- frozen libvirtd -------------------------------------------------------------


def freeze_libvirtd(host: layout.LabHost) -> int:
    """SIGSTOP the host's libvirtd (its QEMUs keep running); returns its pid.

    Waits until the kernel reports the process stopped, so that on return every new
    request to the host really hangs.  Undo with ``thaw_libvirtd`` (or use
    ``frozen_libvirtd``, which always thaws).
    """
    return _signal_libvirtd(_libvirtd_pid(host), signal.SIGSTOP)


def thaw_libvirtd(host: layout.LabHost) -> int:
    """SIGCONT the host's libvirtd; harmless if it is not frozen. Returns its pid."""
    return _signal_libvirtd(_libvirtd_pid(host), signal.SIGCONT)


@contextmanager
def frozen_libvirtd(host: layout.LabHost) -> Iterator[int]:
    """``with frozen_libvirtd(host) as pid:`` the host's libvirtd is stopped inside the
    block and continued when it is left, however it is left."""
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
    """Continue every stopped libvirtd of the lab; returns the pids that were thawed."""
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


# --- cut links ---------------------------------------------------------------------


def cut(host: layout.LabHost, plane: Plane) -> str:
    """Drop TCP to the plane's ports of the host; returns the table name. Idempotent.
    Undo with ``heal`` (or use ``cut_during``)."""
    name = cut_table_name(host, plane)
    address = _lab_address(host.address)
    # One transaction: create-if-missing, delete, re-create. Atomic and idempotent.
    script = (
        f"table {NFT_FAMILY} {name} {{}}\n"
        f"delete table {NFT_FAMILY} {name}\n"
        f"table {NFT_FAMILY} {name} {{\n"
        f"  chain output {{\n"
        f"    type filter hook output priority filter; policy accept;\n"
        f"    ip daddr {address} tcp dport {PLANE_PORTS[plane]} counter drop\n"
        f"  }}\n"
        f"}}\n"
    )
    _nft("-f", "-", input=script)
    return name


def heal(host: layout.LabHost, plane: Plane) -> bool:
    """Remove the plane's cut of the host; True if there was one."""
    if shutil.which(NFT) is None:
        return False
    return _delete_table(cut_table_name(host, plane))


@contextmanager
def cut_during(host: layout.LabHost, plane: Plane) -> Iterator[str]:
    """``with cut_during(host, Plane.DATA):`` the plane of ``host`` is cut inside the
    block, and healed when it is left, however it is left."""
    try:
        yield cut(host, plane)
    finally:
        heal(host, plane)


def cut_table_name(host: layout.LabHost, plane: Plane) -> str:
    """The nft table (family inet) that holds ``plane``'s cut of ``host``."""
    if plane not in PLANE_PORTS:
        raise layout.LabError(f"unknown plane {plane!r}: one of {sorted(PLANE_PORTS)}")
    prefix = _prefix_of(host)
    return f"{prefix}_cut_{plane}_{_lab_address(host.address).replace('.', '_')}"


def lab_tables(config: layout.LabConfig) -> list[str]:
    """Names of the nft tables of this lab that exist now (its hosts' cuts)."""
    if shutil.which(NFT) is None:
        return []  # without nft no table can exist
    wanted = {cut_table_name(host, plane) for host in status(config) for plane in PLANE_PORTS}
    return [name for family, name in list_tables() if family == NFT_FAMILY and name in wanted]


def heal_all(config: layout.LabConfig) -> list[str]:
    """Remove every cut of this lab (every host it ever had); returns the removed tables.

    Tables of other labs, even with the same name prefix, are left alone: they name
    other addresses.
    """
    removed = []
    for name in lab_tables(config):
        if _delete_table(name):
            removed.append(name)
    return removed


def list_tables() -> list[tuple[str, str]]:
    """Every nft table of the machine as (family, name): ``nft list tables``."""
    result = _nft("list", "tables")
    tables = []
    for line in result.stdout.splitlines():
        match = _TABLE_RE.match(line.strip())
        if match:
            tables.append((match.group(1), match.group(2)))
    return tables


def table_ruleset(name: str) -> str:
    """``nft list table inet <name>`` (for checks and error messages)."""
    return _nft("list", "table", NFT_FAMILY, name).stdout


# --- internals ---------------------------------------------------------------------


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
