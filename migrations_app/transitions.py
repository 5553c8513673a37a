"""The one door through which a migration's or a batch's status changes."""

from __future__ import annotations

from collections.abc import Callable

from django.db import transaction
from django.utils import timezone

from audit.events import EventType
from audit.services import Actor, audit_event_record
from core.db import DbNow
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
    """Move `migration` to `status` (setting `fields`), record `event`, return the row.
    With `epoch` it is a compare-and-set on the claim and renews the heartbeat (on the
    database's clock); `also` runs in the transaction. ClaimLost or InvalidTransition
    write nothing."""
    with transaction.atomic():
        # FOR UPDATE over the join would lock both hosts too, against every insert with a
        # foreign key to them (PostgreSQL).
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
            current.heartbeat_at = DbNow()
        if status in FINAL_STATUSES:
            current.finished_at = now
        for name, value in fields.items():
            setattr(current, name, value)
        current.save()
        if isinstance(current.heartbeat_at, DbNow):  # the time the database wrote
            current.refresh_from_db(fields=["heartbeat_at"])
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
    """Compare-and-set a batch's status (never out of a final one); True if it changed."""
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
