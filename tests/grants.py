"""Per-group roles for tests: a grant as the admin or the API would make it."""

from __future__ import annotations

from hosts.models import HostGroup, HostGroupGrant


def grant(user, role: str, host_group: str = "default") -> HostGroupGrant:
    """Give `user` `role` on a host group (made if missing)."""
    group, _ = HostGroup.objects.get_or_create(name=host_group)
    return HostGroupGrant.objects.create(host_group=group, role=role, user=user)
