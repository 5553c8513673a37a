"""Who may read the audit log and the reports: administrators (staff users) and
auditors (users given the "Can view audit event" permission: the group "auditor",
created by migrations_app/migrations/0013_roles.py)."""

from __future__ import annotations

from rest_framework.permissions import BasePermission

VIEW_PERMISSION = "audit.view_auditevent"


def can_read_audit(user) -> bool:
    if not (user and user.is_authenticated and user.is_active):
        return False
    return user.is_staff or user.has_perm(VIEW_PERMISSION)


class CanReadAudit(BasePermission):
    message = "Reading the audit log and reports needs the auditor role (or an administrator)."

    def has_permission(self, request, view) -> bool:
        return can_read_audit(request.user)
