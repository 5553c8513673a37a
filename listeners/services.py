"""What a libvirt event changes: the VM's row, an audit event when someone outside the
portal made the change, and a message to the pages, all fenced by the listener's lease."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.db.models import F

from audit.events import EventType
from audit.services import Actor, audit_event_record
from core.db import DbNow
from core.publish import send_after_commit
from hosts.hypervisor import DomainEvent, DomainInfo
from hosts.models import Host
from listeners import rules
from listeners.models import HostListener
from listeners.selectors import vm_migration_context
from vms.models import VM, VMState
from vms.services import vm_sync_one

INVENTORY_GROUP = "inventory"  # who sees every host group


def inventory_group_of(host_group_id: int) -> str:
    """The channel group of those who see only some host groups: one per host group."""
    return f"{INVENTORY_GROUP}.hostgroup.{host_group_id}"


def listener_actor(host: Host) -> Actor:
    return Actor.system(f"event listener of {host.name}")


def host_event_apply(
    *, host_id: int, epoch: int, event: DomainEvent, info: DomainInfo | None, read_at: datetime
) -> bool:
    """Apply one event on `host_id` (`info`: the domain as read after it; None: gone).
    False if this listener's lease was taken over: then nothing is written."""
    with transaction.atomic():
        fenced = HostListener.objects.filter(pk=host_id, epoch=epoch).update(
            last_event_at=DbNow(), events_seen=F("events_seen") + 1
        )
        if not fenced:
            return False
        host = Host.objects.get(pk=host_id)
        if not rules.changes_state(event):
            return True
        before = _vm_view(host, event.uuid)
        vm_sync_one(
            host=host, uuid=event.uuid, info=info, synced_at=read_at, actor=listener_actor(host)
        )
        vm = VM.objects.filter(host=host, uuid=event.uuid).first()
        if vm is None:
            return True  # gone before it was ever seen
        after = _vm_view(host, event.uuid)
        active, recent = vm_migration_context(uuid=event.uuid)
        if rules.changed_outside(event, migration_active=active, migration_ended_recently=recent):
            audit_event_record(
                actor=listener_actor(host),
                event_type=EventType.VM_CHANGED_OUTSIDE,
                target=vm,
                before=before,
                after=after,
                detail={
                    "host": host.name,
                    "vm_uuid": event.uuid,
                    "vm_name": event.name,
                    "event": event.kind if event.kind != "lifecycle" else event.event,
                    "reason": event.detail,
                },
            )
        message = {
            "type": "inventory.vm",
            "event": f"{event.event or event.kind}/{event.detail}".rstrip("/"),
            "host": host.name,
            "host_id": host.pk,
            "vm": {
                "uuid": event.uuid,
                "name": vm.name,
                **after,
                "state_label": str(VMState(vm.state).label),
            },
        }
        what = f"{event.kind} of {event.name} on {host.name}"
        for channel_group in (INVENTORY_GROUP, inventory_group_of(host.group_id)):
            send_after_commit(channel_group, message, what)
    return True


def _vm_view(host: Host, uuid: str) -> dict | None:
    return VM.objects.filter(host=host, uuid=uuid).values("state", "state_reason").first() or None
