"""Where should a VM go? Pure functions over facts the selectors gather: the destination
ranking (fit hosts first, by score) and the evacuation plan.

    score = 100 * free_after / total  -  10 * incoming  -  5 * outgoing  -  running_vms
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from django.utils.formats import number_format
from django.utils.translation import gettext as _

MIB = 2**20

INCOMING_WEIGHT = 10.0
OUTGOING_WEIGHT = 5.0
RUNNING_VM_WEIGHT = 1.0


@dataclass(frozen=True)
class VMNeeds:
    """What a VM asks of a destination."""

    uuid: str
    name: str
    memory_bytes: int
    live: bool  # running or paused: moves live and needs its memory on the destination
    state: str = "running"
    has_hostdev: bool = False
    active_migration: str = ""  # e.g. "migration 12 is queued": it is moving already
    local_disks: int = 0  # disks not on shared storage: copied (storage "copy")


@dataclass(frozen=True)
class HostFacts:
    """What the portal knows of a candidate destination (from its records)."""

    host_id: int
    name: str
    reachable: bool
    status_text: str = ""  # why not reachable (its status label and last error)
    maintenance: bool = False
    maintenance_reason: str = ""
    same_kind: bool = True  # hypervisor type and arch as the VM's host
    kind_text: str = ""
    memory_free_bytes: int | None = None
    memory_total_bytes: int | None = None
    incoming_memory_bytes: int = 0  # memory of the VMs already migrating to it
    incoming_running: int = 0
    incoming_queued: int = 0
    outgoing: int = 0
    running_vms: int = 0

    @property
    def incoming(self) -> int:
        return self.incoming_running + self.incoming_queued


@dataclass(frozen=True)
class CpuVerdict:
    """The pre-check `cpu_compatible` for one VM on one host: ok None = not checked."""

    ok: bool | None
    reason: str


CPU_NOT_NEEDED = CpuVerdict(True, "CPU not compared")


@dataclass(frozen=True)
class Placement:
    """One candidate destination for one VM (`host`: HostFacts, or the selectors' Host)."""

    host: Any
    score: float
    fit: bool
    reasons: list[str] = field(default_factory=list)
    memory_free_after_bytes: int | None = None
    # The ranking of a running VM: convergence.Forecast for this destination (no cap).
    convergence: Any = None


def _mib(size: int) -> str:
    # Grouped the language's way: "2,048 MiB" in English, "2.048 MiB" in Portuguese.
    return f"{number_format(round(size / MIB), decimal_pos=0, force_grouping=True)} MiB"


def placement_judge(*, vm: VMNeeds, facts: HostFacts, cpu: CpuVerdict) -> Placement:
    """One host for one VM: fit or not, its score, and the reasons, unfit ones first."""
    unfit: list[str] = []
    notes: list[str] = []
    if vm.has_hostdev:
        unfit.append(_("the VM has PCI/USB host devices passed through, which cannot be migrated"))
    if facts.maintenance:
        if facts.maintenance_reason:
            unfit.append(
                _("in maintenance: %(reason)s: takes no new VMs")
                % {"reason": facts.maintenance_reason}
            )
        else:
            unfit.append(_("in maintenance: takes no new VMs"))
    if not facts.reachable:
        unfit.append(facts.status_text or _("not reachable"))
    else:
        notes.append(_("reachable"))
    if not facts.same_kind:
        unfit.append(facts.kind_text or _("another hypervisor or architecture"))

    free_after = None
    fraction = 0.0
    needed = vm.memory_bytes if vm.live else 0
    if facts.memory_free_bytes is None:
        unfit.append(_("free memory unknown (never read): refresh the host"))
    else:
        free_after = facts.memory_free_bytes - facts.incoming_memory_bytes - needed
        incoming = facts.incoming_memory_bytes
        already = (
            _(", %(size)s already migrating there") % {"size": _mib(incoming)} if incoming else ""
        )
        if free_after < 0:
            unfit.append(
                _("not enough memory: %(free)s free%(already)s, the VM needs %(needed)s")
                % {
                    "free": _mib(facts.memory_free_bytes),
                    "already": already,
                    "needed": _mib(needed),
                }
            )
        else:
            what = (
                _("after placing the VM (%(size)s)") % {"size": _mib(needed)}
                if needed
                else _("(moves offline)")
            )
            left = {"free": _mib(free_after), "what": what, "already": already}
            if facts.memory_total_bytes:
                left["total"] = _mib(facts.memory_total_bytes)
                notes.append(_("%(free)s free of %(total)s %(what)s%(already)s") % left)
            else:
                notes.append(_("%(free)s free %(what)s%(already)s") % left)
        if facts.memory_total_bytes:
            fraction = max(free_after, 0) / facts.memory_total_bytes

    if cpu.ok is False:
        unfit.append(_("CPU: %(reason)s") % {"reason": cpu.reason})
    elif cpu.ok is None:
        unfit.append(_("CPU compatibility %(reason)s") % {"reason": cpu.reason})
    elif cpu is not CPU_NOT_NEEDED:
        notes.append(_("CPU: %(reason)s") % {"reason": cpu.reason})

    parts = []
    if facts.incoming:
        parts.append(
            _("%(count)s migration(s) coming in (%(running)s running, %(queued)s queued)")
            % {
                "count": facts.incoming,
                "running": facts.incoming_running,
                "queued": facts.incoming_queued,
            }
        )
    if facts.outgoing:
        parts.append(_("%(count)s going out") % {"count": facts.outgoing})
    notes.append(", ".join(parts) or _("no migration to or from it"))
    notes.append(_("%(count)s running VM(s)") % {"count": facts.running_vms})

    score = (
        100.0 * fraction
        - INCOMING_WEIGHT * facts.incoming
        - OUTGOING_WEIGHT * facts.outgoing
        - RUNNING_VM_WEIGHT * facts.running_vms
    )
    return Placement(
        host=facts,
        score=round(score, 2),
        fit=not unfit,
        reasons=unfit + notes,
        memory_free_after_bytes=free_after,
    )


def ranked(placements: list[Placement]) -> list[Placement]:
    """Fit first, then by score (higher first), then by name: a stable order."""
    return sorted(placements, key=lambda p: (not p.fit, -p.score, _name(p.host)))


def _name(host: Any) -> str:
    return getattr(host, "name", "")


def destinations_rank(
    *, vm: VMNeeds, candidates: list[HostFacts], cpu: dict[int, CpuVerdict]
) -> list[Placement]:
    """Every candidate judged for `vm`, best first, unfit last."""
    return ranked(
        [
            placement_judge(vm=vm, facts=facts, cpu=cpu.get(facts.host_id, CPU_NOT_NEEDED))
            for facts in candidates
        ]
    )


@dataclass(frozen=True)
class PlanRow:
    order: int  # the order the migrations are handed over in (1 first)
    wave: int  # when it can start given the slot limits (1: at once; 2: after one ends...)
    vm: VMNeeds
    destination: HostFacts
    score: float
    reasons: list[str]


@dataclass(frozen=True)
class Unmovable:
    vm: VMNeeds
    reasons: list[str]


@dataclass(frozen=True)
class EvacuationPlan:
    rows: list[PlanRow]
    unmovable: list[Unmovable]


def plan_evacuation(
    *,
    vms: list[VMNeeds],
    candidates: list[HostFacts],
    cpu: dict[tuple[str, int], CpuVerdict],
    max_incoming: int,
    max_outgoing: int,
    source_outgoing: int = 0,
) -> EvacuationPlan:
    """Which VM goes where, in what order, and what cannot move, and why.

    Largest memory first (first-fit decreasing: the hardest to place choose while most
    memory is free). Each VM goes to its best fit destination with the VMs planned
    before it counted as migrating there, so no host's memory is overcommitted. `wave`:
    when it can start under the slot limits, counting migrations already in flight.
    Unmovable: host devices, not running or paused (a live evacuation carries no
    offline moves), already moving, or no fit destination.
    """
    rows: list[PlanRow] = []
    unmovable: list[Unmovable] = []
    original = {facts.host_id: facts for facts in candidates}
    planned = dict(original)
    planned_in: dict[int, int] = {}
    for vm in sorted(vms, key=lambda v: (-v.memory_bytes, v.name, v.uuid)):
        if why := _why_unmovable(vm):
            unmovable.append(Unmovable(vm, [why]))
            continue
        ranking = destinations_rank(
            vm=vm,
            candidates=list(planned.values()),
            cpu={host_id: cpu.get((vm.uuid, host_id), CPU_NOT_NEEDED) for host_id in planned},
        )
        best = ranking[0] if ranking else None
        if best is None or not best.fit:
            reasons = [
                _("no fit destination (%(why)s)") % {"why": _unfit_summary(p)} for p in ranking
            ]
            unmovable.append(Unmovable(vm, reasons or [_("no other host is registered")]))
            continue
        chosen: HostFacts = best.host
        index_here = planned_in.get(chosen.host_id, 0)
        position = len(rows)
        wave = max(
            _wave(already=source_outgoing, index=position, limit=max_outgoing),
            _wave(already=original[chosen.host_id].incoming, index=index_here, limit=max_incoming),
        )
        reasons = list(best.reasons)
        if vm.local_disks:
            reasons.append(
                _(
                    "%(count)s local disk(s) copied to %(host)s (storage copy; "
                    "the pre-check destination_has_space checks the room)"
                )
                % {"count": vm.local_disks, "host": chosen.name}
            )
        if wave > 1:
            reasons.append(
                _(
                    "wave %(wave)s: waits for a free slot (at most %(out)s out of this "
                    "host and %(in)s into %(host)s at once)"
                )
                % {"wave": wave, "out": max_outgoing, "in": max_incoming, "host": chosen.name}
            )
        rows.append(PlanRow(position + 1, wave, vm, chosen, best.score, reasons))
        planned_in[chosen.host_id] = index_here + 1
        planned[chosen.host_id] = replace(
            chosen,
            incoming_memory_bytes=chosen.incoming_memory_bytes + vm.memory_bytes,
            incoming_queued=chosen.incoming_queued + 1,
        )
    return EvacuationPlan(rows=rows, unmovable=unmovable)


def _why_unmovable(vm: VMNeeds) -> str:
    if vm.active_migration:
        return _("already moving: %(migration)s") % {"migration": vm.active_migration}
    if vm.has_hostdev:
        return _("has PCI/USB host devices passed through: cannot be migrated")
    if not vm.live:
        return _(
            "%(state)s: stays defined on this host (an evacuation moves running VMs live; "
            "migrate it offline from its page if the host is going away)"
        ) % {"state": vm.state.replace("_", " ")}
    return ""


def _wave(*, already: int, index: int, limit: int) -> int:
    """The wave of the index-th (0-based) migration with `already` running: 1 while free."""
    return math.floor((already + index) / max(limit, 1)) + 1


def _unfit_summary(placement: Placement) -> str:
    first = placement.reasons[0] if placement.reasons else _("unfit")
    return f"{_name(placement.host)}: {first}"
