"""Reading migrations: who sees which, and which ones a report covers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import QueryDict
from django.utils import timezone

from core.filters import filtered
from hosts.hypervisor import LIVE_MOVABLE_STATES
from hosts.models import Host, HostStatus
from hosts.selectors import ROLES_THAT_SEE, host_groups_granted
from migrations_app.domain import placement
from migrations_app.domain.lifecycle import ACTIVE_STATUSES, RUNNING_STATUSES
from migrations_app.domain.options import MigrationOptions
from migrations_app.filters import MigrationReportFilterSet
from migrations_app.models import Migration, MigrationBatch
from migrations_app.permissions import sees_all_batches, sees_all_migrations
from migrations_app.prechecks.facts import cpu_verdicts
from migrations_app.prechecks.forecast import DirtyRateMeasurement, DirtyRateReading, forecast_of
from vms.models import VM, VMState

REPORT_DEFAULT_DAYS = 30


def _visible(
    queryset: QuerySet, user: AbstractBaseUser, sees_all: Callable, in_groups: Callable, **own
) -> QuerySet:
    """Administrators and the global roles see every row; other users their own, and
    those of the host groups a grant gives them (`in_groups(ids)`: that filter)."""
    if not user.is_authenticated:
        return queryset.none()
    if sees_all(user):
        return queryset
    groups = host_groups_granted(user, ROLES_THAT_SEE)
    return queryset.filter(Q(**own) | in_groups(groups)) if groups else queryset.filter(**own)


def _migration_in_groups(groups: frozenset[int]) -> Q:
    return Q(source__group_id__in=groups) | Q(destination__group_id__in=groups)


def _batch_in_groups(groups: frozenset[int]) -> Q:
    child = Migration.objects.filter(batch=OuterRef("pk"), source__group_id__in=groups)
    return Q(host__group_id__in=groups) | Q(Exists(child))


def migrations_visible_to(user: AbstractBaseUser) -> QuerySet[Migration]:
    queryset = Migration.objects.select_related("source", "destination")
    return _visible(queryset, user, sees_all_migrations, _migration_in_groups, requested_by=user)


def migrations_shown_to(user: AbstractBaseUser) -> QuerySet[Migration]:
    """migrations_visible_to with only the hosts' names (a Host row is ~45 columns)."""
    fields = [f.name for f in Migration._meta.concrete_fields]
    return migrations_visible_to(user).only(*fields, "source__name", "destination__name")


def batches_visible_to(user: AbstractBaseUser) -> QuerySet[MigrationBatch]:
    queryset = MigrationBatch.objects.select_related("host")
    return _visible(queryset, user, sees_all_batches, _batch_in_groups, created_by=user)


@dataclass(frozen=True)
class ReportScope:
    since: datetime
    until: datetime
    filters: dict

    def as_dict(self) -> dict:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "filters": self.filters,
        }


def migrations_for_report(
    *, params: QueryDict, now: datetime | None = None
) -> tuple[QuerySet[Migration], ReportScope]:
    """The migrations a report or export covers, and its scope."""
    data = params.copy()
    probe = MigrationReportFilterSet(params, queryset=Migration.objects.none())
    filtered(probe)  # bad values raise here, before the defaults are worked out
    until = probe.form.cleaned_data.get("until") or (now or timezone.now())
    since = probe.form.cleaned_data.get("since") or until - timedelta(days=REPORT_DEFAULT_DAYS)
    if since >= until:
        raise ValidationError({"since": ["The start of the range must be before its end."]})
    data["since"], data["until"] = since.isoformat(), until.isoformat()
    queryset = filtered(MigrationReportFilterSet(data, queryset=Migration.objects.all()))
    filters = {
        key: (params.getlist(key) if key == "outcome" else params.get(key))
        for key in MigrationReportFilterSet.base_filters
        if key not in ("since", "until") and params.get(key) not in (None, "")
    }
    return queryset, ReportScope(since=since, until=until, filters=filters)


