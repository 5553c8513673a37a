"""The pre-checks' rules: pure functions of the facts, each with the facts it needs."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import Flag, StrEnum, auto

from hosts import gateway
from hosts.access.ssh_services import REMOTE_USER_NEEDS
from hosts.hypervisor import LIVE_MOVABLE_STATES, STOPPED_STATES
from hosts.models import Transport
from migrations_app.prechecks.facts import Facts, Unreachable, VmOnDestination, disk_paths
from vms.models import VMState


class CheckName(StrEnum):
    """The pre-checks, in the order the API and the audit show them."""

    DESTINATION_IS_NOT_SOURCE = "destination_is_not_source"
    DESTINATION_NOT_IN_MAINTENANCE = "destination_not_in_maintenance"
    NO_OTHER_MIGRATION = "no_other_migration"
    TLS_CERTIFICATES = "tls_certificates"
    SOURCE_REACHABLE = "source_reachable"
    DESTINATION_REACHABLE = "destination_reachable"
    SAME_HYPERVISOR_AND_ARCH = "same_hypervisor_and_arch"
    VM_STATE_FITS_MODE = "vm_state_fits_mode"
    CPU_COMPATIBLE = "cpu_compatible"
    NO_HOST_DEVICES = "no_host_devices"
    DISKS_AVAILABLE = "disks_available"
    DESTINATION_HAS_SPACE = "destination_has_space"
    ENOUGH_MEMORY = "enough_memory"
    NO_NAME_OR_UUID_CLASH = "no_name_or_uuid_clash"
    PEER_ACCESS = "peer_access"


class CheckStatus(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Verdict:
    status: CheckStatus
    message: str

    @classmethod
    def of(cls, ok: bool, message: str) -> Verdict:
        return cls(CheckStatus.PASS if ok else CheckStatus.FAIL, message)


def passed(message: str) -> Verdict:
    return Verdict(CheckStatus.PASS, message)


def failed(message: str) -> Verdict:
    return Verdict(CheckStatus.FAIL, message)


class Needs(Flag):
    NOTHING = 0
    DESTINATION = auto()  # the destination answered
    VM = auto()  # the source answered and has the VM
    VM_ON_DESTINATION = auto()  # the destination answered about the VM's CPU and disks
    PEER = auto()  # two different hosts


def needs_met(facts: Facts) -> Needs:
    met = Needs.NOTHING
    if facts.at_destination:
        met |= Needs.DESTINATION
    if facts.vm:
        met |= Needs.VM
    if facts.vm and isinstance(facts.vm_on_destination, VmOnDestination):
        met |= Needs.VM_ON_DESTINATION
    if facts.peer:
        met |= Needs.PEER
    return met


def destination_is_not_source(facts: Facts) -> Verdict:
    src, dst = facts.plan.source, facts.plan.destination
    if facts.plan.same_host:
        return failed(f"{dst.name} is the host the VM runs on now")
    return passed(f"{src.name} -> {dst.name}")


def destination_not_in_maintenance(facts: Facts) -> Verdict:
    """A host in maintenance, or retired, takes no new VMs (the worker's plan is read at
    its claim)."""
    dst = facts.plan.destination
    if dst.retired:
        return failed(
            f"{dst.name} is retired and takes no VMs: choose another host, "
            "or bring it back into service first"
        )
    if not dst.maintenance:
        return passed(f"{dst.name} is not in maintenance")
    since = f" since {dst.maintenance_since:%Y-%m-%d %H:%M} UTC" if dst.maintenance_since else ""
    why = f" ({dst.maintenance_reason})" if dst.maintenance_reason else ""
    return failed(
        f"{dst.name} is in maintenance{since}{why} and takes no new VMs: "
        "choose another host, or take it out of maintenance first"
    )


def no_other_migration(facts: Facts) -> Verdict:
    other = facts.other_migration
    if other:
        return failed(f"migration {other.pk} of this VM is already {other.status}")
    return passed("no other migration of this VM is queued or running")


def tls_certificates(facts: Facts) -> Verdict:
    src, dst, problems = facts.plan.source, facts.plan.destination, facts.tls_problems
    if problems is None:
        return Verdict(
            CheckStatus.SKIPPED,
            "not needed: no tls option, and the destination is not reached over tls",
        )
    why = "the tls option" if facts.plan.options.tls else f"{dst.name} is reached over tls"
    if problems:
        return failed(f"needed for {why}: " + "; ".join(problems))
    until = min(
        t for h in (src, dst) for t in (h.tls_server_not_after, h.tls_client_not_after) if t
    )
    return passed(
        f"{src.name} and {dst.name} have valid certificates of the portal's CA "
        f"(the first expires {until:%Y-%m-%d})"
    )


def source_reachable(facts: Facts) -> Verdict:
    src = facts.plan.source
    if isinstance(facts.source, Unreachable):
        return failed(f"{src.name} is not reachable: {facts.source.why}")
    if facts.vm is None:
        return failed(f"the VM is not on {src.name} any more{_now_where(facts)}")
    return passed(f"{src.name} answered and has the VM")


def _now_where(facts: Facts) -> str:
    """Where the destination says the VM is now (moved there outside the portal)."""
    found = facts.at_destination.by_uuid if facts.at_destination else None
    if found is None:
        return ""
    dst = facts.plan.destination.name
    if found.state == VMState.RUNNING:
        return f": it runs on {dst} now (moved outside the portal)"
    return f": {dst} has it now ({found.state.replace('_', ' ')})"


def destination_reachable(facts: Facts) -> Verdict:
    dst = facts.plan.destination
    if isinstance(facts.destination, Unreachable):
        hint = (
            f" (over ssh as {dst.ssh_user}: {REMOTE_USER_NEEDS}, and the portal's key installed)"
            if dst.transport == Transport.SSH
            else ""
        )
        return failed(
            f"{dst.name} is not reachable within {facts.timeout:g} s: {facts.destination.why}{hint}"
        )
    if isinstance(facts.vm_on_destination, Unreachable):
        return failed(f"{dst.name} stopped answering: {facts.vm_on_destination.why}")
    return passed(f"{dst.name} answered within {facts.timeout:g} s")


def same_hypervisor_and_arch(facts: Facts) -> Verdict:
    src, dst = facts.plan.source, facts.plan.destination
    caps = facts.at_destination.capabilities
    if (src.hypervisor_type, src.arch) == (caps.hypervisor_type, caps.arch):
        return passed(f"both are {caps.hypervisor_type} on {caps.arch}")
    return failed(
        f"{src.name} is {src.hypervisor_type or '?'} on {src.arch or '?'}, "
        f"{dst.name} is {caps.hypervisor_type} on {caps.arch}"
    )


def vm_state_fits_mode(facts: Facts) -> Verdict:
    vm = facts.vm
    if facts.plan.options.live:
        if not vm.persistent and facts.inventory_persistent:
            # A person undefined it: migrating would define it again on the destination.
            return failed(
                f"the VM is {vm.state.replace('_', ' ')} as a transient domain: its "
                f"definition on {facts.plan.source.name} was removed outside the portal "
                "since the portal saw it; it is not migrated (that would define it "
                "again on the destination)"
            )
        fits = vm.state in LIVE_MOVABLE_STATES
        reason = "a live migration needs a running or paused VM"
    else:
        fits = vm.state == VMState.SHUT_OFF and vm.persistent
        reason = "an offline migration needs a shut-off, persistent (defined) VM"
    return Verdict.of(
        fits, f"the VM is {vm.state.replace('_', ' ')}" + ("" if fits else f": {reason}")
    )


def cpu_compatible(facts: Facts) -> Verdict:
    about = facts.vm_on_destination
    return Verdict.of(about.cpu_ok, about.cpu_reason)


def no_host_devices(facts: Facts) -> Verdict:
    if facts.vm.has_hostdev:
        return failed("the VM has PCI/USB host devices passed through, which cannot be migrated")
    return passed("no host devices passed through")


def disks_available(facts: Facts) -> Verdict:
    about, dst = facts.vm_on_destination, facts.plan.destination
    paths = disk_paths(facts.vm)
    if facts.plan.options.copies_storage:
        return passed(f"{len(paths)} disk(s) will be copied to {dst.name}")
    missing = [path for path in paths if about.volumes[path] is None]
    if missing:
        return failed(
            f"not present on {dst.name}: {', '.join(missing)}; "
            "use storage 'copy' to copy local disks during the migration"
        )
    return passed(f"all {len(paths)} disk(s) are present on {dst.name}")


def destination_has_space(facts: Facts) -> Verdict:
    about, vm = facts.vm_on_destination, facts.vm
    if not facts.plan.options.copies_storage:
        return passed("no disk is copied (shared storage)")
    sizes = {d.path: d.size_bytes for d in vm.disks}
    on_source = facts.source.volumes or {}
    disks = []
    for path in disk_paths(vm):
        volume = on_source.get(path)
        capacity = volume.capacity_bytes if volume else sizes.get(path) or 0
        allocation = volume.allocation_bytes if volume else capacity
        disks.append(DiskToCopy(path, capacity, allocation, about.volumes[path] is not None))
    return copy_space_verdict(
        destination=facts.plan.destination.name, disks=disks, pools=about.pools
    )


def enough_memory(facts: Facts) -> Verdict:
    free = facts.at_destination.capabilities.memory_free_bytes
    needed = facts.vm.memory_kib * 1024
    return Verdict.of(
        not facts.plan.options.live or free >= needed,
        f"{facts.plan.destination.name} has {free // 2**20} MiB free, the VM needs "
        f"{needed // 2**20} MiB",
    )


def no_name_or_uuid_clash(facts: Facts) -> Verdict:
    verdict = destination_clash(facts)
    return Verdict.of(not verdict.clash, verdict.message)


def peer_access(facts: Facts) -> Verdict:
    """Can the source's own libvirtd open the destination (peer-to-peer)?"""
    peer, src, dst = facts.peer, facts.plan.source, facts.plan.destination
    if not peer.needed:
        return passed(f"{src.name} opens {dst.name} over {dst.transport}")
    if peer.problem:
        return failed(f"{src.name} cannot be given access to {dst.name}: {peer.problem}")
    if peer.current:
        return passed(f"{src.name} has its own ssh access to {dst.name}")
    return passed(f"{src.name} gets its own ssh key for {dst.name} when the migration starts")


