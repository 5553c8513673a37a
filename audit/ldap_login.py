"""LDAP login (django-auth-ldap): the user's portal roles follow their LDAP groups at each
login (PORTAL_LDAP_ROLE_GROUPS maps group DNs to roles), and a change is audited as one
made in the admin is (`user.roles_changed`, actor "ldap")."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import transaction
from django_auth_ldap.backend import LDAPBackend

from audit.events import EventType
from audit.services import Actor, audit_event_record
from audit.signals import ldap_groups_seen

ROLES = ("viewer", "operator", "host admin", "auditor")


def roles_of(group_dns: set[str], mapping: dict[str, str]) -> list[str]:
    """The portal roles LDAP groups give (DNs compared case-insensitively)."""
    wanted = {dn.lower(): role for dn, role in mapping.items() if role in ROLES}
    return sorted({wanted[dn.lower()] for dn in group_dns if dn.lower() in wanted})


class PortalLDAPBackend(LDAPBackend):
    def authenticate_ldap_user(self, ldap_user, password):
        user = super().authenticate_ldap_user(ldap_user, password)
        if user is not None:
            group_dns = set(ldap_user.group_dns)
            roles_apply(user=user, roles=roles_of(group_dns, settings.LDAP_ROLE_GROUPS))
            ldap_groups_seen.send(sender=type(self), user=user, group_dns=group_dns)
        return user


@transaction.atomic
def roles_apply(*, user, roles: list[str]) -> None:
    """Give `user` exactly `roles` among the portal's role groups (others untouched)."""
    before = sorted(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
    if before == roles:
        return
    user.groups.remove(*Group.objects.filter(name__in=set(before) - set(roles)))
    user.groups.add(*Group.objects.filter(name__in=set(roles) - set(before)))
    audit_event_record(
        actor=Actor.system("ldap"),
        event_type=EventType.USER_ROLES_CHANGED,
        target=user,
        before={"groups": before},
        after={"groups": roles},
        detail={"source": "ldap"},
    )
