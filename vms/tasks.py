"""django-q2 task entry points: load, call a service, nothing more."""

from audit.services import Actor
from vms.services import hosts_refresh_all


def sync_all_hosts() -> dict[str, str]:
    """Periodic inventory sync (scheduled by migration vms.0002)."""
    return hosts_refresh_all(actor=Actor.system("inventory-sync"))
