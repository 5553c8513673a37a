"""Reads behind the server-rendered pages (never a host: only what the records say)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Case, Count, Q, QuerySet, When

from audit.events import EventType
from audit.models import AuditEvent
from hosts.models import Host
from hosts.selectors import scoped
from migrations_app.domain.lifecycle import ACTIVE_STATUSES, JOB_PHASES, Phase
from migrations_app.models import Migration
from migrations_app.selectors import migrations_visible_to
from migrations_app.serializers import MigrationSampleSerializer, MigrationSerializer
from vms.models import VM, VMState

MIGRATION_TARGET_TYPE = Migration._meta.label_lower  # "migrations_app.migration"
CHART_MAX_POINTS = 600


def hosts_overview(user: AbstractBaseUser, *, include_retired: bool = False) -> list[Host]:
    """The dashboard's hosts of the host groups `user` sees (retired ones left out unless
    asked for)."""
    hosts = Host.objects.select_related("group").annotate(
        running_vms=Count("vms", filter=Q(vms__state=VMState.RUNNING))
    )
    hosts = scoped(hosts, user, group_field="group_id")
    hosts = list(hosts if include_retired else hosts.filter(retired=False))
    active = Migration.objects.filter(status__in=ACTIVE_STATUSES)
    counts = Counter(active.values_list("source_id", flat=True))
    counts.update(active.values_list("destination_id", flat=True))
    for host in hosts:
        host.active_migrations = counts.get(host.pk, 0)
    return hosts


def host_overview(user: AbstractBaseUser, host_id: int) -> Host | None:
    hosts = hosts_overview(user, include_retired=True)
    return next((h for h in hosts if h.pk == host_id), None)


def host_names(user: AbstractBaseUser) -> QuerySet:
    """The names of the hosts `user` sees (the filters' choices)."""
    hosts = scoped(Host.objects.order_by("name"), user, group_field="group_id")
    return hosts.values_list("name", flat=True)


def host_vms(host: Host) -> list[VM]:
    return list(
        VM.objects.filter(host=host)
        .present()
        .order_by(Case(When(state=VMState.RUNNING, then=0), default=1), "name")
    )


def host_active_migrations(*, user: AbstractBaseUser, host: Host) -> list[Migration]:
    return list(
        active_migrations_for(user).filter(Q(source=host) | Q(destination=host)).order_by("pk")
    )


def vms_for_listing(user: AbstractBaseUser, *, state: str = "") -> QuerySet[VM]:
    """VM rows for the dashboard, of the host groups `user` sees: gone definitions only
    when asked for."""
    queryset = VM.objects.select_related("host").order_by("name", "host__name")
    queryset = scoped(queryset, user, group_field="host__group_id")
    return queryset if state == VMState.GONE else queryset.present()


def active_migrations_for(user: AbstractBaseUser) -> QuerySet[Migration]:
    return migrations_visible_to(user).filter(status__in=ACTIVE_STATUSES)


def vm_migrations(*, user: AbstractBaseUser, vm: VM, limit: int = 10) -> list[Migration]:
    return list(migrations_visible_to(user).filter(vm_uuid=vm.uuid)[:limit])


def vm_active_migration(*, user: AbstractBaseUser, vm: VM) -> Migration | None:
    return active_migrations_for(user).filter(vm_uuid=vm.uuid).first()


def vm_other_definitions(user: AbstractBaseUser, vm: VM) -> list[VM]:
    others = VM.objects.filter(uuid=vm.uuid).exclude(pk=vm.pk).select_related("host")
    return list(scoped(others, user, group_field="host__group_id"))


def migration_destinations(vm: VM) -> list[Host]:
    """The migrate dialog's hosts: the others of the VM's host group (crossing groups is
    a host admin's, through the API)."""
    hosts = Host.objects.filter(group_id=vm.host.group_id).exclude(pk=vm.host_id)
    return list(hosts.order_by("name"))


def migration_audit_events(migration: Migration) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(
            target_type=MIGRATION_TARGET_TYPE, target_id=str(migration.pk)
        ).order_by("occurred_at", "id")
    )


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    label: str
    kind: str  # "event" (an audit event) or "phase" (from the progress samples)
    detail: str = ""
    duration_s: float | None = None  # until the next entry (or the end)


def migration_timeline(migration: Migration, events: list[AuditEvent]) -> list[TimelineEntry]:
    """Audit events and the job phases the samples went through, in order, with durations."""
    raw: list[tuple[datetime, str, str, str]] = [
        (e.occurred_at, _event_label(e.event_type), "event", _event_detail(e)) for e in events
    ]
    previous_phase = None
    for taken_at, phase in migration.samples.order_by("taken_at", "id").values_list(
        "taken_at", "phase"
    ):
        if phase != previous_phase and phase in JOB_PHASES:
            raw.append((taken_at, Phase(phase).label, "phase", phase))
        previous_phase = phase
    raw.sort(key=lambda item: item[0])
    end = migration.finished_at
    entries = []
    for index, (at, label, kind, detail) in enumerate(raw):
        following = raw[index + 1][0] if index + 1 < len(raw) else end
        duration = (following - at).total_seconds() if following and following >= at else None
        entries.append(TimelineEntry(at, label, kind, detail, duration))
    return entries


def _event_detail(event: AuditEvent) -> str:
    """Who did it; for a convergence policy's step, what it did and why."""
    step = (event.detail or {}).get("convergence")
    if event.event_type != EventType.MIGRATION_CONVERGENCE_STEP or not step:
        return event.actor_name
    read = step.get("downtime_read_ms")
    did = f"{step['step']} to {read} ms (read back)" if read else step["step"]
    return f"{step['policy']}: {did}, pass {step['pass']}; {step['reason']}"


def _event_label(event_type: str) -> str:
    return EventType(event_type).label if event_type in EventType.values else event_type


def migration_chart_samples(migration: Migration) -> list[dict]:
    """Samples for the progress chart, thinned evenly to at most CHART_MAX_POINTS."""
    samples = list(migration.samples.order_by("taken_at", "id"))
    if len(samples) > CHART_MAX_POINTS:
        step = len(samples) / CHART_MAX_POINTS
        thinned = [samples[int(i * step)] for i in range(CHART_MAX_POINTS)]
        samples = thinned[:-1] + [samples[-1]]
    return MigrationSampleSerializer(samples, many=True).data


def migration_json(migration: Migration) -> dict:
    return MigrationSerializer(migration).data
