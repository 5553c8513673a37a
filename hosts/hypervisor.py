"""What hosts.gateway returns and raises, the XML it reads, and domain states: no libvirt."""

from __future__ import annotations

import enum
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

DEFAULT_PORTS = {"tcp": 16509, "tls": 16514, "ssh": 22}


class DomainState(enum.StrEnum):
    """libvirt's virDomainState as the portal names it (vms.models.VMState adds "gone")."""

    NO_STATE = "no_state"
    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTTING_DOWN = "shutting_down"
    SHUT_OFF = "shut_off"
    CRASHED = "crashed"
    SUSPENDED = "suspended"  # VIR_DOMAIN_PMSUSPENDED: the guest sleeps, QEMU runs


S = DomainState
# libvirt's "active": a QEMU process exists (never on both hosts after a migration).
ACTIVE_STATES = frozenset({S.RUNNING, S.BLOCKED, S.PAUSED, S.SHUTTING_DOWN, S.SUSPENDED})
# Shown as up, and preferred among the definitions of one UUID: a pm-suspended guest is not.
UP_STATES = ACTIVE_STATES - {S.SUSPENDED}
EXECUTING_STATES = frozenset({S.RUNNING, S.BLOCKED})  # the guest executes
LIVE_MOVABLE_STATES = frozenset({S.RUNNING, S.PAUSED})  # a live migration moves it from these
# A definition without a QEMU process that a migration may replace.
STOPPED_STATES = frozenset({S.SHUT_OFF, S.CRASHED})
del S

# libvirt's reason for a domain's state (virDomainGetState), by name: "" when unknown.
# Turned off on purpose: by its guest (shutdown) or by a person or tool (destroyed).
STOPPED_BY_CHOICE = frozenset({"shutdown", "destroyed"})
# Paused by a person or tool (virsh suspend), not by a migration or an error.
PAUSED_BY_CHOICE = frozenset({"user"})
# What libvirt says of a domain in post-copy, running or paused, on either host.
POSTCOPY_REASONS = frozenset({"postcopy", "postcopy_failed"})


# A URI's query carries the portal's files (keyfile=, command=, pkipath=): never shown.
_URI_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s?'\"]*)\?[^\s'\",;:)]*")


def for_users(message: str) -> str:
    """`message` without the portal's file paths: URIs without their query, the data
    folder (where the keys, the ssh wrapper and the TLS files are) as `<portal data>`."""
    from django.conf import settings  # here: the rest of this module needs no Django

    message = _URI_QUERY.sub(r"\1", message)
    folders = {str(getattr(settings, name, "")) for name in ("DATA_DIR", "TLS_DIR")}
    for folder in sorted(folders - {""}, key=len, reverse=True):
        message = message.replace(folder, "<portal data>")
    return message


class GatewayError(Exception):
    """A hypervisor operation failed; `str(error)` is meant for the user (and holds no
    portal file path: see for_users)."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(for_users(str(message)), *args)


class HostUnreachable(GatewayError):
    """The host did not answer, refused the connection, or the connection broke."""


class HostRefused(GatewayError):
    """The host's address is outside PORTAL_HOST_NETWORKS: it was not contacted."""


class DomainNotFound(GatewayError):
    """No domain with that UUID or name on the host."""


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
    # The <cpu> of the host's capabilities: what libvirt compares a host-passthrough VM's
    # source against, and what a host group's CPU baseline is computed from.
    cpu_xml: str = ""


@dataclass(frozen=True)
class DiskInfo:
    target: str
    path: str
    device: str
    format: str
    size_bytes: int | None


@dataclass(frozen=True)
class VolumeInfo:
    path: str
    capacity_bytes: int
    allocation_bytes: int  # what the file takes on disk now


@dataclass(frozen=True)
class PoolInfo:
    name: str
    target_path: str
    capacity_bytes: int
    allocation_bytes: int
    available_bytes: int


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
    state_reason: str = ""  # libvirt's reason for the state (STOPPED_BY_CHOICE, ...)


@dataclass(frozen=True)
class DomainEvent:
    """One libvirt domain event, named as libvirt names it (lower case): `kind` is
    "lifecycle" (with `event` "stopped", "started", ... and `detail` "destroyed",
    "shutdown", "migrated", ...), "reboot" or "job_completed"."""

    uuid: str
    name: str
    kind: str
    event: str = ""
    detail: str = ""


@dataclass(frozen=True)
class DirtyRate:
    """libvirt's dirty-rate calculation of a running domain (virDomainStartDirtyRateCalc
    then the `dirtyrate.*` statistics): `measured` once the period has passed."""

    measured: bool
    megabytes_per_second: int | None = None  # MiB/s, as libvirt reports it
    period_s: int | None = None
    mode: str = ""


