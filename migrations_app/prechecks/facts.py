"""What the pre-checks read, gathered once: the portal's records, then both hosts at once.
A host that does not answer in time is a fact (`Unreachable`), never an exception; only
libvirt calls run in threads of their own (database connections are per thread)."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TypeVar

from django.conf import settings

from core import concurrency
from hosts import gateway
from hosts.access.peer_services import peer_trust_current, peer_trust_needed, peer_trust_problem
from hosts.access.tls_services import host_tls_problems, host_tls_served_problem
from hosts.connections import host_connect, host_connector
from hosts.models import Host, Transport
from migrations_app.domain.options import MigrationOptions
from migrations_app.models import ACTIVE_STATUSES, Migration
from vms.models import VM

T = TypeVar("T")
Opener = Callable[[], AbstractContextManager[gateway.HostConnection]]


@dataclass(frozen=True)
class MigrationPlan:
    """What is to be checked: enough to run the checks without a Migration row."""

    vm_uuid: str
    vm_name: str
    source: Host
    destination: Host
    options: MigrationOptions
    migration_id: int | None = None  # the migration being checked, not "another" one
    # Defined on the source when requested (Migration.source_was_persistent; None: ask
    # the inventory now).
    source_was_persistent: bool | None = None

    @classmethod
    def of_request(cls, *, vm: VM, destination: Host, options: MigrationOptions) -> MigrationPlan:
        """A migration as requested, before it is recorded (`migrate/check`)."""
        return cls(str(vm.uuid), vm.name, vm.host, destination, options)

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
            source_was_persistent=migration.source_was_persistent,
        )

    @property
    def target_name(self) -> str:
        return self.options.new_name or self.vm_name

    @property
    def same_host(self) -> bool:
        src, dst = self.source, self.destination
        return src.pk == dst.pk or bool(src.host_uuid and src.host_uuid == dst.host_uuid)


@dataclass(frozen=True)
class Unreachable:
    """A host that did not answer (in time): why, in the words of the error."""

    why: str


@dataclass(frozen=True)
class PeerAccess:
    """Can the source's own libvirtd open the destination? From the portal's records."""

    needed: bool  # ssh trust from the source to the destination (transport ssh)
    problem: str | None
    current: bool


@dataclass(frozen=True)
class SourceFacts:
    vm: gateway.DomainInfo | None  # None: the VM is not on the source any more
    vm_xml: str = ""
    volumes: dict[str, gateway.VolumeInfo | None] | None = None  # storage "copy" only


@dataclass(frozen=True)
class DestinationFacts:
    capabilities: gateway.HostCapabilities
    by_uuid: gateway.DomainInfo | None  # a domain with the VM's UUID
    by_name: gateway.DomainInfo | None  # a domain with the name the VM will have


@dataclass(frozen=True)
class VmOnDestination:
    """What the destination says about the VM's definition and disks."""

    cpu_ok: bool
    cpu_reason: str
    volumes: dict[str, gateway.VolumeInfo | None]
    pools: dict[str, gateway.PoolInfo | None]  # by folder of a disk to create (copy)


@dataclass(frozen=True)
class Facts:
    plan: MigrationPlan
    timeout: float
    other_migration: Migration | None  # another one of this VM, queued or running
    tls_problems: tuple[str, ...] | None  # None: TLS plays no part in this migration
    peer: PeerAccess | None  # None: the source is the destination
    source: SourceFacts | Unreachable
    destination: DestinationFacts | Unreachable
    vm_on_destination: VmOnDestination | Unreachable | None  # None: not asked
    # Was the VM defined (persistent) on the source as the portal knew it: when the
    # migration was requested, else the inventory's last view (None: not known). Tells
    # a definition removed outside the portal since then.
    inventory_persistent: bool | None = None

    @property
    def vm(self) -> gateway.DomainInfo | None:
        return self.source.vm if isinstance(self.source, SourceFacts) else None

    @property
    def at_destination(self) -> DestinationFacts | None:
        return self.destination if isinstance(self.destination, DestinationFacts) else None


def disk_paths(vm: gateway.DomainInfo) -> list[str]:
    return [d.path for d in vm.disks if d.path and d.device == "disk"]


def facts_gather(plan: MigrationPlan) -> Facts:
    src, dst = plan.source, plan.destination
    timeout = settings.MIGRATION_PRECHECK_TIMEOUT_S
    # Long-lived connections: opening bounded by `timeout`, calls by keepalive.
    bound = timeout + gateway.keepalive_bound_s()
    other_migration = _other_migration(plan)
    tls = tls_problems(plan)
    open_src = host_connector(src, timeout=timeout, reuse=True)
    open_dst = host_connector(dst, timeout=timeout, reuse=True)
    source, destination = _answers(
        [lambda: _ask_source(open_src, plan), lambda: _ask_destination(open_dst, plan)], bound=bound
    )
    vm_on_destination = None
    if isinstance(source, SourceFacts) and source.vm and isinstance(destination, DestinationFacts):
        (vm_on_destination,) = _answers(
            [lambda: _ask_about_vm(open_dst, plan, source)], bound=bound
        )
    return Facts(
        plan=plan,
        timeout=timeout,
        other_migration=other_migration,
        tls_problems=tls,
        peer=None if plan.same_host else _peer_access(src, dst),
        source=source,
        destination=destination,
        vm_on_destination=vm_on_destination,
        inventory_persistent=_inventory_persistent(plan),
    )


