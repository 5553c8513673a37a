"""Host use cases: register, change, remove, refresh. Views and tasks call these."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import ProtectedError
from django.forms.models import model_to_dict
from django.utils import timezone
from django.utils.translation import gettext

from audit.events import EventType
from audit.services import Actor, audit_event_record
from hosts import actions, gateway
from hosts.access import ssh_services
from hosts.connections import host_connect
from hosts.models import Host, HostStatus, Transport, default_group_id

logger = logging.getLogger(__name__)

EDITABLE_FIELDS = [
    "name",
    "group",
    "address",
    "transport",
    "port",
    "ssh_user",
    "shared_storage_paths",
]


def _editable_snapshot(host: Host) -> dict:
    snapshot = model_to_dict(host, fields=EDITABLE_FIELDS)
    snapshot["group"] = host.group.name if host.group_id else None  # names, for the auditor
    return snapshot


@transaction.atomic
def host_create(*, actor: Actor, **fields) -> Host:
    host = Host(**{k: v for k, v in fields.items() if k in EDITABLE_FIELDS or k == "group_id"})
    if host.group_id is None:
        host.group_id = default_group_id()
    host.full_clean()
    host.save()
    audit_event_record(
        actor=actor, event_type=EventType.HOST_CREATED, target=host, after=_editable_snapshot(host)
    )
    return host


@transaction.atomic
def host_update(*, host: Host, actor: Actor, **fields) -> Host:
    host = Host.objects.select_for_update().get(pk=host.pk)
    before = _editable_snapshot(host)
    for key, value in fields.items():
        if key in EDITABLE_FIELDS:
            setattr(host, key, value)
    host.full_clean()
    host.save()
    after = _editable_snapshot(host)
    changed = {k for k in after if after[k] != before[k]}
    if changed:
        audit_event_record(
            actor=actor,
            event_type=EventType.HOST_UPDATED,
            target=host,
            before={k: before[k] for k in changed},
            after={k: after[k] for k in changed},
        )
    return host


class HostInUse(Exception):
    """The host cannot be removed: records (migrations) still point at it."""


@transaction.atomic
def host_delete(*, host: Host, actor: Actor) -> None:
    """Remove a host; one with migration history is kept (HostInUse): retire it instead."""
    audit_event_record(
        actor=actor, event_type=EventType.HOST_DELETED, target=host, before=_editable_snapshot(host)
    )
    try:
        host.delete()
    except ProtectedError as exc:  # raised before any row is deleted; the audit row rolls back
        count = len(exc.protected_objects)
        raise HostInUse(
            gettext(
                "Host %(host)s has migration history (%(count)s record(s) point at it) and "
                "cannot be removed: retire it instead (%(action)s)."
            )
            % {"host": host.name, "count": count, "action": actions.host_retire(host)}
        ) from exc


@transaction.atomic
def host_retired_set(*, host: Host, retired: bool, actor: Actor) -> Host:
    """Retire a host (or bring it back); a repeat records nothing."""
    host = Host.objects.select_for_update().get(pk=host.pk)
    if host.retired == retired:
        return host
    before = {"retired": host.retired}
    host.retired = retired
    host.retired_at = timezone.now() if retired else None
    host.save(update_fields=["retired", "retired_at", "updated_at"])
    audit_event_record(
        actor=actor,
        event_type=EventType.HOST_RETIRED if retired else EventType.HOST_UNRETIRED,
        target=host,
        before=before,
        after={"retired": host.retired},
    )
    return host


MAINTENANCE_REASON_MAX = 500


@transaction.atomic
def host_maintenance_set(*, host: Host, enabled: bool, reason: str = "", actor: Actor) -> Host:
    """Enter or leave maintenance; a repeat records nothing (but a new reason, audited)."""
    host = Host.objects.select_for_update().get(pk=host.pk)
    reason = reason.strip()
    if len(reason) > MAINTENANCE_REASON_MAX:
        raise ValidationError(
            {"reason": [f"At most {MAINTENANCE_REASON_MAX} characters ({len(reason)} given)."]}
        )
    before = {"maintenance": host.maintenance, "maintenance_reason": host.maintenance_reason}
    if enabled == host.maintenance and (not enabled or reason == host.maintenance_reason):
        return host
    if enabled:
        if not host.maintenance:
            host.maintenance_since = timezone.now()
        host.maintenance = True
        host.maintenance_reason = reason
    else:
        host.maintenance = False
        host.maintenance_since = None
        host.maintenance_reason = ""
    host.save(
        update_fields=["maintenance", "maintenance_since", "maintenance_reason", "updated_at"]
    )
    audit_event_record(
        actor=actor,
        event_type=EventType.HOST_MAINTENANCE_ENTERED
        if enabled
        else EventType.HOST_MAINTENANCE_LEFT,
        target=host,
        before=before,
        after={"maintenance": host.maintenance, "maintenance_reason": host.maintenance_reason},
    )
    return host


@dataclass(frozen=True)
class HostReading:
    """What one connection read; `capabilities` None: the host was recorded unreachable."""

    host: Host
    capabilities: gateway.HostCapabilities | None = None
    domains: list[gateway.DomainInfo] = field(default_factory=list)


def host_read(*, host: Host, actor: Actor, reuse: bool = False) -> HostReading:
    """Read capabilities and domains on one connection; an unreachable host is recorded."""
    if host.transport == Transport.SSH and not host.ssh_host_key:
        host = ssh_services.host_key_first_contact(host=host, actor=actor)
    try:
        # Outside any transaction: opening a connection can take seconds.
        with host_connect(host, reuse=reuse) as conn:
            return HostReading(host, conn.capabilities(), conn.list_domains())
    except gateway.GatewayError as exc:
        error = str(exc)
        if host.transport == Transport.SSH:
            # libssh only says verification failed: name the old and new keys.
            error = ssh_services.host_key_check(host=host, actor=actor) or error
        logger.warning("host %s unreachable: %s", host.name, error)
        changes = {"last_error": error, "last_error_at": timezone.now()}
        with transaction.atomic():
            host = _host_status_record(
                host, HostStatus.UNREACHABLE, changes, actor=actor, detail={"error": error}
            )
        return HostReading(host)


def host_reachable_record(
    *, host: Host, capabilities: gateway.HostCapabilities, actor: Actor
) -> Host:
    """Record what a reachable host reported, in the caller's transaction (with its VMs)."""
    now = timezone.now()
    changes = {**asdict(capabilities), "capabilities_updated_at": now, "last_seen_at": now}
    return _host_status_record(host, HostStatus.REACHABLE, changes, actor=actor)


