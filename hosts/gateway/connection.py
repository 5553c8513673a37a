"""A HostConnection: plain data out of one libvirt connection, and the migration call."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace

import libvirt

from hosts.gateway.session import (
    DOMAIN_STATES,
    _close,
    _message,
    _open,
    _translate,
    state_reason,
)
from hosts.hypervisor import (
    POSTCOPY_REASONS,
    DirtyRate,
    DiskInfo,
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

    def max_speed(self, uuid: str) -> int:
        """The migration bandwidth libvirt has for the domain (MiB/s; a huge number when
        unlimited: QEMU's own maximum)."""
        read = self._call(uuid, "reading bandwidth of", lambda d: d.migrateGetMaxSpeed(0))
        if read is None:  # as max_downtime: None instead of an error
            raise GatewayError(f"no bandwidth of {uuid} on {self.uri}")
        return int(read)

    def start_dirty_rate_calc(self, uuid: str, seconds: int) -> None:
        """Ask QEMU to measure how fast the guest dirties its memory over `seconds`
        (page sampling; the guest is not slowed). Read it with `dirty_rate` after."""
        self._call(uuid, "measuring the dirty rate of", lambda d: d.startDirtyRateCalc(seconds, 0))

    def dirty_rate(self, uuid: str) -> DirtyRate:
        """The last dirty-rate calculation's state and result."""
        dom = self._lookup(uuid)
        try:
            found = self._conn.domainListGetStats([dom], libvirt.VIR_DOMAIN_STATS_DIRTYRATE, 0)
        except libvirt.libvirtError as exc:
            raise _translate(exc, f"reading the dirty rate of {dom.name()} on {self.uri}") from exc
        stats = found[0][1] if found else {}
        measured = stats.get("dirtyrate.calc_status") == libvirt.VIR_DOMAIN_DIRTYRATE_MEASURED
        rate = stats.get("dirtyrate.megabytes_per_second")
        return DirtyRate(
            measured=measured,
            megabytes_per_second=int(rate) if measured and rate is not None else None,
            period_s=stats.get("dirtyrate.calc_period"),
            mode=str(stats.get("dirtyrate.calc_mode", "")),
        )

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

    def compare_cpu(self, *, domain_xml: str, source_cpu_xml: str = "") -> tuple[bool, str]:
        """Would this host accept the domain's CPU definition (a host-passthrough one: its
        source host's CPU, `source_cpu_xml`)? (ok, reason); libvirt's own words when not."""
        cpu = cpu_to_compare(domain_xml, source_cpu_xml)
        if cpu.verdict is not None:
            return cpu.verdict
        # host-passthrough: the VM sees its host's CPU as it is, so the destination's own
        # CPU must provide all of the source's (virConnectCompareCPU, as Nova checks it).
        what = (
            "the source host's CPU (the VM uses host-passthrough)"
            if cpu.host_cpu
            else "the VM's CPU model"
        )
        # FAIL_INCOMPATIBLE: libvirt raises, naming the features the host lacks.
        flags = libvirt.VIR_CONNECT_COMPARE_CPU_FAIL_INCOMPATIBLE
        try:
            if cpu.host_cpu:
                result = self._conn.compareCPU(cpu.xml, flags)
            else:
                result = self._conn.compareHypervisorCPU(
                    None, cpu.arch, cpu.machine, cpu.virt_type, cpu.xml, flags
                )
        except libvirt.libvirtError as exc:
            return False, f"the destination's CPU cannot run {what}: {_message(exc)}"
        if result == libvirt.VIR_CPU_COMPARE_INCOMPATIBLE:
            return False, f"the destination's CPU cannot run {what}"
        return True, f"the destination's CPU accepts {what}"

    def cpu_baseline(self, *, cpu_xmls: list[str]) -> str:
        """libvirt's baseline of host CPUs (capabilities' <cpu> each): the CPU model and
        features every one of them provides, as this host's hypervisor can run it."""
        try:
            return self._conn.baselineHypervisorCPU(
                None, None, None, None, cpu_xmls, libvirt.VIR_CONNECT_BASELINE_CPU_EXPAND_FEATURES
            )
        except libvirt.libvirtError as exc:
            raise _translate(exc, f"computing a CPU baseline on {self.uri}") from exc

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


def _block_size(dom: libvirt.virDomain, disk: DiskInfo) -> int | None:
    if not (disk.path and disk.target):
        return None
    try:
        return int(dom.blockInfo(disk.target)[0])
    except libvirt.libvirtError:
        return None  # e.g. an empty CD-ROM or a file that is missing


def _domain_info(dom: libvirt.virDomain) -> DomainInfo:
    state, reason = dom.state()
    named_reason = state_reason(state, reason)
    _state, max_mem, mem, vcpus, _cpu_time = dom.info()
    definition = domain_xml_read(dom.XMLDesc(0))
    # A copy in post-copy (failed or not) belongs to an incoming migration job that lets
    # no query in: libvirt 9 waits 30 s per disk for it, then refuses. Sizes unknown.
    sized = named_reason not in POSTCOPY_REASONS
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
        disks=[
            replace(d, size_bytes=_block_size(dom, d) if sized else None) for d in definition.disks
        ],
        has_hostdev=definition.has_hostdev,
        state_reason=named_reason,
    )


@contextmanager
def connect(uri: str, *, timeout: float) -> Iterator[HostConnection]:
    """A HostConnection to `uri` (HostUnreachable after `timeout` s), always closed after."""
    conn = _open(uri, timeout)
    try:
        yield HostConnection(uri, conn)
    finally:
        _close(conn)
