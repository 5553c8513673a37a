"""Pre-checks: can this migration work? Each is named and says why it passed or failed.

They run for `POST /api/vms/{uuid}/migrate/check/` and again in the worker right
before libvirt is asked to migrate (things change while a migration waits in the queue).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings

from hosts import gateway
from hosts.access.peer_services import peer_trust_current, peer_trust_needed, peer_trust_problem
from hosts.access.ssh_services import REMOTE_USER_NEEDS
from hosts.access.tls_services import host_tls_problems, host_tls_served_problem
from hosts.connections import host_connect, host_connector
from hosts.hypervisor import LIVE_MOVABLE_STATES, STOPPED_STATES
from hosts.models import Host, Transport
from migrations_app.domain.options import MigrationOptions
from migrations_app.models import ACTIVE_STATUSES, Migration
from vms.models import VM, VMState

PASS, FAIL, SKIPPED = "pass", "fail", "skipped"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str
    message: str
    # What the check learned that the engine needs later (e.g. that the destination
    # already has this VM's definition); not shown to users.
    facts: dict = field(default_factory=dict, compare=False)

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def as_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "message": self.message}


@dataclass(frozen=True)
class MigrationPlan:
    """What is to be checked: enough to run the checks without a Migration row."""

    vm_uuid: str
    vm_name: str
    source: Host
    destination: Host
    options: MigrationOptions
    migration_id: int | None = None  # the migration being checked, not "another" one

    @classmethod
    def of_request(cls, *, vm: VM, destination: Host, options: MigrationOptions) -> MigrationPlan:
        """A migration as requested, before it is recorded (`migrate/check`)."""
        return cls(
            vm_uuid=str(vm.uuid),
            vm_name=vm.name,
            source=vm.host,
            destination=destination,
            options=options,
        )

    @classmethod
    def of_migration(cls, migration: Migration) -> MigrationPlan:
        """A recorded migration, checked again by its worker right before libvirt."""
        return cls(
            vm_uuid=str(migration.vm_uuid),
            vm_name=migration.vm_name,
            source=migration.source,
            destination=migration.destination,
            options=MigrationOptions.from_migration(migration),
            migration_id=migration.pk,
        )


CHECK_NAMES = [
    "destination_is_not_source",
    "destination_not_in_maintenance",
    "no_other_migration",
    "tls_certificates",
    "source_reachable",
    "destination_reachable",
    "same_hypervisor_and_arch",
    "vm_state_fits_mode",
    "cpu_compatible",
    "no_host_devices",
    "disks_available",
    "destination_has_space",
    "enough_memory",
    "no_name_or_uuid_clash",
    "peer_access",
]


def run_prechecks(plan: MigrationPlan) -> list[CheckResult]:
    results: dict[str, CheckResult] = {}

    def record(name: str, ok: bool, message: str, **facts) -> None:
        results[name] = CheckResult(name, PASS if ok else FAIL, message, facts)

    src, dst = plan.source, plan.destination
    same = src.pk == dst.pk or (src.host_uuid and src.host_uuid == dst.host_uuid)
    record(
        "destination_is_not_source",
        not same,
        f"{dst.name} is the host the VM runs on now" if same else f"{src.name} -> {dst.name}",
    )
    ok, message = maintenance_verdict(dst)
    record("destination_not_in_maintenance", ok, message)
    others = Migration.objects.filter(vm_uuid=plan.vm_uuid, status__in=ACTIVE_STATUSES)
    if plan.migration_id:
        others = others.exclude(pk=plan.migration_id)
    other = others.first()
    record(
        "no_other_migration",
        other is None,
        f"migration {other.pk} of this VM is already {other.status}"
        if other
        else "no other migration of this VM is queued or running",
    )

    results["tls_certificates"] = tls_check(plan) or CheckResult(
        "tls_certificates",
        SKIPPED,
        "not needed: no tls option, and the destination is not reached over tls",
    )

    timeout = settings.MIGRATION_PRECHECK_TIMEOUT_S
    # Both hosts are asked at once, each on this process's long-lived connection to
    # it (a worker keeps them open between migrations). A thread's wait is bounded as
    # a fresh connection's was: the opening by `timeout`, the calls by keepalive.
    bound = timeout + gateway.keepalive_bound_s()
    open_src = host_connector(src, timeout=timeout, reuse=True)
    open_dst = host_connector(dst, timeout=timeout, reuse=True)
    target_name = plan.options.new_name or plan.vm_name
    copies = plan.options.copies_storage

    def source_facts() -> _SourceFacts:
        with open_src() as conn:
            vm = conn.find_domain(uuid=plan.vm_uuid)
            if vm is None:
                return _SourceFacts(None, "", {})
            vm_xml = conn.domain_xml(plan.vm_uuid, inactive=not plan.options.live)
            volumes = conn.volumes(_disk_paths(vm)) if copies else {}
            return _SourceFacts(vm, vm_xml, volumes)

    def destination_facts() -> _DestinationFacts:
        with open_dst() as conn:
            by_uuid = conn.find_domain(uuid=plan.vm_uuid)
            by_name = by_uuid if by_uuid and by_uuid.name == target_name else None
            return _DestinationFacts(
                conn.capabilities(), by_uuid, by_name or conn.find_domain(name=target_name)
            )

    source, destination = _concurrently(source_facts, destination_facts, bound=bound)
    vm: gateway.DomainInfo | None = None
    if isinstance(source, _SourceFacts):
        vm = source.vm
        if vm is None:
            record("source_reachable", False, f"the VM is not on {src.name} any more")
        else:
            record("source_reachable", True, f"{src.name} answered and has the VM")
    else:
        record("source_reachable", False, f"{src.name} is not reachable: {source}")

    if isinstance(destination, _DestinationFacts):
        record("destination_reachable", True, f"{dst.name} answered within {timeout:g} s")
        found: dict[str, CheckResult] = {}

        def record_here(name: str, ok: bool, message: str, **facts) -> None:
            found[name] = CheckResult(name, PASS if ok else FAIL, message, facts)

        def rest() -> None:  # what needs the source's answer too
            with open_dst() as conn:
                _destination_checks(
                    plan,
                    conn,
                    destination,
                    vm,
                    source.vm_xml if vm else "",
                    record_here,
                    source.volumes if vm else {},
                )

        (outcome,) = _concurrently(rest, bound=bound)
        results.update(found)
        if isinstance(outcome, gateway.GatewayError):
            record("destination_reachable", False, f"{dst.name} stopped answering: {outcome}")
    else:
        hint = ""
        if dst.transport == Transport.SSH:
            hint = (
                f" (over ssh as {dst.ssh_user}: {REMOTE_USER_NEEDS}, "
                "and the portal's key installed)"
            )
        record(
            "destination_reachable",
            False,
            f"{dst.name} is not reachable within {timeout:g} s: {destination}{hint}",
        )

    if not same:
        _peer_access_check(src, dst, record)
    return [
        results.get(name) or CheckResult(name, SKIPPED, _skip_reason(results))
        for name in CHECK_NAMES
    ]


@dataclass(frozen=True)
class _SourceFacts:
    vm: gateway.DomainInfo | None
    vm_xml: str
    volumes: dict[str, gateway.VolumeInfo | None]


@dataclass(frozen=True)
class _DestinationFacts:
    capabilities: gateway.HostCapabilities
    by_uuid: gateway.DomainInfo | None
    by_name: gateway.DomainInfo | None


def _concurrently(*calls: Callable[[], object], bound: float) -> list[object]:
    """Run `calls` in threads of their own; each gives its result, or the
    GatewayError it raised, or a HostUnreachable if it did not end within `bound`
    seconds (the thread is left to end by itself: keepalive ends its call)."""
    outcomes: list[object] = [None] * len(calls)
    done = [threading.Event() for _ in calls]

    def run(i: int, call: Callable[[], object]) -> None:
        try:
            outcomes[i] = call()
        except gateway.GatewayError as exc:
            outcomes[i] = exc
        except Exception as exc:  # never leave the caller waiting on a dead thread
            outcomes[i] = gateway.GatewayError(f"unexpected error: {exc}")
        finally:
            done[i].set()

    threads = [
        threading.Thread(target=run, args=(i, call), name=f"precheck-{i}", daemon=True)
        for i, call in enumerate(calls)
    ]
    deadline = time.monotonic() + bound
    for thread in threads:
        thread.start()
    results = []
    for i, event in enumerate(done):
        if event.wait(max(0.0, deadline - time.monotonic())):
            results.append(outcomes[i])
        else:
            results.append(gateway.HostUnreachable(f"no answer within {bound:g} s"))
    return results


def maintenance_verdict(destination: Host) -> tuple[bool, str]:
    """A host in maintenance takes no new VMs. Read from the database row the plan
    carries (the worker's plan is loaded when it claims the migration, so a host put
    into maintenance while a migration waited in the queue refuses it too)."""
    if not destination.maintenance:
        return True, f"{destination.name} is not in maintenance"
    since = (
        f" since {destination.maintenance_since:%Y-%m-%d %H:%M} UTC"
        if destination.maintenance_since
        else ""
    )
    why = f" ({destination.maintenance_reason})" if destination.maintenance_reason else ""
    return False, (
        f"{destination.name} is in maintenance{since}{why} and takes no new VMs: "
        "choose another host, or take it out of maintenance first"
    )


def cpu_verdicts(
    *, source: Host, vms: list[tuple[str, bool]], destinations: list[Host], timeout: float
) -> dict[tuple[str, int], tuple[bool | None, str]]:
    """The pre-check `cpu_compatible` for many (VM, destination) pairs at once, as the
    destination ranking and the evacuation plan need it: each VM's definition is read
    from `source` once (`vms`: (uuid, live); live VMs give their running definition,
    as the pre-check does), then each destination is opened once and asked
    `compare_cpu` (libvirt's compareHypervisorCPU) for every VM. Bounded by `timeout`
    per connection; a host that does not answer gives (None, why) for its pairs, never
    an exception. Keys: (vm uuid, destination id)."""
    verdicts: dict[tuple[str, int], tuple[bool | None, str]] = {}
    xmls: dict[str, str] = {}
    try:
        with host_connect(source, timeout=timeout) as conn:
            for uuid, live in vms:
                try:
                    xmls[uuid] = conn.domain_xml(uuid, inactive=not live)
                except gateway.DomainNotFound:
                    for dst in destinations:
                        verdicts[(uuid, dst.pk)] = (
                            None,
                            f"the VM is not on {source.name} any more",
                        )
    except gateway.GatewayError as exc:
        for uuid, _live in vms:
            for dst in destinations:
                verdicts[(uuid, dst.pk)] = (
                    None,
                    f"not checked: {source.name} (the VM's host) did not answer: {exc}",
                )
        return verdicts
    for dst in destinations:
        try:
            with host_connect(dst, timeout=timeout) as conn:
                for uuid, xml in xmls.items():
                    verdicts[(uuid, dst.pk)] = conn.compare_cpu(domain_xml=xml)
        except gateway.GatewayError as exc:
            for uuid in xmls:
                verdicts[(uuid, dst.pk)] = (
                    None,
                    f"not checked: {dst.name} did not answer within {timeout:g} s: {exc}",
                )
    return verdicts


def _peer_access_check(src: Host, dst: Host, record) -> None:
    """Can the source's own libvirtd open the destination (peer-to-peer)? Read-only:
    missing ssh trust is set up by the engine when the migration starts."""
    if not peer_trust_needed(src, dst):
        record("peer_access", True, f"{src.name} opens {dst.name} over {dst.transport}")
        return
    problem = peer_trust_problem(src, dst)
    if problem:
        record("peer_access", False, f"{src.name} cannot be given access to {dst.name}: {problem}")
    elif peer_trust_current(src, dst):
        record("peer_access", True, f"{src.name} has its own ssh access to {dst.name}")
    else:
        record(
            "peer_access",
            True,
            f"{src.name} gets its own ssh key for {dst.name} when the migration starts",
        )


def _disk_paths(vm: gateway.DomainInfo) -> list[str]:
    return [d.path for d in vm.disks if d.path and d.device == "disk"]


def tls_check(plan: MigrationPlan) -> CheckResult | None:
    """`tls_certificates`: with the `tls` option both hosts need valid certificates of
    the portal's CA (QEMU on the source is the client, on the destination the server);
    to a tls destination the source connects with its own client certificate, and
    the destination must serve a valid one. From the portal's record, and for a tls
    destination from what its libvirtd really serves. None: nothing about TLS here."""
    src, dst = plan.source, plan.destination
    if not plan.options.tls and dst.transport != Transport.TLS:
        return None
    problems = host_tls_problems(src, role="source") + host_tls_problems(dst, role="destination")
    if not problems and dst.transport == Transport.TLS:
        served = host_tls_served_problem(dst)
        if served:
            problems.append(served)
    why = "the tls option" if plan.options.tls else f"{dst.name} is reached over tls"
    if problems:
        return CheckResult("tls_certificates", FAIL, f"needed for {why}: " + "; ".join(problems))
    until = min(
        t for h in (src, dst) for t in (h.tls_server_not_after, h.tls_client_not_after) if t
    )
    return CheckResult(
        "tls_certificates",
        PASS,
        f"{src.name} and {dst.name} have valid certificates of the portal's CA "
        f"(the first expires {until:%Y-%m-%d})",
    )


def _skip_reason(results: dict[str, CheckResult]) -> str:
    for prerequisite in ("source_reachable", "destination_reachable"):
        if prerequisite in results and results[prerequisite].failed:
            return f"not checked: {prerequisite.replace('_', ' ')} failed"
    return "not checked"


def _destination_checks(
    plan: MigrationPlan,
    conn: gateway.HostConnection,
    facts: _DestinationFacts,
    vm: gateway.DomainInfo | None,
    vm_xml: str,
    record: Callable[..., None],
    source_volumes: dict[str, gateway.VolumeInfo | None],
) -> None:
    src, dst = plan.source, plan.destination
    caps = facts.capabilities
    src_type, src_arch = src.hypervisor_type, src.arch
    same_kind = (src_type, src_arch) == (caps.hypervisor_type, caps.arch)
    record(
        "same_hypervisor_and_arch",
        same_kind,
        f"both are {caps.hypervisor_type} on {caps.arch}"
        if same_kind
        else f"{src.name} is {src_type or '?'} on {src_arch or '?'}, "
        f"{dst.name} is {caps.hypervisor_type} on {caps.arch}",
    )
    if vm is None:
        return
    if plan.options.live:
        fits = vm.state in LIVE_MOVABLE_STATES
        reason = "a live migration needs a running or paused VM"
    else:
        fits = vm.state == VMState.SHUT_OFF and vm.persistent
        reason = "an offline migration needs a shut-off, persistent (defined) VM"
    record(
        "vm_state_fits_mode",
        fits,
        f"the VM is {vm.state.replace('_', ' ')}" + ("" if fits else f": {reason}"),
        source_state=vm.state,
    )
    cpu_ok, cpu_reason = conn.compare_cpu(domain_xml=vm_xml)
    record("cpu_compatible", cpu_ok, cpu_reason)
    record(
        "no_host_devices",
        not vm.has_hostdev,
        "the VM has PCI/USB host devices passed through, which cannot be migrated"
        if vm.has_hostdev
        else "no host devices passed through",
    )
    disk_paths = _disk_paths(vm)
    if plan.options.copies_storage:
        record(
            "disks_available",
            True,
            f"{len(disk_paths)} disk(s) will be copied to {dst.name}",
        )
        sizes = {d.path: d.size_bytes for d in vm.disks}
        here = conn.volumes(disk_paths)
        disks = []
        for path in disk_paths:
            volume = source_volumes.get(path)
            capacity = volume.capacity_bytes if volume else sizes.get(path) or 0
            disks.append(
                DiskToCopy(
                    path=path,
                    capacity_bytes=capacity,
                    allocation_bytes=volume.allocation_bytes if volume else capacity,
                    on_destination=here[path] is not None,
                )
            )
        directories = {os.path.dirname(d.path) for d in disks if not d.on_destination}
        pools = {directory: conn.pool_for_directory(directory) for directory in directories}
        ok, message = copy_space_verdict(destination=dst.name, disks=disks, pools=pools)
        record("destination_has_space", ok, message)
    else:
        record("destination_has_space", True, "no disk is copied (shared storage)")
        here = conn.volumes(disk_paths)
        missing = [path for path in disk_paths if here[path] is None]
        record(
            "disks_available",
            not missing,
            f"not present on {dst.name}: {', '.join(missing)}; "
            "use storage 'copy' to copy local disks during the migration"
            if missing
            else f"all {len(disk_paths)} disk(s) are present on {dst.name}",
        )
    needed = vm.memory_kib * 1024
    enough = not plan.options.live or caps.memory_free_bytes >= needed
    record(
        "enough_memory",
        enough,
        f"{dst.name} has {caps.memory_free_bytes // 2**20} MiB free, the VM needs "
        f"{needed // 2**20} MiB",
    )
    target_name = plan.options.new_name or plan.vm_name
    by_uuid, by_name = facts.by_uuid, facts.by_name
    verdict = name_or_uuid_clash(
        destination=dst.name,
        target_name=target_name,
        by_uuid=(by_uuid.name, by_uuid.state) if by_uuid else None,
        by_name_uuid=by_name.uuid if by_name else None,
        vm_uuid=plan.vm_uuid,
    )
    record(
        "no_name_or_uuid_clash",
        not verdict.clash,
        verdict.message,
        destination_had_definition=verdict.coming_home,
    )


@dataclass(frozen=True)
class ClashVerdict:
    clash: bool
    coming_home: bool
    message: str


def name_or_uuid_clash(
    *,
    destination: str,
    target_name: str,
    by_uuid: tuple[str, str] | None,
    by_name_uuid: str | None,
    vm_uuid: str,
) -> ClashVerdict:
    """Would the VM clash with a domain on the destination? Pure.

    A shut-off definition with the same UUID and the same name is the same VM coming
    home (a round trip without "delete source"): libvirt reuses it, so it is no clash.
    A running or paused copy, or a different domain with that name or UUID, is.
    """
    if by_uuid is not None:
        name, state = by_uuid
        if name == target_name and state in STOPPED_STATES:
            return ClashVerdict(
                False,
                True,
                f"{destination} keeps a {state.replace('_', ' ')} definition of this VM "
                "from an earlier migration: it comes home and that definition is reused",
            )
        if name != target_name:
            why = f"named '{name}', not '{target_name}'"
        else:
            why = f"{state.replace('_', ' ')}: a second active copy"
        return ClashVerdict(
            True, False, f"{destination} already has a domain with this UUID ({why})"
        )
    if by_name_uuid is not None and by_name_uuid != vm_uuid:
        return ClashVerdict(
            True, False, f"{destination} already has another domain named '{target_name}'"
        )
    return ClashVerdict(
        False, False, f"no domain named '{target_name}' or with this UUID on {destination}"
    )


@dataclass(frozen=True)
class DiskToCopy:
    path: str
    capacity_bytes: int
    allocation_bytes: int  # what it takes on the source now
    on_destination: bool  # already there (pre-created): libvirt copies into it


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def copy_space_verdict(
    *,
    destination: str,
    disks: list[DiskToCopy],
    pools: dict[str, gateway.PoolInfo | None],
) -> tuple[bool, str]:
    """Can the destination take the disks a storage "copy" migration creates there? Pure.

    libvirt creates each missing disk in the destination's storage pool whose folder
    holds it (same path as on the source), and QEMU's mirror fills it: on the lab
    (libvirt 9.0, QEMU 7.2) a qcow2 disk of 16 MiB capacity with 196 KiB allocated
    arrived with 16.3 MiB allocated. So each disk needs its capacity free (or its
    allocation, if larger: qcow2 metadata), in the pool that receives it.
    """
    if not disks:
        return True, "the VM has no disk to copy"
    to_create = [d for d in disks if not d.on_destination]
    if not to_create:
        return True, f"every disk already exists on {destination}: libvirt copies into it"
    problems, notes = [], []
    for directory in sorted({os.path.dirname(d.path) for d in to_create}):
        here = [d for d in to_create if os.path.dirname(d.path) == directory]
        names = ", ".join(os.path.basename(d.path) for d in here)
        pool = pools.get(directory)
        if pool is None:
            problems.append(
                f"no active storage pool on {destination} has the folder {directory}, so "
                f"libvirt cannot create {names} there: define and start one for it "
                f"(virsh pool-define-as NAME dir --target {directory}; virsh pool-start NAME) "
                "or create the disks there beforehand"
            )
            continue
        needed = sum(max(d.capacity_bytes, d.allocation_bytes) for d in here)
        if needed > pool.available_bytes:
            problems.append(
                f"pool '{pool.name}' on {destination} ({directory}) has "
                f"{_mib(pool.available_bytes)} free, the disks to copy there ({names}) take "
                f"{_mib(needed)}: free {_mib(needed - pool.available_bytes)} or more there, "
                "or choose another destination or shared storage"
            )
        else:
            notes.append(
                f"pool '{pool.name}' on {destination} has {_mib(pool.available_bytes)} free "
                f"for {_mib(needed)} of {names}"
            )
    if problems:
        return False, "; ".join(problems)
    return True, "; ".join(notes)