def _answers(calls: list[Callable[[], T]], *, bound: float) -> list[T | Unreachable]:
    """Each call's answer, or why its host did not give one within `bound` seconds."""
    answers: list[T | Unreachable] = []
    for pending in concurrency.within(calls, bound=bound, name="precheck"):
        if pending is None:
            answers.append(Unreachable(f"no answer within {bound:g} s"))
        elif isinstance(pending.error, gateway.GatewayError):
            answers.append(Unreachable(str(pending.error)))
        elif pending.error is not None:
            answers.append(Unreachable(f"unexpected error: {pending.error}"))
        else:
            answers.append(pending.result())
    return answers


def _ask_source(open_src: Opener, plan: MigrationPlan) -> SourceFacts:
    with open_src() as conn:
        vm = conn.find_domain(uuid=plan.vm_uuid)
        if vm is None:
            return SourceFacts(None)
        vm_xml = conn.domain_xml(plan.vm_uuid, inactive=not plan.options.live)
        copies = plan.options.copies_storage
        return SourceFacts(vm, vm_xml, conn.volumes(disk_paths(vm)) if copies else None)


def _ask_destination(open_dst: Opener, plan: MigrationPlan) -> DestinationFacts:
    with open_dst() as conn:
        by_uuid = conn.find_domain(uuid=plan.vm_uuid)
        if by_uuid and by_uuid.name == plan.target_name:
            by_name = by_uuid
        else:
            by_name = conn.find_domain(name=plan.target_name)
        return DestinationFacts(conn.capabilities(), by_uuid, by_name)


def _ask_about_vm(open_dst: Opener, plan: MigrationPlan, source: SourceFacts) -> VmOnDestination:
    paths = disk_paths(source.vm)
    with open_dst() as conn:
        cpu_ok, cpu_reason = conn.compare_cpu(
            domain_xml=source.vm_xml, source_cpu_xml=plan.source.cpu_xml
        )
        here = conn.volumes(paths)
        pools = {}
        if plan.options.copies_storage:
            folders = {os.path.dirname(path) for path in paths if here[path] is None}
            pools = {folder: conn.pool_for_directory(folder) for folder in folders}
        return VmOnDestination(cpu_ok, cpu_reason, here, pools)


def _inventory_persistent(plan: MigrationPlan) -> bool | None:
    if plan.source_was_persistent is not None:
        return plan.source_was_persistent  # the inventory may have seen the removal since
    return (
        VM.objects.filter(uuid=plan.vm_uuid, host=plan.source, gone_at__isnull=True)
        .values_list("persistent", flat=True)
        .first()
    )


def _other_migration(plan: MigrationPlan) -> Migration | None:
    others = Migration.objects.filter(vm_uuid=plan.vm_uuid, status__in=ACTIVE_STATUSES)
    if plan.migration_id:
        others = others.exclude(pk=plan.migration_id)
    return others.first()


def tls_problems(plan: MigrationPlan) -> tuple[str, ...] | None:
    """What is wrong with the hosts' certificates; None: TLS plays no part."""
    src, dst = plan.source, plan.destination
    if not plan.options.tls and dst.transport != Transport.TLS:
        return None
    problems = host_tls_problems(src, role="source") + host_tls_problems(dst, role="destination")
    if not problems and dst.transport == Transport.TLS:
        served = host_tls_served_problem(dst)
        if served:
            problems.append(served)
    return tuple(problems)


def _peer_access(src: Host, dst: Host) -> PeerAccess:
    """Read-only: missing ssh trust is set up by the engine when the migration starts."""
    if not peer_trust_needed(src, dst):
        return PeerAccess(needed=False, problem=None, current=False)
    current = peer_trust_current(src, dst) is not None
    problem = None if current else peer_trust_problem(src, dst)
    return PeerAccess(needed=True, problem=problem, current=current)


def cpu_verdicts(
    *, source: Host, vms: list[tuple[str, bool]], destinations: list[Host], timeout: float
) -> dict[tuple[str, int], tuple[bool | None, str]]:
    """The pre-check `cpu_compatible` by (vm uuid, destination id), each host opened once."""
    verdicts: dict[tuple[str, int], tuple[bool | None, str]] = {}
    xmls: dict[str, str] = {}
    try:
        with host_connect(source, timeout=timeout) as conn:
            for uuid, live in vms:
                try:
                    xmls[uuid] = conn.domain_xml(uuid, inactive=not live)
                except gateway.DomainNotFound:
                    gone = f"the VM is not on {source.name} any more"
                    verdicts |= {(uuid, dst.pk): (None, gone) for dst in destinations}
    except gateway.GatewayError as exc:
        why = f"not checked: {source.name} (the VM's host) did not answer: {exc}"
        return {(uuid, dst.pk): (None, why) for uuid, _live in vms for dst in destinations}
    for dst in destinations:
        try:
            with host_connect(dst, timeout=timeout) as conn:
                verdicts |= {
                    (uuid, dst.pk): conn.compare_cpu(domain_xml=xml, source_cpu_xml=source.cpu_xml)
                    for uuid, xml in xmls.items()
                }
        except gateway.GatewayError as exc:
            why = f"not checked: {dst.name} did not answer within {timeout:g} s: {exc}"
            verdicts |= {(uuid, dst.pk): (None, why) for uuid in xmls}
    return verdicts
