"""The only module that imports libvirt: bounded connects, readable errors, plain data out."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace

import libvirt

from hosts.connection_pool import ConnectionPool
from hosts.hypervisor import (
    DiskInfo,
    DomainEvent,
    DomainInfo,
    DomainNotFound,
    DomainState,
    GatewayError,
    HostCapabilities,
    HostUnreachable,
    MigrationSpec,
    PoolInfo,
    VolumeInfo,
    capabilities_xml_read,
    cpu_to_compare,
    domain_xml_read,
    pool_target_path,
    version_string,
)
from hosts.hypervisor import HostRefused as HostRefused  # callers catch gateway.HostRefused
from hosts.networks import libvirt_endpoint_probe

# libvirt prints every error to stderr by default; we raise them instead.
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
    """Keepalive needs a client event loop: one thread per process (a fork starts its own)."""
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


DOMAIN_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: DomainState.NO_STATE,
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.BLOCKED,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.SHUTTING_DOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUT_OFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: DomainState.SUSPENDED,
}


def _message(error: libvirt.libvirtError) -> str:
    return (error.get_error_message() or str(error)).strip()


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
    def __init__(self, uri: str, conn: libvirt.virConnect) -> None:
        self.uri = uri
        self._conn = conn
        self.broken = False

    def mark_broken(self) -> None:
        """A call reported the host unreachable: a pooled connection is not reused."""
        self.broken = True

    def capabilities(self) -> HostCapabilities:
        try:
            caps = capabilities_xml_read(self._conn.getCapabilities())
            node_info = self._conn.getInfo()
            free = self._conn.getFreeMemory()
            hv_type = self._conn.getType()
            hv_version = self._conn.getVersion()
            lib_version = self._conn.getLibVersion()
            hostname = self._conn.getHostname()
        except libvirt.libvirtError as exc:
            raise HostUnreachable(f"reading capabilities of {self.uri}: {_message(exc)}") from exc
        return HostCapabilities(
            **asdict(caps),
            hostname=hostname,
            cpu_count=int(node_info[2]),
            hypervisor_type=hv_type,
            hypervisor_version=version_string(hv_version),
            libvirt_version=version_string(lib_version),
            memory_total_bytes=int(node_info[1]) * 1024 * 1024,
            memory_free_bytes=int(free),
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
        # KEEP_COMPLETED: reading must not erase them for other readers (virsh).
        flags = libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED
        return self._call(uuid, "reading the completed job of", lambda d: d.jobStats(flags))

    def abort_job(self, uuid: str) -> None:
        self._call(uuid, "aborting the job of", lambda d: d.abortJob())

    def set_max_downtime(self, uuid: str, milliseconds: int) -> None:
        self._call(uuid, "setting max downtime of", lambda d: d.migrateSetMaxDowntime(milliseconds))

    def max_downtime(self, uuid: str) -> int:
        """The running migration's max downtime as libvirt has it (ms)."""
        read = self._call(uuid, "reading max downtime of", lambda d: d.migrateGetMaxDowntime(0))
        if read is None:  # the binding answers None, not an error, when libvirt fails
            raise GatewayError(f"no max downtime of {uuid} on {self.uri} (the job has ended?)")
        return int(read)

    def set_max_speed(self, uuid: str, mib_per_s: int) -> None:
        self._call(uuid, "setting bandwidth of", lambda d: d.migrateSetMaxSpeed(mib_per_s))

    def start_postcopy(self, uuid: str) -> None:
        self._call(uuid, "switching to post-copy", lambda d: d.migrateStartPostCopy(0))

    def destroy(self, uuid: str) -> None:
        self._call(uuid, "stopping", lambda d: d.destroy())

    def undefine(self, uuid: str) -> None:
        flags = libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
        self._call(uuid, "undefining", lambda d: d.undefineFlags(flags))

    def domain_state(self, uuid: str) -> tuple[str, str]:
        """(state, libvirt's reason) of a domain, without reading its definition."""
        state, reason = self._call(uuid, "reading the state of", lambda d: d.state())
        return DOMAIN_STATES.get(state, DomainState.NO_STATE), state_reason(state, reason)

    def suspend(self, uuid: str) -> None:
        self._call(uuid, "pausing", lambda d: d.suspend())

    def resume(self, uuid: str) -> None:
        self._call(uuid, "resuming", lambda d: d.resume())

    def start(self, uuid: str) -> None:
        self._call(uuid, "starting", lambda d: d.create())

    def migrate(self, uuid: str, *, destination_uri: str, spec: MigrationSpec) -> None:
        """Peer-to-peer migration to `destination_uri`; blocks until libvirt is done."""
        flags, params = migration_arguments(spec)
        self._call(uuid, "migrating", lambda d: d.migrateToURI3(destination_uri, params, flags))

    def migrate_postcopy_resume(
        self, uuid: str, *, destination_uri: str, spec: MigrationSpec
    ) -> None:
        """Recover a post-copy migration paused by a broken link: the same call, flags
        and parameters again, with VIR_MIGRATE_POSTCOPY_RESUME; blocks until it is done."""
        flags, params = migration_arguments(spec)
        flags |= libvirt.VIR_MIGRATE_POSTCOPY | libvirt.VIR_MIGRATE_POSTCOPY_RESUME
        self._call(
            uuid,
            "resuming the post-copy migration of",
            lambda d: d.migrateToURI3(destination_uri, params, flags),
        )

    def compare_cpu(self, *, domain_xml: str) -> tuple[bool, str]:
        """Would this host accept the domain's CPU definition? (ok, reason)"""
        cpu = cpu_to_compare(domain_xml)
        if cpu.verdict is not None:
            return cpu.verdict
        try:
            result = self._conn.compareHypervisorCPU(
                None, cpu.arch, cpu.machine, cpu.virt_type, cpu.xml, 0
            )
        except libvirt.libvirtError as exc:
            return False, _message(exc)
        if result == libvirt.VIR_CPU_COMPARE_INCOMPATIBLE:
            return False, "the destination's CPU cannot run the VM's CPU model"
        return True, "the destination's CPU accepts the VM's CPU model"

    def _refreshed_pools(self) -> list[libvirt.virStoragePool]:
        pools = self._conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
        for pool in pools:
            try:
                pool.refresh(0)
            except libvirt.libvirtError:
                pass  # a pool busy with another refresh is still listable
        return pools

    def volumes(self, paths: list[str]) -> dict[str, VolumeInfo | None]:
        """The volume at each path (None if none); pools refreshed once (a costly rescan)."""
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
        """The active pool whose target is `directory` (where a copied disk goes), or None."""
        wanted = os.path.normpath(directory)
        try:
            for pool in self._refreshed_pools():
                target = pool_target_path(pool.XMLDesc(0))
                if target and os.path.normpath(target) == wanted:
                    _state, capacity, allocation, available = pool.info()
                    return PoolInfo(
                        pool.name(), target, int(capacity), int(allocation), int(available)
                    )
        except libvirt.libvirtError as exc:
            raise _translate(exc, f"reading storage pools of {self.uri}") from exc
        return None


