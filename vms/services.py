"""Keeping the VM inventory equal to what libvirt reports, and the host refresh."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction

from audit.events import EventType
from audit.services import Actor, audit_event_record
from hosts.gateway import DomainInfo
from hosts.models import Host
from hosts.selectors import host_find
from hosts.services import host_reachable_record, host_read, host_register_remote
from vms.models import VM, VMDisk, VMState

# The VM columns libvirt's domain info sets, by the same names.
_FROM_DOMAIN = (
    "name", "state", "state_reason", "persistent", "vcpus", "memory_kib", "max_memory_kib",
    "arch", "machine_type", "domain_type", "has_hostdev",
)  # fmt: skip


@dataclass
class SyncResult:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)


@transaction.atomic
def vms_sync_host(
    *, host: Host, domains: list[DomainInfo], synced_at: datetime, actor: Actor
) -> SyncResult:
    """Make the host's VM rows match its full domain list; a missing one is marked gone."""
    result = SyncResult()
    existing = {str(vm.uuid): vm for vm in VM.objects.select_for_update().filter(host=host)}
    for info in domains:
        vm = existing.pop(info.uuid, None)
        _vm_apply(host=host, vm=vm, info=info, synced_at=synced_at, actor=actor)
        (result.updated if vm is not None else result.added).append(info.name)
    for vm in existing.values():
        if _vm_mark_gone(host=host, vm=vm, synced_at=synced_at, actor=actor):
            result.gone.append(vm.name)
    return result


@transaction.atomic
def vm_sync_one(
    *, host: Host, uuid: str, info: DomainInfo | None, synced_at: datetime, actor: Actor
) -> None:
    """Make the row of `uuid` on `host` match `info` (None: no such domain), as
    `vms_sync_host` would (the engine, so the inventory follows a migration at once)."""
    vm = VM.objects.select_for_update().filter(host=host, uuid=uuid).first()
    if info is not None:
        _vm_apply(host=host, vm=vm, info=info, synced_at=synced_at, actor=actor)
    elif vm is not None:
        _vm_mark_gone(host=host, vm=vm, synced_at=synced_at, actor=actor)


def _vm_apply(
    *, host: Host, vm: VM | None, info: DomainInfo, synced_at: datetime, actor: Actor
) -> VM:
    is_new = vm is None
    if is_new:
        vm = VM(uuid=info.uuid, host=host)
    for name in _FROM_DOMAIN:
        setattr(vm, name, getattr(info, name))
    vm.last_synced_at = synced_at
    vm.gone_at = None
    vm.save()
    _vm_disks_replace(vm=vm, host=host, info=info)
    if is_new:
        audit_event_record(
            actor=actor,
            event_type=EventType.VM_DISCOVERED,
            target=vm,
            after={"host": host.name, "state": vm.state},
        )
    return vm


def _vm_mark_gone(*, host: Host, vm: VM, synced_at: datetime, actor: Actor) -> bool:
    if vm.state == VMState.GONE:
        return False
    previous = vm.state
    vm.state = VMState.GONE
    vm.gone_at = synced_at
    vm.last_synced_at = synced_at
    vm.save(update_fields=["state", "gone_at", "last_synced_at"])
    audit_event_record(
        actor=actor,
        event_type=EventType.VM_GONE,
        target=vm,
        before={"host": host.name, "state": previous},
        after={"state": VMState.GONE},
    )
    return True


def _vm_disks_replace(*, vm: VM, host: Host, info: DomainInfo) -> None:
    vm.disks.all().delete()
    VMDisk.objects.bulk_create(
        VMDisk(
            vm=vm,
            target=disk.target,
            device=disk.device,
            path=disk.path,
            format=disk.format,
            size_bytes=disk.size_bytes,
            on_shared_storage=bool(disk.path) and host.is_on_shared_storage(disk.path),
        )
        for disk in info.disks
    )


def host_refresh(*, host: Host, actor: Actor, reuse: bool = False) -> Host:
    """Re-read the host and sync its VMs (one connection, one transaction); an unreachable
    host is recorded, not raised. `reuse`: on the process's pooled connection."""
    reading = host_read(host=host, actor=actor, reuse=reuse)
    if reading.capabilities is None:
        return reading.host
    with transaction.atomic():
        caps = reading.capabilities
        host = host_reachable_record(host=reading.host, capabilities=caps, actor=actor)
        vms_sync_host(host=host, domains=reading.domains, synced_at=host.last_seen_at, actor=actor)
    return host


def host_resolve_or_register(
    *, remote_host: str, actor: Actor, group_id: int | None = None
) -> Host:
    """The host named or addressed `remote_host`, else one registered now (into
    `group_id`: the source's host group) and refreshed."""
    host = host_find(remote_host=remote_host)
    if host is not None:
        return host
    registered = host_register_remote(remote_host=remote_host, actor=actor, group_id=group_id)
    return host_refresh(host=registered, actor=actor)
