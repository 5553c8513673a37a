"""The listener lease of each host: taken when free or stale, renewed, fenced by epoch."""

from __future__ import annotations

from django.db.models import F, Q

from core.db import DbNow
from listeners.models import HostListener, ListenerState, lease_stale


def listener_claim(*, host_id: int, owner: str) -> int | None:
    """Take the host's lease if nobody holds it or its holder stopped beating: the new
    epoch, or None (held by a live owner, or the host is gone)."""
    HostListener.objects.get_or_create(host_id=host_id)
    claimed = (
        HostListener.objects.filter(pk=host_id)
        .filter(lease_stale() | Q(owner=""))
        .update(
            owner=owner,
            epoch=F("epoch") + 1,
            heartbeat_at=DbNow(),
            state=ListenerState.CONNECTING,
            state_since=DbNow(),
            last_error="",
        )
    )
    if not claimed:
        return None
    # Nobody else can claim it now: its heartbeat is fresh.
    held = HostListener.objects.filter(pk=host_id, owner=owner)
    return held.values_list("epoch", flat=True).first()


def listener_renew(*, host_id: int, epoch: int) -> bool:
    """Heartbeat on the database's clock; False if the lease was taken over."""
    return bool(HostListener.objects.filter(pk=host_id, epoch=epoch).update(heartbeat_at=DbNow()))


def listener_state_record(*, host_id: int, epoch: int, state: str, error: str = "") -> bool:
    fields = {"state": state, "state_since": DbNow(), "heartbeat_at": DbNow(), "last_error": error}
    return bool(HostListener.objects.filter(pk=host_id, epoch=epoch).update(**fields))


def listener_release(*, host_id: int, epoch: int) -> None:
    """Give the lease up at once (a clean stop): another process may take it now."""
    HostListener.objects.filter(pk=host_id, epoch=epoch).update(
        owner="", heartbeat_at=None, state=ListenerState.CONNECTING, state_since=DbNow()
    )
