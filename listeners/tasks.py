"""django-q2 entry points of the inventory: the polling safety net."""

from audit.services import Actor
from listeners.selectors import hosts_due_for_poll
from vms.services import host_refresh


def poll_hosts() -> dict[str, str]:
    """Scheduled every INVENTORY_SYNC_MINUTES (migration listeners 0002)."""
    actor = Actor.system("inventory-sync")
    return {host.name: host_refresh(host=host, actor=actor).status for host in hosts_due_for_poll()}
