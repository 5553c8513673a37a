"""The hypervisor gateway: the only module of the portal that imports libvirt.

Everything else talks to hosts through the functions and classes here. They open
connections with a timeout, turn libvirt's errors into the portal's own exceptions
with readable messages, and return plain dataclasses, never libvirt objects.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import libvirt

from hosts.networks import AddressRefused, connection_check

# libvirt prints every error to stderr by default; we raise them as exceptions instead.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

logger = logging.getLogger(__name__)

# Client keepalive (what bounds every call on an open connection): a host that stops
# answering is given up after about interval x (count + 1) seconds.
KEEPALIVE_INTERVAL_S = int(os.environ.get("PORTAL_LIBVIRT_KEEPALIVE_INTERVAL_S", "5"))
KEEPALIVE_COUNT = int(os.environ.get("PORTAL_LIBVIRT_KEEPALIVE_COUNT", "3"))

_event_loop_lock = threading.Lock()
_event_loop_pid: int | None = None


def _run_event_loop() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except libvirt.libvirtError:  # never let the loop die: keepalive depends on it
            logger.exception("libvirt event loop")


def _ensure_event_loop() -> None:
    """libvirt sends keepalive probes only from a client event loop: one thread per
    process (a forked worker does not inherit its parent's thread, so it starts its own)."""
    global _event_loop_pid
    with _event_loop_lock:
        if _event_loop_pid == os.getpid():
            return
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True).start()
        _event_loop_pid = os.getpid()


def keepalive_bound_s() -> float:
    """The longest a call on an open connection to a silent host can block."""
    return float(KEEPALIVE_INTERVAL_S * (KEEPALIVE_COUNT + 1))


class GatewayError(Exception):
    """A hypervisor operation failed; `str(error)` is meant for the user."""


class HostUnreachable(GatewayError):
    """The host did not answer, refused the connection, or the connection broke."""