@dataclass(frozen=True)
class ClashVerdict:
    clash: bool
    coming_home: bool
    message: str


def destination_clash(facts: Facts) -> ClashVerdict | None:
    found = facts.at_destination
    if facts.vm is None or found is None:
        return None
    by_uuid, by_name = found.by_uuid, found.by_name
    return name_or_uuid_clash(
        destination=facts.plan.destination.name,
        target_name=facts.plan.target_name,
        by_uuid=(by_uuid.name, by_uuid.state) if by_uuid else None,
        by_name_uuid=by_name.uuid if by_name else None,
        vm_uuid=facts.plan.vm_uuid,
    )


def name_or_uuid_clash(
    *,
    destination: str,
    target_name: str,
    by_uuid: tuple[str, str] | None,
    by_name_uuid: str | None,
    vm_uuid: str,
) -> ClashVerdict:
    """Would the VM clash with a domain on the destination? (Coming home is no clash.)"""
    if by_uuid is not None:
        name, state = by_uuid
        if name == target_name and state in STOPPED_STATES:
            return ClashVerdict(
                False,
                True,
                f"{destination} keeps a {state.replace('_', ' ')} definition of this VM "
                "from an earlier migration: it comes home and that definition is reused",
            )
        why = (
            f"named '{name}', not '{target_name}'"
            if name != target_name
            else f"{state.replace('_', ' ')}: a second active copy"
        )
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
    *, destination: str, disks: list[DiskToCopy], pools: dict[str, gateway.PoolInfo | None]
) -> Verdict:
    """Can the destination's pools take the disks a storage "copy" migration creates?
    QEMU's mirror fills each one (a 16 MiB qcow2 with 196 KiB allocated arrived with
    16.3 MiB): each needs its capacity, or its allocation if larger, free in its pool."""
    if not disks:
        return passed("the VM has no disk to copy")
    to_create = [d for d in disks if not d.on_destination]
    if not to_create:
        return passed(f"every disk already exists on {destination}: libvirt copies into it")
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
    return Verdict.of(not problems, "; ".join(problems or notes))


