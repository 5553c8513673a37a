"""The one door through which a migration's or a batch's status changes.

A change locks the row, checks the claim epoch when a worker or the reconciler acts,
checks that the lifecycle allows it, sets the fields, writes one audit event (one
detail shape for every migration event), records the webhook deliveries of a final
status and tells the browsers after commit. tests/test_transitions.py proves that no
other production code writes `status`.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import transaction
from django.utils import timezone

from audit.events import EventType
from audit.services import Actor, audit_event_record
from migrations_app.domain.lifecycle import BATCH_FINAL_STATUSES, FINAL_STATUSES, BatchStatus
from migrations_app.domain.options import MigrationOptions
from migrations_app.events import batch_publish, migration_publish
from migrations_app.models import ALLOWED_TRANSITIONS, Migration, MigrationBatch
from migrations_app.webhooks import webhooks_batch_finished, webhooks_migration_final


class InvalidTransition(RuntimeError):
    """A status change the lifecycle does not allow (a bug, or a race lost)."""


class ClaimLost(Exception):
    """The claim epoch moved on: whoever acted no longer owns the migration."""


def migration_audit_detail(migration: Migration, **extra) -> dict:
    """The detail of every migration audit event: its subjects, options and outcome."""
    return {
        "vm_uuid": str(migration.vm_uuid),
        "vm_name": migration.vm_name,
        "source": migration.source.name,
        "destination": migration.destination.name,
        "options": MigrationOptions.from_migration(migration).as_model_fields(),
        "batch": migration.batch_id,
        "error": migration.error or None,
        "failure_reason": migration.failure_reason or None,
        **extra,
    }


def migration_change(
    migration: Migration,
    status: str,
    event: EventType,
    *,
    actor: Actor,
    epoch: int | None = None,
    detail: dict | None = None,
    also: Callable[[Migration], None] | None = None,
    **fields,
) -> Migration:
    """Move `migration` to `status` (setting `fields`) and record `event`; returns the
    row as written. With `epoch` (a worker's or reconciler's claim) the change is a
    compare-and-set on it and renews the heartbeat. `also` runs in the same
    transaction (the VM's inventory rows on `succeeded`).

    Raises ClaimLost if the epoch moved on and InvalidTransition if the lifecycle
    does not allow the change; nothing is written then.
    """
    with transaction.atomic():
        # Only the migration's row: FOR UPDATE over the join would lock both hosts too,
        # against every insert that checks a foreign key to them (PostgreSQL).
        current = (
            Migration.objects.select_for_update(of=("self",))
            .select_related("source", "destination")
            .get(pk=migration.pk)
        )
        if epoch is not None and current.claim_epoch != epoch:
            raise ClaimLost(f"migration {migration.pk}: claim {epoch} lost")
        before = current.status
        if status != before and status not in ALLOWED_TRANSITIONS.get(before, ()):
            raise InvalidTransition(f"migration {migration.pk}: {before} -> {status}")
        now = timezone.now()
        current.status = status
        if epoch is not None:
            current.heartbeat_at = now
        if status in FINAL_STATUSES:
            current.finished_at = now
        for name, value in fields.items():
            setattr(current, name, value)
        current.save()
        audit_event_record(
            actor=actor,
            event_type=event,
            target=current,
            before={"status": before},
            after={"status": status},
            detail=migration_audit_detail(current, **(detail or {})),
        )
        if also is not None:
            also(current)
        webhooks_migration_final(migration=current)
        migration_publish(migration=current, event=event.action)
    return current


def batch_change(
    batch: MigrationBatch,
    status: str,
    *,
    actor: Actor,
    event: EventType | None = None,
    detail: dict | None = None,
    outcomes: dict | None = None,
) -> bool:
    """Move a batch to `status` as a compare-and-set on the status it was read with
    (never out of a final one); True if it changed. A final status gets `finished_at`,
    its audit event (`event`) and its webhook deliveries (`outcomes`: child id ->
    status). The browsers hear of it after commit."""
    before = batch.status
    now = timezone.now()
    fields: dict = {"status": status}
    if batch.started_at is None and status != BatchStatus.QUEUED:
        fields["started_at"] = now
    final = status in BATCH_FINAL_STATUSES
    if final:
        fields["finished_at"] = now
    with transaction.atomic():
        changed = (
            MigrationBatch.objects.filter(pk=batch.pk, status=before)
            .exclude(status__in=BATCH_FINAL_STATUSES)
            .update(**fields)
        )
        if not changed:
            return False
        for name, value in fields.items():
            setattr(batch, name, value)
        if event is not None:
            audit_event_record(
                actor=actor,
                event_type=event,
                target=batch,
                before={"status": before},
                after={"status": status},
                detail=detail or {},
            )
        if final:
            webhooks_batch_finished(batch=batch, outcomes=outcomes or {})
        batch_publish(batch_id=batch.pk, event=status if final else "status")
    return True
