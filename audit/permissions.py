"""Who may read the audit log and reports: staff, and auditors (`audit.view_auditevent`)."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
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


def audit_reader_required(view):
    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not can_read_audit(request.user):
            raise PermissionDenied("The audit log is for administrators and auditors.")
        return view(request, *args, **kwargs)

    return wrapper