@dataclass(frozen=True)
class MigrationSpec:
    """What the portal asks libvirt for (gateway makes migrateToURI3's flags of it)."""

    live: bool = True
    undefine_source: bool = False
    copy_storage: bool = False
    tunnelled: bool = False
    auto_converge: bool = False
    allow_postcopy: bool = False
    compressed: bool = False
    compression_method: str = ""  # "" with compressed: libvirt's default, XBZRLE
    compression_level: int | None = None  # for "mt" only
    parallel_connections: int = 0
    bandwidth_mib_s: int = 0
    destination_name: str = ""
    tls: bool = False  # VIR_MIGRATE_TLS: QEMU's stream encrypted (certificates in /etc/pki/qemu)


def version_string(number: int) -> str:
    """libvirt's version number (major * 1,000,000 + minor * 1,000 + micro) as text."""
    major, rest = divmod(number, 1_000_000)
    minor, micro = divmod(rest, 1_000)
    return f"{major}.{minor}.{micro}"


@dataclass(frozen=True)
class CapabilitiesXml:
    """What the host's capabilities XML says (the rest comes from other calls)."""

    arch: str
    cpu_model: str
    cpu_vendor: str
    host_uuid: str
    migration_features: dict
    cpu_xml: str = ""


def capabilities_xml_read(xml: str) -> CapabilitiesXml:
    host = ET.fromstring(xml).find("host")
    cpu = host.find("cpu") if host is not None else None
    migration = host.find("migration_features") if host is not None else None
    features: dict = {}
    if migration is not None:
        features["live"] = migration.find("live") is not None
        transports = migration.find("uri_transports")
        features["uri_transports"] = (
            [t.text for t in transports.findall("uri_transport")] if transports is not None else []
        )
    return CapabilitiesXml(
        arch=(cpu.findtext("arch") if cpu is not None else "") or "",
        cpu_model=(cpu.findtext("model") if cpu is not None else "") or "",
        cpu_vendor=(cpu.findtext("vendor") if cpu is not None else "") or "",
        host_uuid=(host.findtext("uuid") if host is not None else "") or "",
        migration_features=features,
        cpu_xml=ET.tostring(cpu, encoding="unicode").strip() if cpu is not None else "",
    )


@dataclass(frozen=True)
class DomainXml:
    """What a domain's XML says; the disks' sizes are asked of libvirt separately."""

    arch: str
    machine_type: str
    domain_type: str
    has_hostdev: bool
    disks: list[DiskInfo]  # size_bytes None


def domain_xml_read(xml: str) -> DomainXml:
    tree = ET.fromstring(xml)
    os_type = tree.find("os/type")
    disks = []
    for disk in tree.findall("devices/disk"):
        source = disk.find("source")
        path = ""
        if source is not None:
            path = source.get("file") or source.get("dev") or source.get("name") or ""
        target = disk.find("target")
        driver = disk.find("driver")
        disks.append(
            DiskInfo(
                target=target.get("dev", "") if target is not None else "",
                path=path,
                device=disk.get("device", "disk"),
                format=driver.get("type", "") if driver is not None else "",
                size_bytes=None,
            )
        )
    return DomainXml(
        arch=os_type.get("arch", "") if os_type is not None else "",
        machine_type=os_type.get("machine", "") if os_type is not None else "",
        domain_type=tree.get("type", ""),
        has_hostdev=bool(tree.findall("devices/hostdev")),
        disks=disks,
    )


@dataclass(frozen=True)
class CpuToCompare:
    """A domain's <cpu> to compare; `verdict` (ok, reason) when libvirt need not be asked."""

    verdict: tuple[bool, str] | None
    xml: str = ""
    arch: str | None = None
    machine: str | None = None
    virt_type: str | None = None
    # True: `xml` is the source host's CPU (host-passthrough), compared with this host's
    # CPU itself, not with what its hypervisor can give a VM.
    host_cpu: bool = False


def cpu_to_compare(domain_xml: str, source_cpu_xml: str = "") -> CpuToCompare:
    """What to ask the destination's libvirt: the VM's <cpu>; for a host-passthrough VM
    the CPU of its host (`source_cpu_xml`, the capabilities' <cpu>), which the VM sees
    as it is: the destination must provide all of it."""
    tree = ET.fromstring(domain_xml)
    cpu = tree.find("cpu")
    if cpu is None:
        return CpuToCompare((True, "the VM uses the hypervisor's default CPU model"))
    mode = cpu.get("mode")
    if mode == "maximum" or (mode == "host-passthrough" and not source_cpu_xml):
        return CpuToCompare((False, f"the VM uses CPU mode '{mode}', tied to its host's CPU"))
    if mode == "host-passthrough":
        return CpuToCompare(None, source_cpu_xml, host_cpu=True)
    os_type = tree.find("os/type")
    return CpuToCompare(
        None,
        ET.tostring(cpu, encoding="unicode"),
        os_type.get("arch") if os_type is not None else None,
        os_type.get("machine") if os_type is not None else None,
        tree.get("type"),
    )


def pool_target_path(xml: str) -> str:
    return ET.fromstring(xml).findtext("target/path") or ""
