"""Migration batches as users ask for them: create and cancel."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.events import EventType
from audit.services import Actor, audit_event_record
from hosts.models import Host
from migrations_app.domain.lifecycle import BATCH_FINAL_STATUSES
from migrations_app.domain.options import MigrationOptions
from migrations_app.events import batch_publish
from migrations_app.models import ACTIVE_STATUSES, BatchKind, MigrationBatch, MigrationStatus
from migrations_app.requests import MigrationConflict, migration_cancel, migration_row_record
from migrations_app.scheduling.batch_turns import batch_advance, batch_detail
from migrations_app.scheduling.dispatch import dispatch_after_commit
from migrations_app.scheduling.schedule import schedule_judged
from migrations_app.selectors import destinations_ranked
from vms.models import VM


@dataclass(frozen=True)
class BatchItem:
    """One VM of a batch: its destination (None: ranked) and options (None: the batch's)."""

    vm: VM
    destination: Host | None = None
    options: MigrationOptions | None = None


def _items_placed(items: list[BatchItem]) -> list[BatchItem]:
    """Place items without a destination on the ranking's best fit host (it asks the hosts)."""
    placed, unfit = [], []
    for item in items:
        if item.destination is not None:
            placed.append(item)
            continue
        ranking = destinations_ranked(item.vm)
        if not ranking or not ranking[0].fit:
            best = f"{ranking[0].host.name}: {ranking[0].reasons[0]}" if ranking else ""
            unfit.append(f"{item.vm.name} ({best or 'no other host is registered'})")
            continue
        placed.append(BatchItem(item.vm, ranking[0].host, item.options))
    if unfit:
        raise ValidationError(
            {"items": ["No fit destination for " + "; ".join(unfit) + ": give one."]}
        )
    return placed


def batch_create(
    *,
    items: list[BatchItem],
    options: MigrationOptions,
    stop_on_failure: bool,
    max_parallel: int,
    actor: Actor,
    kind: str = BatchKind.BATCH,
    host: Host | None = None,
    not_before=None,
    window_end=None,
) -> MigrationBatch:
    """Record the batch and its children in one transaction; dispatched after commit."""
    if not items:
        raise ValidationError({"items": ["Give at least one VM."]})
    if max_parallel < 1:
        raise ValidationError({"max_parallel": ["Must be at least 1."]})
    uuids = [item.vm.uuid for item in items]
    if len(set(uuids)) != len(uuids):
        raise ValidationError({"items": ["A VM appears more than once."]})
    items = _items_placed(items)
    scheduled = schedule_judged(not_before=not_before, window_end=window_end)

    with transaction.atomic():
        batch = MigrationBatch.objects.create(
            kind=kind,
            host=host,
            stop_on_failure=stop_on_failure,
            max_parallel=max_parallel,
            options=options.as_model_fields(),
            created_by=actor.user,
            created_by_name=actor.name,
            not_before=not_before if scheduled else None,
            window_end=window_end,
        )
        children = []
        for item in items:
            try:
                child = migration_row_record(
                    vm=item.vm,
                    destination=item.destination,
                    options=item.options or options,
                    actor=actor,
                    scheduled=scheduled,
                    not_before=not_before if scheduled else None,
                    window_end=window_end,
                    batch=batch,
                )
            except MigrationConflict as exc:
                raise MigrationConflict(f"{exc} No batch was created.") from exc
            children.append(child)
        audit_event_record(
            actor=actor,
            event_type=EventType.BATCH_REQUESTED,
            target=batch,
            after={"status": batch.status},
            detail=batch_detail(
                batch,
                options=batch.options,
                children=[
                    {"migration": c.pk, "vm_name": c.vm_name, "destination": c.destination.name}
                    for c in children
                ],
            ),
        )
        batch_publish(batch_id=batch.pk, event="requested")
        dispatch_after_commit()
    return batch


def batch_cancel(*, batch: MigrationBatch, actor: Actor) -> MigrationBatch:
    """Cancel the batch's children; it ends `cancelled` once none is active."""
    with transaction.atomic():
        batch = MigrationBatch.objects.select_for_update().get(pk=batch.pk)
        if batch.status in BATCH_FINAL_STATUSES:
            raise MigrationConflict(f"Batch {batch.pk} is already {batch.status}.")
        if batch.cancel_requested_at is None:
            batch.cancel_requested_at = timezone.now()
            batch.save(update_fields=["cancel_requested_at"])
            audit_event_record(
                actor=actor,
                event_type=EventType.BATCH_CANCELLED,
                target=batch,
                before={"status": batch.status},
                detail=batch_detail(batch),
            )
            batch_publish(batch_id=batch.pk, event="cancel_requested")
    active = batch.children.filter(status__in=ACTIVE_STATUSES).exclude(
        status=MigrationStatus.NEEDS_ATTENTION
    )
    for child in active.select_related("source", "destination").order_by("pk"):
        try:
            migration_cancel(migration=child, actor=actor)
        except MigrationConflict:
            pass  # it ended meanwhile
    batch_advance(batch=batch)
    batch.refresh_from_db()
    return batch
