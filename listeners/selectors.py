"""Reads of the listeners: which hosts are listened to, and what a host's listener does."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import pgettext

from hosts.models import Host
from listeners.models import HostListener, lease_stale, listening
from migrations_app.domain.lifecycle import RUNNING_STATUSES, MigrationStatus
from migrations_app.models import Migration

# A migration's own late events (the source undefined after the switch) may arrive after
# its record is final.
MIGRATION_AFTERMATH_S = 60


def hosts_listened_ids() -> set[int]:
    return set(HostListener.objects.filter(listening()).values_list("host_id", flat=True))


def hosts_due_for_poll():
    """Hosts without a live listener; the others once per INVENTORY_SAFETY_NET_MINUTES,
    in case an event was lost."""
    overdue = timezone.now() - timedelta(minutes=settings.INVENTORY_SAFETY_NET_MINUTES)
    return (
        Host.objects.filter(retired=False)
        .filter(
            ~Q(pk__in=hosts_listened_ids())
            | Q(last_seen_at__isnull=True)
            | Q(last_seen_at__lt=overdue)
        )
        .order_by("name")
    )


# The portal acts on the VM (a worker, the reconciler, a person resolving): not while a
# migration only waits (scheduled, queued).
ACTING_STATUSES = [*RUNNING_STATUSES, MigrationStatus.NEEDS_ATTENTION]


def vm_migration_context(*, uuid: str) -> tuple[bool, bool]:
    """(the portal is migrating the VM, a migration of it ended within
    MIGRATION_AFTERMATH_S)."""
    of_vm = Migration.objects.filter(vm_uuid=uuid)
    active = of_vm.filter(status__in=ACTING_STATUSES).exists()
    since = timezone.now() - timedelta(seconds=MIGRATION_AFTERMATH_S)
    recent = of_vm.filter(finished_at__gte=since).exists()
    return active, recent


def listener_view(host: Host) -> dict:
    """What the host page says about the host's listener."""
    row = HostListener.objects.filter(host=host).first()
    alive = HostListener.objects.filter(listening(), host=host).exists()
    if (
        row is None
        or not row.owner
        or HostListener.objects.filter(lease_stale(), host=host).exists()
    ):
        label = pgettext("event listener state", "No listener")
        return {"state": "none", "label": label, "row": row, "alive": False}
    return {"state": row.state, "label": row.get_state_display(), "row": row, "alive": alive}
