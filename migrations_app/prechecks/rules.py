"""The pre-checks' rules: pure functions of the facts, each with the facts it needs.

The messages are in the language active when they are judged (the request's for
`migrate/check/`; the default, English, in a worker, where they are stored)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Flag, StrEnum, auto

from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from hosts.access.ssh_services import REMOTE_USER_NEEDS
from hosts.hypervisor import LIVE_MOVABLE_STATES, STOPPED_STATES
from hosts.models import Transport
from migrations_app.prechecks.disk_space import DiskToCopy, copy_space_verdict
from migrations_app.prechecks.facts import Facts, Unreachable, VmOnDestination, disk_paths
from migrations_app.prechecks.verdicts import CheckStatus, Verdict, failed, passed
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
        return failed(_("%(host)s is the host the VM runs on now") % {"host": dst.name})
    return passed(
        _("%(source)s -> %(destination)s") % {"source": src.name, "destination": dst.name}
    )


def destination_not_in_maintenance(facts: Facts) -> Verdict:
    """A host in maintenance, or retired, takes no new VMs (the worker's plan is read at
    its claim)."""
    dst = facts.plan.destination
    if dst.retired:
        return failed(
            _(
                "%(host)s is retired and takes no VMs: choose another host, "
                "or bring it back into service first"
            )
            % {"host": dst.name}
        )
    if not dst.maintenance:
        return passed(_("%(host)s is not in maintenance") % {"host": dst.name})
    since = (
        _(" since %(when)s UTC") % {"when": f"{dst.maintenance_since:%Y-%m-%d %H:%M}"}
        if dst.maintenance_since
        else ""
    )
    why = f" ({dst.maintenance_reason})" if dst.maintenance_reason else ""
    return failed(
        _(
            "%(host)s is in maintenance%(since)s%(why)s and takes no new VMs: "
            "choose another host, or take it out of maintenance first"
        )
        % {"host": dst.name, "since": since, "why": why}
    )


def no_other_migration(facts: Facts) -> Verdict:
    other = facts.other_migration
    if other:
        return failed(
            _("migration %(number)s of this VM is already %(status)s")
            % {"number": other.pk, "status": other.status}
        )
    return passed(_("no other migration of this VM is queued or running"))


def tls_certificates(facts: Facts) -> Verdict:
    src, dst, problems = facts.plan.source, facts.plan.destination, facts.tls_problems
    if problems is None:
        return Verdict(
            CheckStatus.SKIPPED,
            _("not needed: no tls option, and the destination is not reached over tls"),
        )
    why = (
        _("the tls option")
        if facts.plan.options.tls
        else _("%(host)s is reached over tls") % {"host": dst.name}
    )
    if problems:
        return failed(
            _("needed for %(why)s: %(problems)s") % {"why": why, "problems": "; ".join(problems)}
        )
    until = min(
        t for h in (src, dst) for t in (h.tls_server_not_after, h.tls_client_not_after) if t
    )
    return passed(
        _(
            "%(source)s and %(destination)s have valid certificates of the portal's CA "
            "(the first expires %(day)s)"
        )
        % {"source": src.name, "destination": dst.name, "day": f"{until:%Y-%m-%d}"}
    )


def source_reachable(facts: Facts) -> Verdict:
    src = facts.plan.source
    if isinstance(facts.source, Unreachable):
        return failed(
            _("%(host)s is not reachable: %(why)s") % {"host": src.name, "why": facts.source.why}
        )
    if facts.vm is None:
        return failed(
            _("the VM is not on %(host)s any more%(where)s")
            % {"host": src.name, "where": _now_where(facts)}
        )
    return passed(_("%(host)s answered and has the VM") % {"host": src.name})


def _now_where(facts: Facts) -> str:
    """Where the destination says the VM is now (moved there outside the portal)."""
    found = facts.at_destination.by_uuid if facts.at_destination else None
    if found is None:
        return ""
    dst = facts.plan.destination.name
    if found.state == VMState.RUNNING:
        return _(": it runs on %(host)s now (moved outside the portal)") % {"host": dst}
    return _(": %(host)s has it now (%(state)s)") % {
        "host": dst,
        "state": found.state.replace("_", " "),
    }


def destination_reachable(facts: Facts) -> Verdict:
    dst = facts.plan.destination
    if isinstance(facts.destination, Unreachable):
        hint = (
            _(" (over ssh as %(user)s: %(needs)s, and the portal's key installed)")
            % {"user": dst.ssh_user, "needs": _(REMOTE_USER_NEEDS)}
            if dst.transport == Transport.SSH
            else ""
        )
        return failed(
            _("%(host)s is not reachable within %(seconds)s s: %(why)s%(hint)s")
            % {
                "host": dst.name,
                "seconds": f"{facts.timeout:g}",
                "why": facts.destination.why,
                "hint": hint,
            }
        )
    if isinstance(facts.vm_on_destination, Unreachable):
        return failed(
            _("%(host)s stopped answering: %(why)s")
            % {"host": dst.name, "why": facts.vm_on_destination.why}
        )
    return passed(
        _("%(host)s answered within %(seconds)s s")
        % {"host": dst.name, "seconds": f"{facts.timeout:g}"}
    )


def same_hypervisor_and_arch(facts: Facts) -> Verdict:
    src, dst = facts.plan.source, facts.plan.destination
    caps = facts.at_destination.capabilities
    if (src.hypervisor_type, src.arch) == (caps.hypervisor_type, caps.arch):
        return passed(
            _("both are %(hypervisor)s on %(arch)s")
            % {"hypervisor": caps.hypervisor_type, "arch": caps.arch}
        )
    return failed(
        _(
            "%(source)s is %(source_hypervisor)s on %(source_arch)s, "
            "%(destination)s is %(hypervisor)s on %(arch)s"
        )
        % {
            "source": src.name,
            "source_hypervisor": src.hypervisor_type or "?",
            "source_arch": src.arch or "?",
            "destination": dst.name,
            "hypervisor": caps.hypervisor_type,
            "arch": caps.arch,
        }
    )


def vm_state_fits_mode(facts: Facts) -> Verdict:
    vm = facts.vm
    if facts.plan.options.live:
        if not vm.persistent and facts.inventory_persistent:
            # A person undefined it: migrating would define it again on the destination.
            return failed(
                _(
                    "the VM is %(state)s as a transient domain: its "
                    "definition on %(host)s was removed outside the portal "
                    "since the portal saw it; it is not migrated (that would define it "
                    "again on the destination)"
                )
                % {"state": vm.state.replace("_", " "), "host": facts.plan.source.name}
            )
        fits = vm.state in LIVE_MOVABLE_STATES
        reason = _("a live migration needs a running or paused VM")
    else:
        fits = vm.state == VMState.SHUT_OFF and vm.persistent
        reason = _("an offline migration needs a shut-off, persistent (defined) VM")
    state = vm.state.replace("_", " ")
    if fits:
        return passed(_("the VM is %(state)s") % {"state": state})
    return failed(_("the VM is %(state)s: %(reason)s") % {"state": state, "reason": reason})


def cpu_compatible(facts: Facts) -> Verdict:
    about = facts.vm_on_destination
    return Verdict.of(about.cpu_ok, about.cpu_reason)


def no_host_devices(facts: Facts) -> Verdict:
    if facts.vm.has_hostdev:
        return failed(_("the VM has PCI/USB host devices passed through, which cannot be migrated"))
    return passed(_("no host devices passed through"))


def disks_available(facts: Facts) -> Verdict:
    about, dst = facts.vm_on_destination, facts.plan.destination
    paths = disk_paths(facts.vm)
    if facts.plan.options.copies_storage:
        return passed(
            ngettext(
                "%(count)d disk(s) will be copied to %(host)s",
                "%(count)d disk(s) will be copied to %(host)s",
                len(paths),
            )
            % {"count": len(paths), "host": dst.name}
        )
    missing = [path for path in paths if about.volumes[path] is None]
    if missing:
        return failed(
            _(
                "not present on %(host)s: %(paths)s; "
                "use storage 'copy' to copy local disks during the migration"
            )
            % {"host": dst.name, "paths": ", ".join(missing)}
        )
    return passed(
        ngettext(
            "all %(count)d disk(s) are present on %(host)s",
            "all %(count)d disk(s) are present on %(host)s",
            len(paths),
        )
        % {"count": len(paths), "host": dst.name}
    )


def destination_has_space(facts: Facts) -> Verdict:
    about, vm = facts.vm_on_destination, facts.vm
    if not facts.plan.options.copies_storage:
        return passed(_("no disk is copied (shared storage)"))
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
        _("%(host)s has %(free)s MiB free, the VM needs %(needed)s MiB")
        % {"host": facts.plan.destination.name, "free": free // 2**20, "needed": needed // 2**20},
    )


def no_name_or_uuid_clash(facts: Facts) -> Verdict:
    verdict = destination_clash(facts)
    return Verdict.of(not verdict.clash, verdict.message)


def peer_access(facts: Facts) -> Verdict:
    """Can the source's own libvirtd open the destination (peer-to-peer)?"""
    peer, src, dst = facts.peer, facts.plan.source, facts.plan.destination
    if not peer.needed:
        return passed(
            _("%(source)s opens %(destination)s over %(transport)s")
            % {"source": src.name, "destination": dst.name, "transport": dst.transport}
        )
    names = {"source": src.name, "destination": dst.name}
    if peer.problem:
        return failed(
            _("%(source)s cannot be given access to %(destination)s: %(problem)s")
            % {**names, "problem": peer.problem}
        )
    if peer.current:
        return passed(_("%(source)s has its own ssh access to %(destination)s") % names)
    return passed(
        _("%(source)s gets its own ssh key for %(destination)s when the migration starts") % names
    )


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
                _(
                    "%(host)s keeps a %(state)s definition of this VM from an earlier "
                    "migration: it comes home and that definition is reused"
                )
                % {"host": destination, "state": state.replace("_", " ")},
            )
        why = (
            _("named '%(name)s', not '%(target)s'") % {"name": name, "target": target_name}
            if name != target_name
            else _("%(state)s: a second active copy") % {"state": state.replace("_", " ")}
        )
        return ClashVerdict(
            True,
            False,
            _("%(host)s already has a domain with this UUID (%(why)s)")
            % {"host": destination, "why": why},
        )
    names = {"host": destination, "target": target_name}
    if by_name_uuid is not None and by_name_uuid != vm_uuid:
        return ClashVerdict(
            True, False, _("%(host)s already has another domain named '%(target)s'") % names
        )
    return ClashVerdict(
        False, False, _("no domain named '%(target)s' or with this UUID on %(host)s") % names
    )


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
