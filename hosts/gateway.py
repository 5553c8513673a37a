"""The hypervisor gateway: the only module of the portal that imports libvirt.

Everything else talks to hosts through the functions and classes here. They open
connections with a timeout, turn libvirt's errors into the portal's own exceptions
with readable messages, and return plain dataclasses, never libvirt objects.
"""

from __future__ import annotations

import socket
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import libvirt

# libvirt prints every error to stderr by default; we raise them as exceptions instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


class GatewayError(Exception):
    """A hypervisor operation failed; `str(error)` is meant for the user."""


class HostUnreachable(GatewayError):
    """The host did not answer, refused the connection, or the connection broke."""


class DomainNotFound(GatewayError):
    """No domain with that UUID or name on the host."""


# libvirt virDomainState -> the portal's state names (vms.models.VMState values).
DOMAIN_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "no_state",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting_down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut_off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}

DEFAULT_PORTS = {"tcp": 16509, "tls": 16514, "ssh": 22}


@dataclass(frozen=True)
class HostCapabilities:
    hostname: str
    arch: str
    cpu_model: str
    cpu_vendor: str
    cpu_count: int
    hypervisor_type: str
    hypervisor_version: str
    libvirt_version: str
    host_uuid: str
    memory_total_bytes: int
    memory_free_bytes: int
    migration_features: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DiskInfo:
    target: str
    path: str
    device: str
    format: str
    size_bytes: int | None


@dataclass(frozen=True)
class DomainInfo:
    uuid: str
    name: str
    state: str
    persistent: bool
    vcpus: int
    memory_kib: int
    max_memory_kib: int
    arch: str
    machine_type: str
    domain_type: str
    disks: list[DiskInfo]
    has_hostdev: bool


def _version_string(number: int) -> str:
    major, rest = divmod(number, 1_000_000)
    minor, micro = divmod(rest, 1_000)
    return f"{major}.{minor}.{micro}"


def _message(error: libvirt.libvirtError) -> str:
    return (error.get_error_message() or str(error)).strip()


def _probe_tcp(address: str, port: int, timeout: float) -> None:
    # libvirt's open has no timeout of its own: a silent host would block for minutes.
    try:
        with socket.create_connection((address, port), timeout=timeout):
            pass
    except TimeoutError as exc:
        raise HostUnreachable(f"{address}:{port} did not answer within {timeout:g} s") from exc
    except OSError as exc:
        raise HostUnreachable(f"cannot connect to {address}:{port}: {exc.strerror or exc}") from exc


def _open_with_timeout(uri: str, timeout: float) -> libvirt.virConnect:
    result: dict = {}

    def target() -> None:
        try:
            result["conn"] = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            result["error"] = exc

    opener = threading.Thread(target=target, daemon=True, name=f"libvirt-open {uri}")
    opener.start()
    opener.join(timeout)
    if opener.is_alive():
        # The thread cannot be killed; it ends by itself when libvirt gives up.
        raise HostUnreachable(f"{uri} did not complete the libvirt handshake within {timeout:g} s")
    if "error" in result:
        raise HostUnreachable(f"cannot open {uri}: {_message(result['error'])}")
    return result["conn"]


