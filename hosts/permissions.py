"""Who may change hosts: `hosts.manage_host` (the "host admin" group) or staff; all read."""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

MANAGE_HOST = "hosts.manage_host"


def can_manage_hosts(user) -> bool:
    if not (user and user.is_authenticated and user.is_active):
        return False
    return user.is_staff or user.has_perm(MANAGE_HOST)


class CanManageHosts(BasePermission):
    message = "Changing hosts needs the host admin role (or an administrator)."

    def has_permission(self, request, view) -> bool:
        return can_manage_hosts(request.user)


class CanManageHostsOrReadOnly(CanManageHosts):
    """Any logged-in user reads; changes need the host admin role."""

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        return request.method in SAFE_METHODS or super().has_permission(request, view)
