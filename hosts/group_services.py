"""Host groups and the roles granted on them: create, change, remove; each change
audited in its own transaction (the API and the admin call these)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from django.db import transaction
from django.db.models import ProtectedError
from django.utils import timezone

from audit.events import EventType
from audit.services import Actor, audit_event_record
from hosts import gateway
from hosts.connections import host_connect
from hosts.models import HostGroup, HostGroupGrant, HostStatus
from hosts.services import HostInUse

GROUP_FIELDS = ("name", "description")


class HostGroupInUse(HostInUse):
    """A host group that still has hosts cannot be removed (a 409, as a host in use)."""


def _view(group: HostGroup) -> dict:
    return {name: getattr(group, name) for name in GROUP_FIELDS}


@transaction.atomic
def host_group_create(*, actor: Actor, name: str, description: str = "") -> HostGroup:
    group = HostGroup(name=name, description=description)
    group.full_clean()
    group.save()
    audit_event_record(
        actor=actor, event_type=EventType.HOST_GROUP_CREATED, target=group, after=_view(group)
    )
    return group


@transaction.atomic
def host_group_update(*, group: HostGroup, actor: Actor, **fields) -> HostGroup:
    group = HostGroup.objects.select_for_update().get(pk=group.pk)
    before = _view(group)
    for name in GROUP_FIELDS:
        if name in fields:
            setattr(group, name, fields[name])
    group.full_clean()
    group.save()
    after = _view(group)
    changed = [k for k in after if after[k] != before[k]]
    if changed:
        audit_event_record(
            actor=actor,
            event_type=EventType.HOST_GROUP_UPDATED,
            target=group,
            before={k: before[k] for k in changed},
            after={k: after[k] for k in changed},
        )
    return group


@transaction.atomic
def host_group_delete(*, group: HostGroup, actor: Actor) -> None:
    """Remove an empty host group (its grants go with it, each audited)."""
    if group.hosts.exists():
        raise HostGroupInUse(
            f"Host group {group.name} still has {group.hosts.count()} host(s): move them to "
            "another group first."
        )
    for grant in group.grants.select_related("host_group", "user", "group"):
        grant_delete(grant=grant, actor=actor)
    audit_event_record(
        actor=actor, event_type=EventType.HOST_GROUP_DELETED, target=group, before=_view(group)
    )
    try:
        group.delete()
    except ProtectedError as exc:  # a host moved in meanwhile; the audit rows roll back
        raise HostGroupInUse(f"Host group {group.name} still has hosts.") from exc


@transaction.atomic
def grant_create(
    *, actor: Actor, host_group: HostGroup, role: str, user=None, group=None, source: str = ""
) -> HostGroupGrant:
    grant = HostGroupGrant(host_group=host_group, role=role, user=user, group=group, source=source)
    grant.full_clean()
    grant.save()
    audit_event_record(
        actor=actor,
        event_type=EventType.HOST_GROUP_GRANT_ADDED,
        target=host_group,
        after=grant.as_dict(),
        detail={"source": source} if source else {},
    )
    return grant


@transaction.atomic
def grant_delete(*, grant: HostGroupGrant, actor: Actor) -> None:
    audit_event_record(
        actor=actor,
        event_type=EventType.HOST_GROUP_GRANT_REMOVED,
        target=grant.host_group,
        before=grant.as_dict(),
        detail={"source": grant.source} if grant.source else {},
    )
    grant.delete()


class NoCpuToBaseline(Exception):
    """No host of the group has reported its CPU yet (or none answers now)."""


def host_group_cpu_baseline(*, group: HostGroup, actor: Actor) -> HostGroup:
    """Ask libvirt (on a reachable host of the group) for the baseline of the CPUs its
    hosts reported; record it on the group, audited as host_group.updated."""
    hosts = list(group.hosts.filter(retired=False).exclude(cpu_xml="").order_by("name"))
    if not hosts:
        raise NoCpuToBaseline(
            f"No host of group {group.name} has reported its CPU yet: refresh them first."
        )
    errors = []
    for host in [h for h in hosts if h.status == HostStatus.REACHABLE] or hosts:
        try:
            with host_connect(host) as conn:  # outside any transaction: can take seconds
                baseline = conn.cpu_baseline(cpu_xmls=[h.cpu_xml for h in hosts])
            break
        except gateway.GatewayError as exc:
            errors.append(f"{host.name}: {exc}")
    else:
        raise NoCpuToBaseline("No host of the group answered: " + "; ".join(errors))
    model = ET.fromstring(baseline).findtext("model") or ""
    with transaction.atomic():
        group = HostGroup.objects.select_for_update().get(pk=group.pk)
        before = {"cpu_baseline_model": group.cpu_baseline_model,
                  "cpu_baseline_hosts": group.cpu_baseline_hosts}  # fmt: skip
        group.cpu_baseline_xml = baseline
        group.cpu_baseline_model = model
        group.cpu_baseline_hosts = [h.name for h in hosts]
        group.cpu_baseline_at = timezone.now()
        group.save()
        audit_event_record(
            actor=actor,
            event_type=EventType.HOST_GROUP_UPDATED,
            target=group,
            before=before,
            after={"cpu_baseline_model": model, "cpu_baseline_hosts": group.cpu_baseline_hosts},
            detail={"cpu_baseline": True},
        )
    return group
