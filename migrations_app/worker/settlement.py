"""Settling a migration that did not simply succeed, from what both hosts report."""

from __future__ import annotations

from audit.events import EventType
from hosts import gateway
from hosts.connections import host_connect
from hosts.models import Host
from migrations_app.domain import decisions
from migrations_app.domain.lifecycle import FailureReason, Phase
from migrations_app.models import Migration, MigrationStatus
from migrations_app.worker.completion import migration_complete, refresh_inventory
from migrations_app.worker.lease import Lease


def observe(host: Host, uuid: str) -> tuple[decisions.HostView, str]:
    """What one host says about the VM (bounded by the connect timeout and keepalive)."""
    job_active = None
    try:
        with host_connect(host) as conn:
            domain = conn.find_domain(uuid=uuid)
            if domain is not None and domain.state in decisions.ACTIVE_STATES:
                try:
                    job_active = bool(conn.job_stats(uuid))
                except gateway.DomainNotFound:
                    domain = None  # it left between the two calls
                except gateway.HostUnreachable:
                    raise
                except gateway.GatewayError:
                    # An incoming copy has no job statistics (libvirt refuses them on
                    # the destination, e.g. a post-copy that failed): the host answered,
                    # the job is not known.
                    job_active = None
    except gateway.GatewayError as exc:
        return decisions.UNREACHABLE, str(exc)
    if domain is None:
        return decisions.HostView(True, None, job_active), ""
    return decisions.HostView(True, domain.state, job_active, domain.state_reason), ""


# Read fresh: the API sets these while the worker runs.
def cancel_requested(migration: Migration) -> bool:
    return Migration.objects.filter(pk=migration.pk, cancel_requested_at__isnull=False).exists()


def paused_outside(migration: Migration) -> bool:
    return Migration.objects.filter(pk=migration.pk, paused_outside_at__isnull=False).exists()


def postcopy_started(migration: Migration) -> bool:
    return Migration.objects.filter(pk=migration.pk, postcopy_started_at__isnull=False).exists()


def settle_input(migration: Migration) -> tuple[decisions.SettleInput, list[str]]:
    uuid = str(migration.vm_uuid)
    src, src_error = observe(migration.source, uuid)
    dst, dst_error = observe(migration.destination, uuid)
    errors = [
        f"{host}: {error}"
        for host, error in ((migration.source, src_error), (migration.destination, dst_error))
        if error
    ]
    given = decisions.SettleInput(
        source=src,
        destination=dst,
        live=migration.live,
        postcopy_started=postcopy_started(migration),
        destination_had_definition=migration.destination_had_definition,
        source_was_paused=migration.source_was_paused,
        paused_by_policy=bool(migration.paused_for_convergence_at),
        paused_outside=paused_outside(migration),
        source_name=migration.source.name,
        destination_name=migration.destination.name,
    )
    return given, errors


_OPS = {
    decisions.Op.DESTROY: lambda conn, uuid: conn.destroy(uuid),
    decisions.Op.UNDEFINE: lambda conn, uuid: conn.undefine(uuid),
    decisions.Op.RESUME: lambda conn, uuid: conn.resume(uuid),
    decisions.Op.SUSPEND: lambda conn, uuid: conn.suspend(uuid),
    decisions.Op.START: lambda conn, uuid: conn.start(uuid),
}


def carry_out(
    migration: Migration, lease: Lease | None, actions: tuple[decisions.Action, ...]
) -> str | None:
    """Apply the actions in order, renewing the lease before each; the first error."""
    uuid = str(migration.vm_uuid)
    for action in actions:
        host = migration.source if action.side == decisions.Side.SOURCE else migration.destination
        if lease is not None:
            lease.renew()
        try:
            with host_connect(host) as conn:
                _OPS[action.op](conn, uuid)
        except gateway.GatewayError as exc:
            return f"could not {action.op} the VM on {host.name}: {exc}"
    return None


def migration_settle(
    migration: Migration,
    lease: Lease,
    error: str,
    *,
    why: str = "",
    cause: FailureReason = FailureReason.LIBVIRT,
) -> Migration:
    """Settle where the VM is and record what happened (`cause`: what ended it)."""
    given, unreachable = settle_input(migration)
    settlement = decisions.settle(given)
    notes = list(settlement.notes)
    outcome = settlement.outcome
    if failed_action := carry_out(migration, lease, settlement.actions):
        notes.append(failed_action)
        outcome = decisions.Outcome.NEEDS_ATTENTION
    notes.extend(unreachable)
    message = f"{why}{error}" + (f" ({'; '.join(notes)})" if notes else "")
    reason = decisions.failure_reason(
        cause=cause,
        cancel_requested=cancel_requested(migration),
        hosts_unreachable=bool(unreachable),
        settled=settlement.reason,
    )

    if outcome == decisions.Outcome.SUCCEEDED:
        return migration_complete(migration, lease, note=message)
    if outcome == decisions.Outcome.NEEDS_ATTENTION:
        return lease.change(
            migration,
            MigrationStatus.NEEDS_ATTENTION,
            EventType.MIGRATION_NEEDS_ATTENTION,
            error=message,
            phase=Phase.NEEDS_ATTENTION,
            failure_reason=reason or "",
        )
    cancelled = reason is None
    migration = lease.change(
        migration,
        MigrationStatus.CANCELLED if cancelled else MigrationStatus.FAILED,
        EventType.MIGRATION_CANCELLED if cancelled else EventType.MIGRATION_FAILED,
        error=message,
        phase=Phase.CANCELLED if cancelled else Phase.FAILED,
        failure_reason=reason or "",
        needs_cleanup=settlement.needs_cleanup,
    )
    refresh_inventory(migration, lease)
    return migration
