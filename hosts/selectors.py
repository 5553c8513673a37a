"""Reads of hosts (no writes here), and the one answer to "which host groups may this
user see or act on" that every list, page, socket and check uses."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Q, QuerySet

from hosts.models import GrantRole, Host, HostGroup, HostGroupGrant

# The global permission behind each role (the Django groups of migrations_app 0013).
VIEW_HOST = "hosts.view_host"
MANAGE_HOST = "hosts.manage_host"
MIGRATE_VM = "migrations_app.migrate_vm"
READ_AUDIT = "audit.view_auditevent"

# A grant of a role on a group gives these rights there: every role sees.
ROLES_THAT_SEE = tuple(GrantRole.values)


def host_find(*, remote_host: str) -> Host | None:
    return Host.objects.filter(Q(name=remote_host) | Q(address=remote_host)).first()


def _active(user) -> bool:
    return bool(user and user.is_authenticated and user.is_active)


def host_groups_granted(user, roles: Iterable[str]) -> frozenset[int]:
    """The host groups where a grant (the user's own or one of their Django groups')
    gives `user` one of `roles`."""
    if not _active(user):
        return frozenset()
    grants = HostGroupGrant.objects.filter(
        Q(user_id=user.pk) | Q(group__in=user.groups.all()), role__in=list(roles)
    )
    return frozenset(grants.values_list("host_group_id", flat=True))


def host_groups_where(user, *, role: str) -> frozenset[int] | None:
    """The host groups where `user` has `role` (viewer, operator, host admin); None: all
    of them (staff, or the role held globally)."""
    if not _active(user):
        return frozenset()
    if user.is_staff:
        return None
    if role == GrantRole.VIEWER:
        # Every global role reads every host; the auditor stays global too.
        if any(user.has_perm(p) for p in (VIEW_HOST, MANAGE_HOST, MIGRATE_VM, READ_AUDIT)):
            return None
        return host_groups_granted(user, ROLES_THAT_SEE)
    permission = MIGRATE_VM if role == GrantRole.OPERATOR else MANAGE_HOST
    if user.has_perm(permission):
        return None
    return host_groups_granted(user, [role])


def host_groups_visible(user) -> frozenset[int] | None:
    """The host groups whose hosts, VMs and migrations `user` sees; None: all."""
    return host_groups_where(user, role=GrantRole.VIEWER)


def has_role_on(user, *, role: str, group_id: int | None) -> bool:
    groups = host_groups_where(user, role=role)
    return groups is None or group_id in groups


def has_role_somewhere(user, *, role: str) -> bool:
    groups = host_groups_where(user, role=role)
    return groups is None or bool(groups)


def scoped(queryset: QuerySet, user, *, group_field: str) -> QuerySet:
    """`queryset` narrowed to the rows whose `group_field` is a host group `user` sees."""
    groups = host_groups_visible(user)
    if groups is None:
        return queryset
    return queryset.filter(**{f"{group_field}__in": groups})


def host_groups_visible_to(user) -> QuerySet[HostGroup]:
    return scoped(HostGroup.objects.all(), user, group_field="pk")


def hosts_visible_to(user) -> QuerySet[Host]:
    return scoped(Host.objects.all(), user, group_field="group_id")


def host_peer_trusts(host: Host):
    """The peer trusts this host takes part in, as source or destination."""
    from hosts.access.models import PeerTrust

    return (
        PeerTrust.objects.filter(Q(source=host) | Q(destination=host))
        .select_related("source", "destination")
        .order_by("source__name", "destination__name")
    )


def hosts_in_service_except(user, host: Host):
    """Hosts `user` sees that may take part with `host` (not retired), by name."""
    return hosts_visible_to(user).filter(retired=False).exclude(pk=host.pk).order_by("name")
