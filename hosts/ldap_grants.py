"""LDAP groups mapped to roles on host groups (PORTAL_LDAP_HOST_GROUP_ROLES): at each
LDAP login the person's grants marked `ldap` follow their LDAP groups; grants an
administrator made stay. Each grant added or taken back is audited (actor "ldap")."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

from audit.services import Actor
from hosts.group_services import grant_create, grant_delete
from hosts.models import GrantRole, HostGroup, HostGroupGrant

logger = logging.getLogger(__name__)

LDAP = "ldap"


def host_group_roles_of(group_dns: set[str], mapping: dict) -> set[tuple[str, str]]:
    """The (host group, role) pairs LDAP groups give: `mapping` is {group DN: {"role":
    ..., "host_group": ...} or a list of them}; DNs compare case-insensitively, unknown
    roles (the auditor is global only) are left out."""
    wanted: dict[str, list[dict]] = {}
    for dn, grants in mapping.items():
        wanted.setdefault(dn.lower(), []).extend(grants if isinstance(grants, list) else [grants])
    pairs = set()
    for dn in group_dns:
        for entry in wanted.get(dn.lower(), []):
            role, host_group = entry.get("role"), entry.get("host_group")
            if role in GrantRole.values and host_group:
                pairs.add((host_group, role))
    return pairs


@transaction.atomic
def ldap_grants_apply(*, user, pairs: set[tuple[str, str]]) -> None:
    """Make `user`'s LDAP grants exactly `pairs` (host groups that do not exist are
    skipped, with a warning)."""
    actor = Actor.system(LDAP)
    groups = {g.name: g for g in HostGroup.objects.filter(name__in={h for h, _ in pairs})}
    for name in {h for h, _ in pairs} - set(groups):
        logger.warning("PORTAL_LDAP_HOST_GROUP_ROLES names host group %r: there is none", name)
    wanted = {(h, role) for h, role in pairs if h in groups}
    held = HostGroupGrant.objects.filter(user=user, source=LDAP).select_related(
        "host_group", "user"
    )
    have = set()
    for grant in held:
        key = (grant.host_group.name, grant.role)
        if key in wanted:
            have.add(key)
        else:
            grant_delete(grant=grant, actor=actor)
    for host_group, role in sorted(wanted - have):
        if HostGroupGrant.objects.filter(user=user, host_group=groups[host_group], role=role):
            continue  # an administrator granted it already: theirs stays theirs
        grant_create(actor=actor, host_group=groups[host_group], role=role, user=user, source=LDAP)


def on_ldap_login(sender, *, user, group_dns: set[str], **kwargs) -> None:
    pairs = host_group_roles_of(group_dns, settings.LDAP_HOST_GROUP_ROLES)
    ldap_grants_apply(user=user, pairs=pairs)
