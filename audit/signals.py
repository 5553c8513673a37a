"""Logins, logouts and failed logins, from Django's auth signals (sent during requests)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import Signal, receiver

from audit.events import EventType
from audit.services import audit_auth_event_record

# Sent after each LDAP login (audit.ldap_login) with `user` and `group_dns` (the person's
# LDAP groups), so apps above this one map them too (hosts: roles on host groups).
ldap_groups_seen = Signal()


@receiver(user_logged_in, dispatch_uid="audit.auth_login")
def _on_login(sender, request, user, **kwargs) -> None:
    audit_auth_event_record(
        request=request, event_type=EventType.AUTH_LOGIN, username=user.get_username(), account=user
    )


@receiver(user_logged_out, dispatch_uid="audit.auth_logout")
def _on_logout(sender, request, user, **kwargs) -> None:
    if user is None:  # logging out without being logged in changes nothing
        return
    audit_auth_event_record(
        request=request,
        event_type=EventType.AUTH_LOGOUT,
        username=user.get_username(),
        account=user,
    )


@receiver(user_login_failed, dispatch_uid="audit.auth_login_failed")
def _on_login_failed(sender, credentials, request=None, **kwargs) -> None:
    User = get_user_model()
    username = str(credentials.get(User.USERNAME_FIELD) or credentials.get("username") or "")
    account = User._default_manager.filter(**{User.USERNAME_FIELD: username}).first()
    audit_auth_event_record(
        request=request,
        event_type=EventType.AUTH_LOGIN_FAILED,
        username=username or "(empty)",
        account=account,
        succeeded=False,
        detail={"account_exists": account is not None},
    )
