"""Pure decisions of the listeners: whose change an event is, how long to wait to retry."""

from __future__ import annotations

from hosts.hypervisor import DomainEvent

# What a live migration itself makes libvirt report, on either host.
MIGRATION_SHAPED = frozenset(
    {
        ("lifecycle", "started", "migrated"),
        ("lifecycle", "stopped", "migrated"),
        ("lifecycle", "suspended", "migrated"),
        ("lifecycle", "suspended", "postcopy"),
        ("lifecycle", "resumed", "migrated"),
        ("lifecycle", "resumed", "postcopy"),
        ("lifecycle", "defined", "added"),
        ("lifecycle", "defined", "updated"),
        ("lifecycle", "undefined", "removed"),
        ("job_completed", "", ""),
    }
)


def changed_outside(
    event: DomainEvent, *, migration_active: bool, migration_ended_recently: bool
) -> bool:
    """Whether `event` is a change the portal did not make.

    While the portal migrates the VM, every change is the migration's record to tell
    (settlement reads libvirt's reason and says what someone did). Just after it ended,
    the migration's own late events (the source undefined, the destination defined) are
    still its own; anything else is someone else's."""
    if migration_active:
        return False
    if event.kind == "lifecycle" and event.event == "shutdown":
        return False  # shutting down began: the "stopped" that follows says how it ended
    if migration_ended_recently and (event.kind, event.event, event.detail) in MIGRATION_SHAPED:
        return False
    return True


def changes_state(event: DomainEvent) -> bool:
    """Whether the VM's row must be read again (a completed job changes nothing by itself)."""
    return event.kind in ("lifecycle", "reboot")


def retry_after_s(attempt: int, *, first: float = 1.0, ceiling: float = 30.0) -> float:
    """Back-off before reconnect number `attempt` (0: the first): 1, 2, 4 ... 30 s."""
    return min(ceiling, first * 2 ** max(0, attempt))