VM_AND_DESTINATION = Needs.VM | Needs.DESTINATION


@dataclass(frozen=True)
class Rule:
    judge: Callable[[Facts], Verdict]
    needs: Needs = Needs.NOTHING


RULES: dict[CheckName, Rule] = {
    CheckName.DESTINATION_IS_NOT_SOURCE: Rule(destination_is_not_source),
    CheckName.DESTINATION_NOT_IN_MAINTENANCE: Rule(destination_not_in_maintenance),
    CheckName.NO_OTHER_MIGRATION: Rule(no_other_migration),
    CheckName.TLS_CERTIFICATES: Rule(tls_certificates),
    CheckName.SOURCE_REACHABLE: Rule(source_reachable),
    CheckName.DESTINATION_REACHABLE: Rule(destination_reachable),
    CheckName.SAME_HYPERVISOR_AND_ARCH: Rule(same_hypervisor_and_arch, Needs.DESTINATION),
    CheckName.VM_STATE_FITS_MODE: Rule(vm_state_fits_mode, VM_AND_DESTINATION),
    CheckName.CPU_COMPATIBLE: Rule(cpu_compatible, Needs.VM_ON_DESTINATION),
    CheckName.NO_HOST_DEVICES: Rule(no_host_devices, VM_AND_DESTINATION),
    CheckName.DISKS_AVAILABLE: Rule(disks_available, Needs.VM_ON_DESTINATION),
    CheckName.DESTINATION_HAS_SPACE: Rule(destination_has_space, Needs.VM_ON_DESTINATION),
    CheckName.ENOUGH_MEMORY: Rule(enough_memory, VM_AND_DESTINATION),
    CheckName.NO_NAME_OR_UUID_CLASH: Rule(no_name_or_uuid_clash, VM_AND_DESTINATION),
    CheckName.PEER_ACCESS: Rule(peer_access, Needs.PEER),
}