_MIGRATION_FLAGS = {
    "undefine_source": libvirt.VIR_MIGRATE_UNDEFINE_SOURCE,
    "copy_storage": libvirt.VIR_MIGRATE_NON_SHARED_DISK,
    "tunnelled": libvirt.VIR_MIGRATE_TUNNELLED,
    "auto_converge": libvirt.VIR_MIGRATE_AUTO_CONVERGE,
    "allow_postcopy": libvirt.VIR_MIGRATE_POSTCOPY,
    "compressed": libvirt.VIR_MIGRATE_COMPRESSED,
    "tls": libvirt.VIR_MIGRATE_TLS,
}


def migration_arguments(spec: MigrationSpec) -> tuple[int, dict]:
    flags = (
        libvirt.VIR_MIGRATE_PEER2PEER
        | libvirt.VIR_MIGRATE_PERSIST_DEST
        | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
        | (libvirt.VIR_MIGRATE_LIVE if spec.live else libvirt.VIR_MIGRATE_OFFLINE)
    )
    for switch, flag in _MIGRATION_FLAGS.items():
        if getattr(spec, switch):
            flags |= flag
    params: dict = {}
    if spec.compressed and spec.compression_method:
        params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION] = spec.compression_method
    if spec.compressed and spec.compression_level is not None:
        params[libvirt.VIR_MIGRATE_PARAM_COMPRESSION_MT_LEVEL] = spec.compression_level
    if spec.parallel_connections:
        flags |= libvirt.VIR_MIGRATE_PARALLEL
        params[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = spec.parallel_connections
    if spec.bandwidth_mib_s:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = spec.bandwidth_mib_s
    if spec.destination_name:
        params[libvirt.VIR_MIGRATE_PARAM_DEST_NAME] = spec.destination_name
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
    if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
        return DomainNotFound(message)  # it left (migrated, undefined) after the lookup
    return GatewayError(message)


def _block_size(dom: libvirt.virDomain, disk: DiskInfo) -> int | None:
    if not (disk.path and disk.target):
        return None
    try:
        return int(dom.blockInfo(disk.target)[0])
    except libvirt.libvirtError:
        return None  # e.g. an empty CD-ROM or a file that is missing


def _reasons(prefix: str) -> dict[int, str]:
    return {
        getattr(libvirt, name): name.removeprefix(prefix).lower()
        for name in dir(libvirt)
        if name.startswith(prefix)
    }


# virDomainGetState's reason codes by state, named as libvirt names them (lower case).
STATE_REASONS = {
    libvirt.VIR_DOMAIN_RUNNING: _reasons("VIR_DOMAIN_RUNNING_"),
    libvirt.VIR_DOMAIN_PAUSED: _reasons("VIR_DOMAIN_PAUSED_"),
    libvirt.VIR_DOMAIN_SHUTOFF: _reasons("VIR_DOMAIN_SHUTOFF_"),
    libvirt.VIR_DOMAIN_CRASHED: _reasons("VIR_DOMAIN_CRASHED_"),
}


def state_reason(state: int, reason: int) -> str:
    """libvirt's reason code as a name ("destroyed", "user", "postcopy", ...); "" if unknown."""
    name = STATE_REASONS.get(state, {}).get(reason, "")
    return "" if name == "unknown" else name


def _domain_info(dom: libvirt.virDomain) -> DomainInfo:
    state, reason = dom.state()
    _state, max_mem, mem, vcpus, _cpu_time = dom.info()
    definition = domain_xml_read(dom.XMLDesc(0))
    return DomainInfo(
        uuid=dom.UUIDString(),
        name=dom.name(),
        state=DOMAIN_STATES.get(state, DomainState.NO_STATE),
        persistent=bool(dom.isPersistent()),
        vcpus=int(vcpus),
        memory_kib=int(mem),
        max_memory_kib=int(max_mem),
        arch=definition.arch,
        machine_type=definition.machine_type,
        domain_type=definition.domain_type,
        disks=[replace(d, size_bytes=_block_size(dom, d)) for d in definition.disks],
        has_hostdev=definition.has_hostdev,
        state_reason=state_reason(state, reason),
    )


def _open(uri: str, timeout: float) -> libvirt.virConnect:
    """Open `uri` within `timeout` s, keepalive set (what bounds every later call on it)."""
    libvirt_endpoint_probe(uri, timeout)
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
    """A HostConnection to `uri` (HostUnreachable after `timeout` s), always closed after."""
    conn = _open(uri, timeout)
    try:
        yield HostConnection(uri, conn)
    finally:
        _close(conn)


# Lifecycle events and their details, named as libvirt names them (lower case).
_EVENT_NAMES = (
    "defined", "undefined", "started", "suspended", "resumed", "stopped", "shutdown",
    "pmsuspended", "crashed",
)  # fmt: skip
LIFECYCLE_EVENTS = {getattr(libvirt, f"VIR_DOMAIN_EVENT_{n.upper()}"): n for n in _EVENT_NAMES}
LIFECYCLE_DETAILS = {
    getattr(libvirt, f"VIR_DOMAIN_EVENT_{name.upper()}"): _reasons(
        f"VIR_DOMAIN_EVENT_{name.upper()}_"
    )
    for name in _EVENT_NAMES
}


class EventStream:
    """A connection that reports the host's domain events (lifecycle, reboot, job
    completed) to `on_event`, from libvirt's event-loop thread, and its end (keepalive
    timeout, libvirtd gone, `close()`) to `on_closed` once. Callbacks must only hand the
    event on: they run on the loop that keeps every connection of the process alive."""

    def __init__(
        self,
        uri: str,
        conn: libvirt.virConnect,
        on_event: Callable[[DomainEvent], None],
        on_closed: Callable[[str], None],
    ) -> None:
        self.uri = uri
        self._conn = conn
        self._on_event = on_event
        self._on_closed = on_closed
        self._closed = threading.Event()
        self._shut = False
        self._callbacks: list[int] = []
        conn.registerCloseCallback(self._closed_by_libvirt, None)
        for event_id, handler in (
            (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle),
            (libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._reboot),
            (libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self._job_completed),
        ):
            self._callbacks.append(conn.domainEventRegisterAny(None, event_id, handler, None))
        self.connection = HostConnection(uri, conn)

    def _emit(self, event: DomainEvent) -> None:
        try:
            self._on_event(event)
        except Exception:  # a failing handler must not break libvirt's loop
            logger.exception("handling %s on %s", event, self.uri)

    def _lifecycle(self, _conn, dom, event: int, detail: int, _opaque) -> None:
        name = LIFECYCLE_EVENTS.get(event, str(event))
        details = LIFECYCLE_DETAILS.get(event, {})
        self._emit(
            DomainEvent(
                dom.UUIDString(), dom.name(), "lifecycle", name, details.get(detail, str(detail))
            )
        )

    def _reboot(self, _conn, dom, _opaque) -> None:
        self._emit(DomainEvent(dom.UUIDString(), dom.name(), "reboot"))

    def _job_completed(self, _conn, dom, _params, _opaque) -> None:
        self._emit(DomainEvent(dom.UUIDString(), dom.name(), "job_completed"))

    def _closed_by_libvirt(self, _conn, reason: int, _opaque) -> None:
        names = {
            libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "error",
            libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "the host closed the connection",
            libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "keepalive timeout",
            libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT: "closed",
        }
        self._end(names.get(reason, f"closed ({reason})"))

    def _end(self, why: str) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self._on_closed(why)
        except Exception:
            logger.exception("closing the event stream of %s", self.uri)

    @property
    def closed(self) -> bool:
        return self._closed.is_set() or not _alive(self._conn)

    def close(self) -> None:
        if self._shut:
            return
        self._shut = True
        for callback in self._callbacks:
            try:
                self._conn.domainEventDeregisterAny(callback)
            except libvirt.libvirtError:
                pass  # the connection is already gone
        self._callbacks.clear()
        try:
            self._conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        _close(self._conn)
        self._end("closed")


def open_event_stream(
    uri: str,
    *,
    timeout: float,
    on_event: Callable[[DomainEvent], None],
    on_closed: Callable[[str], None],
) -> EventStream:
    """A new connection to `uri` that reports its domain events (see EventStream)."""
    conn = _open(uri, timeout)
    try:
        return EventStream(uri, conn, on_event, on_closed)
    except libvirt.libvirtError as exc:
        _close(conn)
        raise _translate(exc, f"listening to the events of {uri}") from exc


POOL_IDLE_S = float(os.environ.get("PORTAL_LIBVIRT_POOL_IDLE_S", "300"))
POOL_MAX_IDLE = 2


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


_pool = ConnectionPool(
    open_=_open,
    close=_close,
    alive=_alive,
    settings=lambda: (KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT),
    max_idle=POOL_MAX_IDLE,
    idle_s=POOL_IDLE_S,
)


@contextmanager
def pooled(uri: str, *, timeout: float, generation: str = "") -> Iterator[HostConnection]:
    """A pooled HostConnection lent to this block alone; kept open after it unless the
    block raises HostUnreachable or calls `mark_broken()`."""
    entry = _pool.acquire(uri, timeout, generation)
    handle = HostConnection(uri, entry.conn)
    broken = False
    try:
        yield handle
    except HostUnreachable:
        broken = True
        raise
    finally:
        _pool.release(entry, broken=broken or handle.broken)


def pool_forget(uri: str | None = None) -> None:
    """Close idle pooled connections to `uri` (all if None); those in use close on return."""
    _pool.forget(uri)


def pool_size() -> int:
    return _pool.size()


# A child must not inherit sockets libvirt's event loop watches (it would read the
# parent's replies): idle connections are closed before a fork.
os.register_at_fork(before=_pool.forget, after_in_child=_pool.after_fork_in_child)
