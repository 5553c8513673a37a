"""Who may migrate (the operator role), and who sees every migration and batch."""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from hosts import actions

MIGRATE_VM = "migrations_app.migrate_vm"
VIEW_ALL_MIGRATIONS = "migrations_app.view_migration"
VIEW_ALL_BATCHES = "migrations_app.view_migrationbatch"


def _has(user, permission: str) -> bool:
    if not (user and user.is_authenticated and user.is_active):
        return False
    return user.is_staff or user.has_perm(permission)


def can_migrate(user) -> bool:
    return _has(user, MIGRATE_VM)


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
            f"remote_host: {remote_host} is not a registered host, and registering a host "
            f"needs the host admin role (a host admin adds it with {actions.HOST_ADD})."
        )
    if credentials_given:
        reasons.append(
            "user: setting up a host's ssh access with a user and password needs the host "
            "admin role (leave user and password out once the host is set up)."
        )
    return reasons


class CanMigrate(BasePermission):
    message = "Migrating needs the operator role (or an administrator)."

    def has_permission(self, request, view) -> bool:
        return can_migrate(request.user)