class HostRefused(GatewayError):
    """The host's address is outside PORTAL_HOST_NETWORKS: it was not contacted."""


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
        self.broken = False

    def mark_broken(self) -> None:
        """A call reported the host unreachable: a pooled connection is not reused."""
        self.broken = True

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

    # --- one domain, by UUID ------------------------------------------------------

    def _lookup(self, uuid: str) -> libvirt.virDomain:
        try:
            return self._conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise DomainNotFound(f"no domain with UUID {uuid} on {self.uri}") from exc
            raise _translate(exc, f"looking up {uuid} on {self.uri}") from exc

    def _call(self, uuid: str, what: str, fn, *args):
        dom = self._lookup(uuid)
        try:
            return fn(dom, *args)
        except libvirt.libvirtError as exc:
            raise _translate(exc, f"{what} {dom.name()} on {self.uri}") from exc

    def find_domain(self, *, uuid: str | None = None, name: str | None = None) -> DomainInfo | None:
        """The domain with this UUID or name, or None if the host has none."""
        try:
            dom = self._conn.lookupByUUIDString(uuid) if uuid else self._conn.lookupByName(name)
            return _domain_info(dom)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise _translate(exc, f"looking up a domain on {self.uri}") from exc

    def domain_xml(self, uuid: str, *, inactive: bool = False) -> str:
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        return self._call(uuid, "reading the XML of", lambda d: d.XMLDesc(flags))

    def job_stats(self, uuid: str) -> dict:
        """The running job's statistics exactly as libvirt reports them ({} if none)."""
        stats = self._call(uuid, "reading the job of", lambda d: d.jobStats(0))
        return stats if stats.get("type", 0) != libvirt.VIR_DOMAIN_JOB_NONE else {}

    def completed_job_stats(self, uuid: str) -> dict:
        """Statistics of the last completed job (on a migration's destination)."""
        return self._call(
            uuid,
            "reading the completed job of",
            # KEEP_COMPLETED: reading must not erase them for other readers (virsh).
            lambda d: d.jobStats(
                libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED
            ),
        )

    def abort_job(self, uuid: str) -> None:
        self._call(uuid, "aborting the job of", lambda d: d.abortJob())

    def set_max_downtime(self, uuid: str, milliseconds: int) -> None:
        self._call(uuid, "setting max downtime of", lambda d: d.migrateSetMaxDowntime(milliseconds))

    def max_downtime(self, uuid: str) -> int:
        """The running migration's max downtime as libvirt has it (ms)."""
        return int(
            self._call(uuid, "reading max downtime of", lambda d: d.migrateGetMaxDowntime(0))
        )

    def set_max_speed(self, uuid: str, mib_per_s: int) -> None:
        self._call(uuid, "setting bandwidth of", lambda d: d.migrateSetMaxSpeed(mib_per_s))

    def start_postcopy(self, uuid: str) -> None:
        self._call(uuid, "switching to post-copy", lambda d: d.migrateStartPostCopy(0))

    def destroy(self, uuid: str) -> None:
        self._call(uuid, "stopping", lambda d: d.destroy())

    def undefine(self, uuid: str) -> None:
        flags = libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
        self._call(uuid, "undefining", lambda d: d.undefineFlags(flags))

    def resume(self, uuid: str) -> None:
        self._call(uuid, "resuming", lambda d: d.resume())

    def start(self, uuid: str) -> None:
        self._call(uuid, "starting", lambda d: d.create())

    def migrate(self, uuid: str, *, destination_uri: str, spec: MigrationSpec) -> None:
        """Peer-to-peer migration to `destination_uri`; blocks until libvirt is done."""
        flags, params = spec.flags_and_params()
        self._call(
            uuid,
            "migrating",
            lambda d: d.migrateToURI3(destination_uri, params, flags),
        )

    # --- host-level checks ----------------------------------------------------------

    def compare_cpu(self, *, domain_xml: str) -> tuple[bool, str]:
        """Would this host accept the domain's CPU definition? (ok, reason)"""
        tree = ET.fromstring(domain_xml)
        cpu = tree.find("cpu")
        if cpu is None or cpu.get("mode") in ("host-passthrough", "maximum"):
            if cpu is not None:
                return False, f"the VM uses CPU mode '{cpu.get('mode')}', tied to its host's CPU"
            return True, "the VM uses the hypervisor's default CPU model"
        os_type = tree.find("os/type")
        try:
            result = self._conn.compareHypervisorCPU(
                None,
                os_type.get("arch") if os_type is not None else None,
                os_type.get("machine") if os_type is not None else None,
                tree.get("type"),
                ET.tostring(cpu, encoding="unicode"),
                0,
            )
        except libvirt.libvirtError as exc:
            return False, _message(exc)
        if result == libvirt.VIR_CPU_COMPARE_INCOMPATIBLE:
            return False, "the destination's CPU cannot run the VM's CPU model"
        return True, "the destination's CPU accepts the VM's CPU model"

    def volume_exists(self, path: str) -> bool:
        """Is `path` a storage volume of one of this host's storage pools?"""
        return self.volume(path) is not None

    def _refreshed_pools(self) -> list[libvirt.virStoragePool]:
        pools = self._conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
        for pool in pools:
            try:
                pool.refresh(0)
            except libvirt.libvirtError:
                pass  # a pool busy with another refresh is still listable
        return pools

    def volume(self, path: str) -> VolumeInfo | None:
        """The storage volume at `path` (pools refreshed first), or None if no pool has it."""
        return self.volumes([path])[path]

    def volumes(self, paths: list[str]) -> dict[str, VolumeInfo | None]:
        """`volume` for several paths, the pools refreshed once (a refresh rescans the
        pool's folder: the pre-checks' largest cost on a pool of many images)."""
        found: dict[str, VolumeInfo | None] = {}
        try:
            self._refreshed_pools()
            for path in paths:
                try:
                    _type, capacity, allocation = self._conn.storageVolLookupByPath(path).info()
                    found[path] = VolumeInfo(path, int(capacity), int(allocation))
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                        raise
                    found[path] = None
        except libvirt.libvirtError as exc:
            raise _translate(exc, f"looking up volumes on {self.uri}") from exc
        return found

    def pool_for_directory(self, directory: str) -> PoolInfo | None:
        """The active storage pool whose target is `directory` (where libvirt creates a
        copied disk), refreshed, or None."""
        wanted = os.path.normpath(directory)
        try:
            for pool in self._refreshed_pools():
                target = ET.fromstring(pool.XMLDesc(0)).findtext("target/path") or ""
                if target and os.path.normpath(target) == wanted:
                    _state, capacity, allocation, available = pool.info()
                    return PoolInfo(
                        pool.name(), target, int(capacity), int(allocation), int(available)
                    )
        except libvirt.libvirtError as exc:
            raise _translate(exc, f"reading storage pools of {self.uri}") from exc
        return None