def _vm_needs(vm: VM, active: dict[str, Migration]) -> placement.VMNeeds:
    migration = active.get(str(vm.uuid))
    return placement.VMNeeds(
        uuid=str(vm.uuid),
        name=vm.name,
        memory_bytes=vm.memory_kib * 1024,
        live=vm.state in LIVE_MOVABLE_STATES,
        state=vm.state,
        has_hostdev=vm.has_hostdev,
        active_migration=f"migration {migration.pk} is {migration.status}" if migration else "",
        local_disks=sum(
            1 for d in vm.disks.all() if d.device == "disk" and d.path and not d.on_shared_storage
        ),
    )


def _status_text(host: Host) -> str:
    if host.status == HostStatus.UNREACHABLE:
        return f"unreachable: {host.last_error}" if host.last_error else "unreachable"
    if host.status == HostStatus.UNKNOWN:
        return "not contacted yet: refresh it first"
    return ""


def _host_facts(
    *, source: Host, candidates: list[Host], leaving_out: str = ""
) -> list[placement.HostFacts]:
    """What the records say of each candidate (`leaving_out`: the VM placed)."""
    in_flight = Migration.objects.filter(status__in=ACTIVE_STATUSES)
    if leaving_out:
        in_flight = in_flight.exclude(vm_uuid=leaving_out)
    active = list(in_flight.values_list("vm_uuid", "source_id", "destination_id", "status"))
    memory = {
        (str(uuid), host_id): kib
        for uuid, host_id, kib in VM.objects.filter(
            uuid__in={row[0] for row in active}
        ).values_list("uuid", "host_id", "memory_kib")
    }
    memory_by_uuid = {uuid: kib for (uuid, _host), kib in memory.items()}
    incoming_memory: Counter[int] = Counter()
    incoming_running: Counter[int] = Counter()
    incoming_queued: Counter[int] = Counter()
    outgoing: Counter[int] = Counter()
    for uuid, source_id, destination_id, status in active:
        kib = memory.get((str(uuid), source_id), memory_by_uuid.get(str(uuid), 0))
        incoming_memory[destination_id] += kib * 1024
        if status in RUNNING_STATUSES:
            incoming_running[destination_id] += 1
        else:
            incoming_queued[destination_id] += 1
        outgoing[source_id] += 1
    running = Counter(VM.objects.filter(state=VMState.RUNNING).values_list("host_id", flat=True))
    facts = []
    for host in candidates:
        kind_text = ""
        known = source.hypervisor_type and source.arch and host.hypervisor_type and host.arch
        if known and (source.hypervisor_type, source.arch) != (host.hypervisor_type, host.arch):
            kind_text = (
                f"{host.hypervisor_type} on {host.arch}, the VM's host is "
                f"{source.hypervisor_type} on {source.arch}"
            )
        facts.append(
            placement.HostFacts(
                host_id=host.pk,
                name=host.name,
                reachable=host.status == HostStatus.REACHABLE,
                status_text=_status_text(host),
                maintenance=host.maintenance,
                maintenance_reason=host.maintenance_reason,
                same_kind=not kind_text,
                kind_text=kind_text,
                memory_free_bytes=host.memory_free_bytes,
                memory_total_bytes=host.memory_total_bytes,
                incoming_memory_bytes=incoming_memory[host.pk],
                incoming_running=incoming_running[host.pk],
                incoming_queued=incoming_queued[host.pk],
                outgoing=outgoing[host.pk],
                running_vms=running[host.pk],
            )
        )
    return facts


def _cpu_facts(
    *, source: Host, vms: list[placement.VMNeeds], facts: list[placement.HostFacts]
) -> dict[tuple[str, int], placement.CpuVerdict]:
    """libvirt's CPU comparison, only for the hosts that could still be fit."""
    fit_ids = [f.host_id for f in facts if f.reachable and not f.maintenance and f.same_kind]
    hosts = list(Host.objects.filter(pk__in=fit_ids))
    movable = [(vm.uuid, vm.live) for vm in vms if not vm.has_hostdev]
    if not hosts or not movable:
        return {}
    timeout = settings.PLACEMENT_CPU_CHECK_TIMEOUT_S
    verdicts = cpu_verdicts(source=source, vms=movable, destinations=hosts, timeout=timeout)
    return {key: placement.CpuVerdict(ok, reason) for key, (ok, reason) in verdicts.items()}