class HostConnection:
    """An open libvirt connection to one host."""

    def __init__(self, uri: str, conn: libvirt.virConnect) -> None:
        self.uri = uri
        self._conn = conn

    def close(self) -> None:
        try:
            self._conn.close()
        except libvirt.libvirtError:
            pass

    def capabilities(self) -> HostCapabilities:
        try:
            caps = ET.fromstring(self._conn.getCapabilities())
            node_info = self._conn.getInfo()
            free = self._conn.getFreeMemory()
            hv_type = self._conn.getType()
            hv_version = self._conn.getVersion()
            lib_version = self._conn.getLibVersion()
            hostname = self._conn.getHostname()
        except libvirt.libvirtError as exc:
            raise HostUnreachable(f"reading capabilities of {self.uri}: {_message(exc)}") from exc
        host = caps.find("host")
        cpu = host.find("cpu") if host is not None else None
        migration = host.find("migration_features") if host is not None else None
        features: dict = {}
        if migration is not None:
            features["live"] = migration.find("live") is not None
            transports = migration.find("uri_transports")
            features["uri_transports"] = (
                [t.text for t in transports.findall("uri_transport")]
                if transports is not None
                else []
            )
        return HostCapabilities(
            hostname=hostname,
            arch=(cpu.findtext("arch") if cpu is not None else "") or "",
            cpu_model=(cpu.findtext("model") if cpu is not None else "") or "",
            cpu_vendor=(cpu.findtext("vendor") if cpu is not None else "") or "",
            cpu_count=int(node_info[2]),
            hypervisor_type=hv_type,
            hypervisor_version=_version_string(hv_version),
            libvirt_version=_version_string(lib_version),
            host_uuid=(host.findtext("uuid") if host is not None else "") or "",
            memory_total_bytes=int(node_info[1]) * 1024 * 1024,
            memory_free_bytes=int(free),
            migration_features=features,
        )

    def list_domains(self) -> list[DomainInfo]:
        try:
            domains = self._conn.listAllDomains(0)
        except libvirt.libvirtError as exc:
            raise HostUnreachable(f"listing domains on {self.uri}: {_message(exc)}") from exc
        infos = []
        for dom in domains:
            try:
                infos.append(_domain_info(dom))
            except libvirt.libvirtError as exc:
                # A domain undefined between list and read is simply not there any more.
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue
                raise GatewayError(f"reading domain on {self.uri}: {_message(exc)}") from exc
        return infos

    def domain_info(self, uuid: str) -> DomainInfo:
        try:
            return _domain_info(self._conn.lookupByUUIDString(uuid))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise DomainNotFound(f"no domain with UUID {uuid} on {self.uri}") from exc
            raise GatewayError(f"reading domain {uuid} on {self.uri}: {_message(exc)}") from exc


def _domain_info(dom: libvirt.virDomain) -> DomainInfo:
    state, _reason = dom.state()
    _state, max_mem, mem, vcpus, _cpu_time = dom.info()
    tree = ET.fromstring(dom.XMLDesc(0))
    os_type = tree.find("os/type")
    disks = []
    for disk in tree.findall("devices/disk"):
        source = disk.find("source")
        path = ""
        if source is not None:
            path = source.get("file") or source.get("dev") or source.get("name") or ""
        target = disk.find("target")
        target_dev = target.get("dev", "") if target is not None else ""
        driver = disk.find("driver")
        size = None
        if path and target_dev:
            try:
                size = int(dom.blockInfo(target_dev)[0])
            except libvirt.libvirtError:
                size = None  # e.g. an empty CD-ROM or a file that is missing
        disks.append(
            DiskInfo(
                target=target_dev,
                path=path,
                device=disk.get("device", "disk"),
                format=driver.get("type", "") if driver is not None else "",
                size_bytes=size,
            )
        )
    has_hostdev = bool(tree.findall("devices/hostdev"))
    return DomainInfo(
        uuid=dom.UUIDString(),
        name=dom.name(),
        state=DOMAIN_STATES.get(state, "no_state"),
        persistent=bool(dom.isPersistent()),
        vcpus=int(vcpus),
        memory_kib=int(mem),
        max_memory_kib=int(max_mem),
        arch=os_type.get("arch", "") if os_type is not None else "",
        machine_type=os_type.get("machine", "") if os_type is not None else "",
        domain_type=tree.get("type", ""),
        disks=disks,
        has_hostdev=has_hostdev,
    )


@contextmanager
def connect(uri: str, *, timeout: float) -> Iterator[HostConnection]:
    """Open `uri`, yield a HostConnection, always close it.

    Raises HostUnreachable if the host does not answer within `timeout` seconds.
    """
    parts = urlsplit(uri)
    transport = parts.scheme.partition("+")[2] or "unix"
    if parts.hostname and transport in DEFAULT_PORTS:
        _probe_tcp(parts.hostname, parts.port or DEFAULT_PORTS[transport], timeout)
    conn = _open_with_timeout(uri, timeout)
    try:
        yield HostConnection(uri, conn)
    finally:
        try:
            conn.close()
        except libvirt.libvirtError:
            pass