@dataclass(frozen=True)
class MigrationSpec:
    """What the portal asks libvirt for; turned into virDomainMigrateToURI3 arguments here."""

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

    def flags_and_params(self) -> tuple[int, dict]:
        flags = (
            libvirt.VIR_MIGRATE_PEER2PEER
            | libvirt.VIR_MIGRATE_PERSIST_DEST
            | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
        )
        if self.live:
            flags |= libvirt.VIR_MIGRATE_LIVE
        else:
            flags |= libvirt.VIR_MIGRATE_OFFLINE
        if self.undefine_source:
            flags |= libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        if self.copy_storage:
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
        if self.tunnelled:
            flags |= libvirt.VIR_MIGRATE_TUNNELLED
        if self.auto_converge:
            flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
        if self.allow_postcopy:
            flags |= libvirt.VIR_MIGRATE_POSTCOPY
        if self.compressed:
            flags |= libvirt.VIR_MIGRATE_COMPRESSED
        if self.tls:
            flags |= libvirt.VIR_MIGRATE_TLS
        params: dict = {}
        if self.compressed and self.compression_method:
            params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION] = self.compression_method
        if self.compressed and self.compression_level is not None:
            params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION_MT_LEVEL] = self.compression_level
        if self.parallel_connections:
            flags |= libvirt.VIR_MIGRATE_PARALLEL
            params[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = self.parallel_connections
        if self.bandwidth_mib_s:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = self.bandwidth_mib_s
        if self.destination_name:
            params[libvirt.VIR_MIGRATE_PARAM_DEST_NAME] = self.destination_name
        return flags, params


_UNREACHABLE_CODES = {
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_AUTH_FAILED,
}


def _translate(exc: libvirt.libvirtError, doing: str) -> GatewayError:
    message = f"{doing}: {_message(exc)}"
    if exc.get_error_code() in _UNREACHABLE_CODES:
        return HostUnreachable(message)
    return GatewayError(message)


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


def _open(uri: str, timeout: float) -> libvirt.virConnect:
    """Open `uri` within `timeout` s (TCP probe, then libvirt's handshake in a thread),
    with client keepalive set: what bounds every later call on it."""
    parts = urlsplit(uri)
    transport = parts.scheme.partition("+")[2] or "unix"
    if parts.hostname and transport in DEFAULT_PORTS:
        port = parts.port or DEFAULT_PORTS[transport]
        try:
            connection_check(parts.hostname, port)
        except AddressRefused as exc:
            raise HostRefused(str(exc)) from None
        _probe_tcp(parts.hostname, port, timeout)
    _ensure_event_loop()
    conn = _open_with_timeout(uri, timeout)
    try:
        conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
    except libvirt.libvirtError as exc:  # e.g. a driver without keepalive (test://)
        logger.debug("no keepalive on %s: %s", uri, _message(exc))
    return conn


def _close(conn: libvirt.virConnect) -> None:
    try:
        conn.close()
    except libvirt.libvirtError:
        pass


@contextmanager
def connect(uri: str, *, timeout: float) -> Iterator[HostConnection]:
    """Open `uri`, yield a HostConnection, always close it.

    Raises HostUnreachable if the host does not answer within `timeout` seconds.
    """
    conn = _open(uri, timeout)
    try:
        yield HostConnection(uri, conn)
    finally:
        _close(conn)


# --- long-lived connections, kept open per URI and process ----------------------------
#
# Opening a connection costs a TCP handshake and libvirt's (tcp: ~10 ms; ssh: an ssh
# process, its key exchange and the remote helper, 100-300 ms). A worker keeps the
# connections it opened (at most POOL_MAX_IDLE per URI: the migration call and the
# monitor need two at once), with the same keepalive as any other, so a call on one is
# bounded exactly as on a fresh one (`keepalive_bound_s`).
#
# A connection is lent to one user at a time, never shared by concurrent calls: with
# libvirt 9.0, when keepalive closed a connection on which one thread was blocked in
# migrateToURI3, another thread's concurrent call on it never returned (measured on the
# lab with the source's control plane cut; the fault matrix's "portal cut off from the
# source" case).
#
# Before it is lent, a connection is checked alive (keepalive closes a dead one); one
# whose user saw the host unreachable is closed, not kept. `generation` names the
# credentials it was opened with (the caller's choice: pinned host key, certificates):
# a different generation for the same URI closes the older connections, as
# `pool_forget` does; a connection in use is closed when its user gives it back, never
# under a running call (closing the client connection that started a migration would
# end the migration). Idle ones are closed after POOL_IDLE_S.

POOL_IDLE_S = float(os.environ.get("PORTAL_LIBVIRT_POOL_IDLE_S", "300"))
POOL_MAX_IDLE = 2


@dataclass(eq=False)
class _Pooled:
    uri: str
    generation: str
    epoch: int
    keepalive: tuple[int, int]
    conn: libvirt.virConnect
    last_used: float = 0.0


_pool_lock = threading.Lock()
_idle: dict[str, list[_Pooled]] = {}  # connections ready to lend, most recent last
_busy: set[_Pooled] = set()  # lent out now
_epochs: dict[str, int] = {}  # raised by pool_forget: older connections are not kept
_generations: dict[str, str] = {}  # the newest credentials asked for, per URI
# Connections a forked child found in its parent's pool: kept referenced and never
# used or closed in the child (closing, or garbage collection, would send libvirt's
# close over the parent's socket).
_inherited: list[_Pooled] = []


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _keepalive() -> tuple[int, int]:
    return (KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)


def _current(entry: _Pooled) -> bool:
    """Opened with the credentials and keepalive asked for now, and not forgotten."""
    return (
        entry.generation == _generations.get(entry.uri, entry.generation)
        and entry.epoch == _epochs.get(entry.uri, 0)
        and entry.keepalive == _keepalive()
    )


def _pool_acquire(uri: str, timeout: float, generation: str) -> _Pooled:
    to_close: list[libvirt.virConnect] = []
    found: _Pooled | None = None
    now = time.monotonic()
    with _pool_lock:
        _generations[uri] = generation
        for key, entries in list(_idle.items()):
            stale = [e for e in entries if now - e.last_used > POOL_IDLE_S]
            if stale:
                to_close += [e.conn for e in stale]
                _idle[key] = [e for e in entries if e not in stale]
        entries = _idle.get(uri, [])
        while entries and found is None:
            entry = entries.pop()
            if _current(entry) and _alive(entry.conn):
                found = entry
            else:
                to_close.append(entry.conn)
        epoch = _epochs.get(uri, 0)
        if found is not None:
            _busy.add(found)
    for conn in to_close:
        _close(conn)
    if found is not None:
        return found
    # Opened outside the lock: a slow host must not hold up connections to the others.
    fresh = _Pooled(uri, generation, epoch, _keepalive(), _open(uri, timeout))
    with _pool_lock:
        _busy.add(fresh)
    return fresh


def _pool_release(entry: _Pooled, *, broken: bool) -> None:
    with _pool_lock:
        _busy.discard(entry)
        entries = _idle.setdefault(entry.uri, [])
        keep = (
            not broken
            and _current(entry)
            and len(entries) < POOL_MAX_IDLE
            and entry not in _inherited
            and _alive(entry.conn)
        )
        if keep:
            entry.last_used = time.monotonic()
            entries.append(entry)
    if not keep:
        _close(entry.conn)


@contextmanager
def pooled(uri: str, *, timeout: float, generation: str = "") -> Iterator[HostConnection]:
    """A HostConnection to `uri` from this process's pool (opened within `timeout` s if
    none is alive and free), lent to this block alone and kept open after it. It is
    closed instead if the block raises HostUnreachable or calls `mark_broken()`."""
    entry = _pool_acquire(uri, timeout, generation)
    handle = HostConnection(uri, entry.conn)
    broken = False
    try:
        yield handle
    except HostUnreachable:
        broken = True
        raise
    finally:
        _pool_release(entry, broken=broken or handle.broken)


def pool_forget(uri: str | None = None) -> None:
    """Close the idle pooled connections to `uri` (every URI if None), e.g. when a
    host's address or credentials change; those in use are closed when given back."""
    with _pool_lock:
        uris = [uri] if uri is not None else list({*_idle, *(e.uri for e in _busy)})
        to_close = []
        for key in uris:
            _epochs[key] = _epochs.get(key, 0) + 1
            to_close += [e.conn for e in _idle.pop(key, [])]
    for conn in to_close:
        _close(conn)


def pool_size() -> int:
    """Idle connections kept open by this process."""
    with _pool_lock:
        return sum(len(entries) for entries in _idle.values())


def _pool_before_fork() -> None:
    # A child must not inherit open sockets that libvirt's event loop watches (its own
    # loop would read the parent's replies): idle connections are closed first. The
    # portal's forking processes (django-q2's sentinel, gunicorn's master) hold none.
    pool_forget()


def _pool_after_fork_in_child() -> None:
    global _pool_lock, _idle, _busy
    _inherited.extend([e for entries in _idle.values() for e in entries] + list(_busy))
    _idle, _busy = {}, set()
    _pool_lock = threading.Lock()


os.register_at_fork(before=_pool_before_fork, after_in_child=_pool_after_fork_in_child)
