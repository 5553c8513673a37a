"""Who may change hosts: the host admin role (`hosts.manage_host`, globally or granted on
a host group) or staff; reading needs a role that covers the host's group."""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from hosts.models import GrantRole
from hosts.selectors import MANAGE_HOST, has_role_on, has_role_somewhere

__all__ = ["MANAGE_HOST", "can_manage_hosts", "can_manage_group"]


def can_manage_hosts(user) -> bool:
    """Host admin somewhere (globally, or on at least one host group)."""
    return has_role_somewhere(user, role=GrantRole.HOST_ADMIN)


def can_manage_group(user, group_id: int | None) -> bool:
    return has_role_on(user, role=GrantRole.HOST_ADMIN, group_id=group_id)


def group_ids_of(obj) -> list[int | None]:
    """The host groups a host group, host, VM, peer trust or migration touches."""
    if hasattr(obj, "cpu_baseline_xml"):  # a host group itself
        return [obj.pk]
    if hasattr(obj, "group_id"):
        return [obj.group_id]
    if hasattr(obj, "source_id") and hasattr(obj, "destination_id"):
        return [obj.source.group_id, obj.destination.group_id]
    if getattr(obj, "host_id", None) is not None:
        return [obj.host.group_id]
    return [None]  # anything else: the global role only


class CanManageHosts(BasePermission):
    """Host admin somewhere; for one object, host admin on every host group it touches."""

    message = "Changing hosts needs the host admin role (or an administrator)."

    def has_permission(self, request, view) -> bool:
        return can_manage_hosts(request.user)

    def has_object_permission(self, request, view, obj) -> bool:
        if all(can_manage_group(request.user, g) for g in group_ids_of(obj)):
            return True
        self.message = (
            "Changing this host needs the host admin role on its host group "
            "(or globally, or an administrator)."
        )
        return False


class CanManageHostsOrReadOnly(CanManageHosts):
    """Who sees a host reads it; changes need the host admin role on its group."""

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        return request.method in SAFE_METHODS or super().has_permission(request, view)

    def has_object_permission(self, request, view, obj) -> bool:
        return request.method in SAFE_METHODS or super().has_object_permission(request, view, obj)


class CanManageAllHostsOrReadOnly(CanManageHostsOrReadOnly):
    """Who sees reads; changes need the host admin role globally (host groups themselves)."""

    message = "Changing host groups needs the host admin role globally (or an administrator)."

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        return request.method in SAFE_METHODS or can_manage_group(request.user, None)

    def has_object_permission(self, request, view, obj) -> bool:
        return self.has_permission(request, view)
