"""Who may migrate (the operator role, globally or on a host group), who sees which
migrations and batches, and what a migrate request may ask for (crossing host groups,
registering hosts: the host admin's)."""

from __future__ import annotations

from django.utils.translation import gettext
from rest_framework.permissions import BasePermission

from hosts import actions
from hosts.models import GrantRole, Host
from hosts.permissions import can_manage_group
from hosts.selectors import has_role_on, has_role_somewhere

MIGRATE_VM = "migrations_app.migrate_vm"
VIEW_ALL_MIGRATIONS = "migrations_app.view_migration"
VIEW_ALL_BATCHES = "migrations_app.view_migrationbatch"


def _has(user, permission: str) -> bool:
    if not (user and user.is_authenticated and user.is_active):
        return False
    return user.is_staff or user.has_perm(permission)


def can_migrate(user) -> bool:
    """The operator role somewhere (globally, or on at least one host group)."""
    return has_role_somewhere(user, role=GrantRole.OPERATOR)


def can_migrate_in(user, group_id: int | None) -> bool:
    """The operator role on host group `group_id` (globally, or granted there)."""
    return has_role_on(user, role=GrantRole.OPERATOR, group_id=group_id)


def sees_all_migrations(user) -> bool:
    return _has(user, VIEW_ALL_MIGRATIONS)


def sees_all_batches(user) -> bool:
    return _has(user, VIEW_ALL_BATCHES)


def host_admin_reasons(*, remote_host: str, registered: bool, credentials_given: bool) -> list[str]:
    """What in a migrate (or check) request only a host admin may ask for: registering a
    new host, and setting up (or changing) a host's ssh access with user + password."""
    reasons = []
    if not registered:
        reasons.append(
            "remote_host: "
            + gettext(
                "%(host)s is not a registered host, and registering a host needs the host "
                "admin role (a host admin adds it with %(action)s)."
            )
            % {"host": remote_host, "action": actions.HOST_ADD}
        )
    if credentials_given:
        reasons.append(
            "user: "
            + gettext(
                "setting up a host's ssh access with a user and password needs the host "
                "admin role (leave user and password out once the host is set up)."
            )
        )
    return reasons


def crossing_reason(
    *, source: Host, destination: Host, source_admin: bool, destination_admin: bool
) -> str:
    """Why a move from `source` to `destination` is refused for crossing host groups
    ("" when both are in one group, or the person is host admin on both)."""
    if source.group_id == destination.group_id or (source_admin and destination_admin):
        return ""
    return (
        f"remote_host: {destination.name} is in host group {destination.group.name}, the "
        f"VM's host {source.name} in {source.group.name}: migrating across host groups "
        "needs the host admin role on both groups."
    )


def migrate_refusals(
    user, *, source: Host, remote_host: str, destination: Host | None, credentials_given: bool
) -> list[str]:
    """Every reason `user` may not ask to move a VM of `source` to `remote_host` (the
    request and its check alike); [] when allowed."""
    if not can_migrate_in(user, source.group_id):
        return [
            f"Migrating this VM needs the operator role on host group {source.group.name} "
            "(or globally)."
        ]
    source_admin = can_manage_group(user, source.group_id)
    reasons = []
    if not source_admin:
        reasons = host_admin_reasons(
            remote_host=remote_host,
            registered=destination is not None,
            credentials_given=credentials_given,
        )
    if destination is not None:
        crossing = crossing_reason(
            source=source,
            destination=destination,
            source_admin=source_admin,
            destination_admin=can_manage_group(user, destination.group_id),
        )
        if crossing:
            reasons.insert(0, crossing)
    return reasons


def _group_ids(obj) -> list[int]:
    """The host groups a migration, batch or VM belongs to (where its VM runs)."""
    if hasattr(obj, "source_id"):  # a migration: its source decides
        return [obj.source.group_id]
    if hasattr(obj, "children"):  # a batch: every child's source (an evacuation's host)
        groups = set(obj.children.values_list("source__group_id", flat=True))
        return sorted(groups | ({obj.host.group_id} if obj.host_id else set()))
    return [obj.host.group_id]


class CanMigrate(BasePermission):
    message = "Migrating needs the operator role (or an administrator)."

    def has_permission(self, request, view) -> bool:
        return can_migrate(request.user)

    def has_object_permission(self, request, view, obj) -> bool:
        if all(can_migrate_in(request.user, g) for g in _group_ids(obj)):
            return True
        self.message = (
            "Migrating needs the operator role on the VM's host group (or globally, or an "
            "administrator)."
        )
        return False
