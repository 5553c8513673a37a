"""The reconciler: one pass settles what no live worker owns and restarts what waits,
each under a lease won by `take_over` (never two actors on one migration)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from django.db import DatabaseError, connection, transaction
from django.db.models import QuerySet

from audit.events import EventType
from audit.models import AuditEvent
from audit.services import audit_event_record
from hosts import gateway
from hosts.connections import host_connect
from migrations_app.domain import decisions
from migrations_app.domain.lifecycle import FailureReason, Phase
from migrations_app.models import (
    RUNNING_STATUSES,
    Migration,
    MigrationStatus,
    heartbeat_stale,
)
from migrations_app.scheduling.dispatch import migrations_dispatch_waiting
from migrations_app.scheduling.schedule import migrations_schedule_run
from migrations_app.transitions import ClaimLost
from migrations_app.webhooks import webhooks_deliver_due
from migrations_app.worker.completion import migration_complete
from migrations_app.worker.lease import Lease, heartbeat, system_actor, take_over, worker_identity
from migrations_app.worker.settlement import (
    carry_out,
    migration_settle,
    observe,
    postcopy_started,
    settle_input,
)

_WITH_HOSTS = ("source", "destination")

T = TypeVar("T")

logger = logging.getLogger(__name__)


def migrations_reconcile(*, wait_for_abort_s: float = 60.0) -> list[int]:
    """One pass of the reconciler; returns the ids of the migrations it settled. A step
    that raises is logged (and audited once per migration and error); the pass goes on."""
    me = f"reconciler {worker_identity()}"
    settled = []
    # Stale on the database's clock: the worker may run on another node.
    stale = Migration.objects.filter(heartbeat_stale(), status__in=RUNNING_STATUSES)
    attention = Migration.objects.filter(status=MigrationStatus.NEEDS_ATTENTION)
    cleanup = Migration.objects.filter(needs_cleanup=True)
    per_record: list[tuple[str, QuerySet[Migration], Callable[[Migration], bool | None]]] = [
        ("stale", stale, partial(_take_over_stale, owner=me, wait_for_abort_s=wait_for_abort_s)),
        ("needs_attention", attention, partial(_settle_attention, owner=me)),
        ("cleanup", cleanup, partial(_retry_cleanup, owner=me)),
    ]
    for step, records, settle in per_record:
        for migration in _isolated(step, partial(list, records.select_related(*_WITH_HOSTS))) or []:
            if _isolated(step, partial(settle, migration), migration=migration, owner=me):
                settled.append(migration.pk)

    _isolated("schedule", migrations_schedule_run)
    _isolated("dispatch", partial(migrations_dispatch_waiting, include_lost=True))
    _isolated("webhooks", webhooks_deliver_due)
    return settled


def _isolated(
    step: str, call: Callable[[], T], *, migration: Migration | None = None, owner: str = ""
) -> T | None:
    """Run one step; an error is logged with its traceback (and audited once for its
    migration) and does not stop the pass: the next pass tries again."""
    try:
        return call()
    except Exception as exc:
        subject = f"migration {migration.pk}" if migration is not None else "pass"
        logger.exception("reconcile %s: step %s failed", subject, step)
        if isinstance(exc, DatabaseError) and not connection.in_atomic_block:
            connection.close()  # possibly broken: the next query reconnects
        if migration is not None:
            try:
                _audit_failure_once(migration, step, f"{type(exc).__name__}: {exc}", owner)
            except Exception:
                logger.exception("reconcile migration %s: failure not audited", migration.pk)
        return None


def _audit_failure_once(migration: Migration, step: str, error: str, owner: str) -> None:
    """One event per migration and error, not one every pass."""
    with transaction.atomic():
        # The migration's row locked: two reconcilers write one event between them.
        list(Migration.objects.select_for_update().filter(pk=migration.pk).values("pk"))
        seen = AuditEvent.objects.filter(
            event_type=EventType.MIGRATION_RECONCILE_FAILED,
            target_type=Migration._meta.label_lower,
            target_id=str(migration.pk),
            detail__error=error,
        )
        if not seen.exists():
            audit_event_record(
                actor=system_actor(owner),
                event_type=EventType.MIGRATION_RECONCILE_FAILED,
                target=migration,
                # Only the subjects: the record itself may be what is broken.
                detail={
                    "step": step,
                    "error": error,
                    "vm_uuid": str(migration.vm_uuid),
                    "vm_name": migration.vm_name,
                    "source": migration.source.name,
                    "destination": migration.destination.name,
                },
            )


def _take_over_stale(migration: Migration, *, owner: str, wait_for_abort_s: float) -> bool:
    if (lease := take_over(migration, owner)) is None:
        return False
    previous_owner = migration.claimed_by
    migration.refresh_from_db()
    try:
        with heartbeat(lease):
            _settle_stale(migration, lease, previous_owner, wait_for_abort_s)
    except ClaimLost:
        logger.warning("reconcile %s: taken over by another reconciler", migration.pk)
        return False
    return True


def _settle_stale(
    migration: Migration, lease: Lease, previous_owner: str, wait_for_abort_s: float
) -> None:
    why = f"the worker running this migration ({previous_owner}) stopped; "
    if migration.status == MigrationStatus.CHECKING:
        # The worker sets `migrating` before it asks libvirt: nothing was started.
        lease.change(
            migration,
            MigrationStatus.FAILED,
            EventType.MIGRATION_FAILED,
            phase=Phase.FAILED,
            error=f"{why}it died during the pre-checks; nothing was started",
            failure_reason=FailureReason.WORKER_LOST,
        )
        return
    if migration.status == MigrationStatus.COMPLETING:
        # libvirt had finished: the VM reached the destination, whatever became of it
        # since. Recorded from what the destination reports (if it answers); no host is
        # acted on.
        migration_complete(migration, lease)
        return
    if migration.status == MigrationStatus.MIGRATING:
        _stop_job(migration, lease, wait_for_abort_s)
    migration_settle(
        migration,
        lease,
        "settled by the reconciler from libvirt's state",
        why=why,
        cause=FailureReason.WORKER_LOST,
    )


def _stop_job(migration: Migration, lease: Lease, wait_for_abort_s: float) -> None:
    """Abort the orphaned job on the source (post-copy: only wait), for `wait_for_abort_s`."""
    uuid = str(migration.vm_uuid)
    postcopy = postcopy_started(migration)
    try:
        with host_connect(migration.source) as conn:
            if conn.find_domain(uuid=uuid) is None or not conn.job_stats(uuid):
                return
            if not postcopy:
                lease.renew()
                try:
                    conn.abort_job(uuid)
                except gateway.GatewayError as exc:
                    logger.info("reconcile %s: abort: %s", migration.pk, exc)
            deadline = time.monotonic() + wait_for_abort_s
            while time.monotonic() < deadline:
                if conn.find_domain(uuid=uuid) is None or not conn.job_stats(uuid):
                    return
                lease.check()
                time.sleep(0.5)
    except gateway.GatewayError as exc:
        logger.warning("reconcile %s: source not reachable: %s", migration.pk, exc)


def _settle_attention(migration: Migration, *, owner: str) -> bool:
    given, _ = settle_input(migration)
    if not (given.source.reachable and given.destination.reachable):
        return False
    if decisions.settle(given).outcome == decisions.Outcome.NEEDS_ATTENTION:
        return False  # still not safe to decide (e.g. running on both): left to an operator
    lease = take_over(migration, owner)
    if lease is None:
        return False
    migration.refresh_from_db()
    try:
        with heartbeat(lease):
            migration_settle(
                migration,
                lease,
                "settled once both hosts answered",
                why=f"{migration.error}; " if migration.error else "",
                cause=migration.failure_reason or FailureReason.UNREACHABLE,
            )
    except ClaimLost:
        return False
    return True


def _retry_cleanup(migration: Migration, *, owner: str) -> None:
    uuid = str(migration.vm_uuid)
    later = Migration.objects.filter(vm_uuid=migration.vm_uuid, created_at__gt=migration.created_at)
    src, _ = observe(migration.source, uuid)
    dst, _ = observe(migration.destination, uuid)
    actions = decisions.cleanup_actions(
        source=src,
        destination=dst,
        destination_had_definition=migration.destination_had_definition,
        later_migration_of_vm=later.exists(),
    )
    if actions is None:
        return
    # No lease: a final record has no owner, and only the destination's leftover is touched.
    if error := carry_out(migration, None, actions):
        logger.info("cleanup of migration %s: %s", migration.pk, error)
        return
    with transaction.atomic():
        cleared = Migration.objects.filter(pk=migration.pk, needs_cleanup=True).update(
            needs_cleanup=False
        )
        if cleared:
            audit_event_record(
                actor=system_actor(owner),
                event_type=EventType.MIGRATION_CLEANED_UP,
                target=migration,
                detail={
                    "destination": migration.destination.name,
                    "vm_uuid": uuid,
                    "removed": [a.op.value for a in actions],
                },
            )
