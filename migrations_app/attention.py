"""A migration that needs attention, resolved by a person (host admin): what each host
says now, which resolutions are safe for that (domain/attention.py), and carrying one
out under a claim taken from whoever held it, audited as `migration.resolved`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from django.db import transaction

from audit.events import EventType
from audit.services import Actor
from hosts import gateway
from hosts.connections import host_connect
from hosts.models import Host
from migrations_app.domain import decisions
from migrations_app.domain.attention import AttentionInput, Choice, Resolution, attention_choices
from migrations_app.domain.lifecycle import FailureReason, Phase
from migrations_app.models import Migration, MigrationStatus
from migrations_app.requests import MigrationConflict
from migrations_app.scheduling.dispatch import postcopy_resume_enqueue
from migrations_app.transitions import ClaimLost, migration_change
from migrations_app.worker.completion import migration_complete, refresh_inventory
from migrations_app.worker.lease import Lease, heartbeat, take_over
from migrations_app.worker.settlement import carry_out, postcopy_started


class ResolveFailed(gateway.GatewayError):
    """A host refused or dropped an action of the resolution (502); the record says so."""


@dataclass(frozen=True)
class HostReport:
    """What one host says now about the VM's UUID."""

    host: str
    reachable: bool
    state: str | None = None
    reason: str = ""
    job_active: bool | None = None
    persistent: bool | None = None
    error: str = ""

    @property
    def view(self) -> decisions.HostView:
        if not self.reachable:
            return decisions.UNREACHABLE
        return decisions.HostView(True, self.state, self.job_active, self.reason)


@dataclass(frozen=True)
class Attention:
    source: HostReport
    destination: HostReport
    choices: tuple[Choice, ...]

    def choice(self, resolution: Resolution) -> Choice:
        return next(c for c in self.choices if c.resolution == resolution)

    def said(self) -> dict:
        return {"source": asdict(self.source), "destination": asdict(self.destination)}


def _report(host: Host, uuid: str) -> HostReport:
    """Bounded by the connect timeout and keepalive, as the settlement's reads."""
    try:
        with host_connect(host) as conn:
            domain = conn.find_domain(uuid=uuid)
            if domain is None:
                return HostReport(host.name, True)
            job_active = None
            if domain.state in decisions.ACTIVE_STATES:
                try:
                    job_active = bool(conn.job_stats(uuid))
                except gateway.DomainNotFound:
                    return HostReport(host.name, True)  # it left between the two calls
                except gateway.HostUnreachable:
                    raise
                except gateway.GatewayError:
                    pass  # an incoming job's statistics: libvirt 9 has none (not known)
            return HostReport(
                host.name,
                True,
                str(domain.state),
                domain.state_reason,
                job_active,
                domain.persistent,
            )
    except gateway.GatewayError as exc:
        return HostReport(host.name, False, error=str(exc))


def _needs_attention(migration: Migration) -> None:
    if migration.status != MigrationStatus.NEEDS_ATTENTION:
        raise MigrationConflict(
            f"Migration {migration.pk} is {migration.status}, not needs_attention: "
            "there is nothing to resolve."
        )


def migration_attention(*, migration: Migration) -> Attention:
    """Ask both hosts now (side by side would not save much: each is bounded)."""
    _needs_attention(migration)
    uuid = str(migration.vm_uuid)
    source = _report(migration.source, uuid)
    destination = _report(migration.destination, uuid)
    given = AttentionInput(
        source=source.view,
        destination=destination.view,
        postcopy_started=postcopy_started(migration),
        destination_had_definition=migration.destination_had_definition,
        delete_source=migration.delete_source,
        destination_persistent=bool(destination.persistent),
        source_name=migration.source.name,
        destination_name=migration.destination.name,
    )
    return Attention(source, destination, attention_choices(given))


def migration_resolve(
    *, migration: Migration, resolution: Resolution, reason: str, actor: Actor
) -> Migration:
    """Carry out `resolution` if it is still safe for what the hosts say now (409 naming
    why if not); the state change and its `migration.resolved` event in one transaction."""
    migration = Migration.objects.select_related("source", "destination").get(pk=migration.pk)
    attention = migration_attention(migration=migration)
    choice = attention.choice(resolution)
    if not choice.safe:
        raise MigrationConflict(f"{resolution} is not safe now: {choice.why}.")
    # The claim, as the reconciler takes it: whoever acted last on the row loses it.
    lease = take_over(migration, f"{actor.name} (resolve)")
    if lease is None:
        raise MigrationConflict(
            f"Migration {migration.pk} changed while it was being resolved; look again."
        )
    migration.refresh_from_db()
    detail = {
        "action": str(resolution),
        "reason": reason,
        "hosts_said": attention.said(),
        "host_actions": [f"{a.op} on {a.side}" for a in choice.actions],
    }
    note = f"resolved by {actor.name} ({resolution}: {reason})"
    try:
        with heartbeat(lease):
            return _carry_out(migration, lease, choice, actor, detail, note)
    except ClaimLost as exc:
        raise MigrationConflict(
            f"Migration {migration.pk} was taken over while it was being resolved; look again."
        ) from exc


def _change(
    migration: Migration, lease: Lease, actor: Actor, status: str, detail: dict, **fields
) -> Migration:
    return migration_change(
        migration,
        status,
        EventType.MIGRATION_RESOLVED,
        actor=actor,
        epoch=lease.epoch,
        detail=detail,
        **fields,
    )


def _carry_out(
    migration: Migration, lease: Lease, choice: Choice, actor: Actor, detail: dict, note: str
) -> Migration:
    resolution = choice.resolution
    if resolution == Resolution.RESUME_POSTCOPY:
        migration = _change(
            migration,
            lease,
            actor,
            MigrationStatus.MIGRATING,
            detail,
            phase=Phase.POSTCOPY,
            error="",
            failure_reason="",
        )
        epoch = lease.epoch
        transaction.on_commit(
            lambda: postcopy_resume_enqueue(migration_id=migration.pk, epoch=epoch)
        )
        return migration

    if failed := carry_out(migration, lease, choice.actions):
        _change(
            migration,
            lease,
            actor,
            MigrationStatus.NEEDS_ATTENTION,
            {**detail, "failed": failed},
            error=f"{migration.error}; {note} failed: {failed}",
        )
        raise ResolveFailed(f"{failed}; the migration still needs attention")

    error = f"{migration.error}; {note}" if migration.error else note
    if resolution == Resolution.KEEP_DESTINATION:
        migration = _change(
            migration,
            lease,
            actor,
            MigrationStatus.COMPLETING,
            detail,
            phase=Phase.COMPLETING,
            failure_reason="",
            error=error,
        )
        return migration_complete(migration, lease, note=error)
    # keep_source, mark_resolved: the migration did not happen as asked.
    migration = _change(
        migration,
        lease,
        actor,
        MigrationStatus.FAILED,
        detail,
        phase=Phase.FAILED,
        error=error,
        failure_reason=migration.failure_reason or FailureReason.LIBVIRT,
    )
    refresh_inventory(migration, lease)
    return migration