_STATUS_EVENTS = {
    HostStatus.REACHABLE: EventType.HOST_REACHABLE,
    HostStatus.UNREACHABLE: EventType.HOST_UNREACHABLE,
}


def _host_status_record(
    host: Host, status: HostStatus, changes: dict, *, actor: Actor, detail: dict | None = None
) -> Host:
    """Save `status` with `changes` on the locked row; a change of status is audited."""
    host = Host.objects.select_for_update().get(pk=host.pk)
    previous_status = host.status
    for key, value in changes.items():
        setattr(host, key, value)
    host.status = status
    host.save()
    if previous_status != status:
        audit_event_record(
            actor=actor,
            event_type=_STATUS_EVENTS[status],
            target=host,
            before={"status": previous_status},
            after={"status": host.status},
            detail=detail,
        )
    return host


def host_validate_new(*, remote_host: str) -> None:
    """Raise what `host_register_remote` would for `remote_host`, writing nothing."""
    candidate = Host(name=remote_host, address=remote_host, transport=Transport.SSH)
    try:
        candidate.full_clean(exclude=["group"])  # the request's group is the VM's
    except ValidationError as exc:
        raise _on_remote_host(exc) from exc


def _on_remote_host(exc: ValidationError) -> ValidationError:
    # name and address are the same text here: report each reason once.
    messages = list(dict.fromkeys(m for ms in exc.message_dict.values() for m in ms))
    return ValidationError({"remote_host": messages})


def host_register_remote(*, remote_host: str, actor: Actor, group_id: int | None = None) -> Host:
    """Register a host typed into a request: over ssh, never unauthenticated tcp; into
    `group_id` (the VM's host's group), else the default group."""
    extra = {"group_id": group_id} if group_id is not None else {}
    try:
        return host_create(
            actor=actor, name=remote_host, address=remote_host, transport=Transport.SSH, **extra
        )
    except ValidationError as exc:
        raise _on_remote_host(exc) from exc