def destinations_ranked(vm: VM, *, dirty_rate_s: int = 0) -> list[placement.Placement]:
    """Every other host of the VM's host group (as Host rows), best first; asks libvirt
    for the CPUs and, for a running VM, its dirty rate (over `dirty_rate_s`, meanwhile):
    each host's forecast of an uncapped copy, and a reason when it would not converge.
    Crossing host groups is a host admin's explicit choice, never a recommendation."""
    running = vm.state == VMState.RUNNING
    measurement = DirtyRateMeasurement(vm, seconds=dirty_rate_s) if running else None
    candidates = list(_same_group_hosts(vm.host))
    active = _active_by_uuid()
    needs = _vm_needs(vm, active)
    facts = _host_facts(source=vm.host, candidates=candidates, leaving_out=str(vm.uuid))
    cpu = _cpu_facts(source=vm.host, vms=[needs], facts=facts)
    ranking = placement.destinations_rank(
        vm=needs,
        candidates=facts,
        cpu={host_id: verdict for (_uuid, host_id), verdict in cpu.items()},
    )
    by_id = {h.pk: h for h in candidates}
    reading = measurement.reading() if measurement else None
    return [
        _with_forecast(replace(p, host=by_id[p.host.host_id]), vm=vm, reading=reading)
        for p in ranking
    ]


def _with_forecast(
    found: placement.Placement, *, vm: VM, reading: DirtyRateReading | None
) -> placement.Placement:
    if reading is None:
        return found
    outlook = forecast_of(
        reading=reading,
        source=vm.host,
        destination=found.host,
        options=MigrationOptions(validate=False),
    )
    reasons = [*found.reasons, outlook.message] if outlook.warns else found.reasons
    return replace(found, convergence=outlook, reasons=reasons)


def _same_group_hosts(host: Host) -> QuerySet[Host]:
    """The candidates for a VM of `host`: the other hosts in service in its group."""
    others = Host.objects.filter(retired=False, group_id=host.group_id).exclude(pk=host.pk)
    return others.order_by("name")


def _active_by_uuid() -> dict[str, Migration]:
    return {str(m.vm_uuid): m for m in Migration.objects.filter(status__in=ACTIVE_STATUSES)}


@dataclass(frozen=True)
class HostEvacuationPlan:
    """`placement.plan_evacuation` for a host, with the rows' Host and VM records."""

    host: Host
    plan: placement.EvacuationPlan
    vms: dict[str, VM]  # uuid -> the VM row on the host
    destinations: dict[int, Host]


def evacuation_plan(host: Host) -> HostEvacuationPlan:
    """The plan to move every present VM off `host`; writes nothing."""
    rows = list(VM.objects.filter(host=host).present().prefetch_related("disks").order_by("name"))
    active = _active_by_uuid()
    needs = [_vm_needs(vm, active) for vm in rows]
    candidates = list(_same_group_hosts(host))
    facts = _host_facts(source=host, candidates=candidates)
    source_outgoing = Migration.objects.filter(source=host, status__in=ACTIVE_STATUSES).count()
    plan = placement.plan_evacuation(
        vms=needs,
        candidates=facts,
        cpu=_cpu_facts(
            source=host, vms=[n for n in needs if n.live and not n.active_migration], facts=facts
        ),
        max_incoming=settings.MIGRATION_MAX_INCOMING_PER_HOST,
        max_outgoing=settings.MIGRATION_MAX_OUTGOING_PER_HOST,
        source_outgoing=source_outgoing,
    )
    return HostEvacuationPlan(
        host=host,
        plan=plan,
        vms={str(vm.uuid): vm for vm in rows},
        destinations={h.pk: h for h in candidates},
    )
