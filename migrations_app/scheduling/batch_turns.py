"""A batch's turns: which children may start, and the batch's status from its children.
The claim checks the gate again under the batch's row lock, so `max_parallel` holds
whatever was enqueued."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.events import EventType
from audit.services import Actor
from migrations_app.domain import batch_rules
from migrations_app.domain.lifecycle import BATCH_FINAL_STATUSES, Phase
from migrations_app.models import RUNNING_STATUSES, Migration, MigrationBatch, MigrationStatus
from migrations_app.transitions import batch_change, migration_change


def batch_detail(batch: MigrationBatch, **extra) -> dict:
    return {
        "kind": batch.kind,
        "host": batch.host.name if batch.host_id else None,
        "stop_on_failure": batch.stop_on_failure,
        "max_parallel": batch.max_parallel,
        **extra,
    }


def _children_of(batch: MigrationBatch) -> list[batch_rules.Child]:
    rows = batch.children.order_by("pk").values_list("pk", "status", "source_id", "destination_id")
    return [batch_rules.Child(*row) for row in rows]


def host_slots() -> batch_rules.HostSlots:
    """The running migrations per host (all of them, not one batch's) and the limits."""
    running = Migration.objects.filter(status__in=RUNNING_STATUSES)
    return batch_rules.HostSlots(
        outgoing=Counter(running.values_list("source_id", flat=True)),
        incoming=Counter(running.values_list("destination_id", flat=True)),
        max_outgoing=settings.MIGRATION_MAX_OUTGOING_PER_HOST,
        max_incoming=settings.MIGRATION_MAX_INCOMING_PER_HOST,
    )


def _flags(batch: MigrationBatch) -> dict[str, bool]:
    return {
        "stop_on_failure": batch.stop_on_failure,
        "cancel_requested": batch.cancel_requested_at is not None,
    }


def batch_gate_open(batch: MigrationBatch) -> bool:
    """May a child of this batch start now? (The caller holds the batch's row lock.)"""
    return batch_rules.batch_gate_open(
        children=_children_of(batch), max_parallel=batch.max_parallel, **_flags(batch)
    )


def batch_advance(
    *, batch: MigrationBatch, slots: batch_rules.HostSlots | None = None
) -> list[int]:
    """Bring one batch up to date; returns the ids of the children that may start now
    (those whose hosts have a free slot in `slots`, the running ones when not given)."""
    slots = slots or host_slots()
    with transaction.atomic():
        batch = MigrationBatch.objects.select_for_update().get(pk=batch.pk)
        if batch.status in BATCH_FINAL_STATUSES:
            return []
        flags = _flags(batch)
        children = _children_of(batch)
        if to_cancel := batch_rules.batch_children_to_cancel(children=children, **flags):
            _cancel_not_started(batch, to_cancel, flags["cancel_requested"])
            children = _children_of(batch)
        status = batch_rules.batch_status(children=children, **flags)
        if status != batch.status:
            _batch_status_follow(batch, status, children)
        return batch_rules.batch_children_to_start(
            children=children, max_parallel=batch.max_parallel, slots=slots, **flags
        )


def batches_advance() -> set[int]:
    startable: set[int] = set()
    slots = host_slots()
    outgoing, incoming = Counter(slots.outgoing), Counter(slots.incoming)
    for batch in MigrationBatch.objects.exclude(status__in=BATCH_FINAL_STATUSES).order_by("pk"):
        ids = batch_advance(batch=batch, slots=replace(slots, outgoing=outgoing, incoming=incoming))
        startable.update(ids)
        # The next batch sees the slots this one's children will take.
        for source_id, destination_id in Migration.objects.filter(pk__in=ids).values_list(
            "source_id", "destination_id"
        ):
            outgoing[source_id] += 1
            incoming[destination_id] += 1
    return startable


def _cancel_not_started(batch: MigrationBatch, ids: list[int], cancel_requested: bool) -> None:
    why = (
        "the batch was cancelled"
        if cancel_requested
        else "another migration of the batch failed (stop_on_failure)"
    )
    actor = Actor.system(f"batch {batch.pk}")
    now = timezone.now()
    not_started = Migration.objects.select_for_update().filter(
        pk__in=ids, status=MigrationStatus.QUEUED, claimed_by=""
    )
    for child in not_started.select_related("source", "destination"):
        migration_change(
            child,
            MigrationStatus.CANCELLED,
            EventType.MIGRATION_CANCELLED,
            actor=actor,
            detail={"reason": why},
            phase=Phase.CANCELLED,
            cancel_requested_at=now,
            error=f"Not started: {why}.",
        )


def _batch_status_follow(
    batch: MigrationBatch, status: str, children: list[batch_rules.Child]
) -> None:
    if status not in BATCH_FINAL_STATUSES:
        batch_change(batch, status, actor=Actor.system(f"batch {batch.pk}"))
        return
    outcomes = {str(c.id): c.status for c in children}
    failed = Migration.objects.filter(batch=batch, status=MigrationStatus.FAILED).order_by("pk")
    batch_change(
        batch,
        status,
        actor=Actor.system(f"batch {batch.pk}"),
        event=EventType.BATCH_FINISHED,
        detail=batch_detail(
            batch,
            outcomes=outcomes,
            failed=[{"migration": m.pk, "vm_name": m.vm_name, "error": m.error} for m in failed],
        ),
        outcomes=outcomes,
    )
