"""Migration batches: create, cancel, and advance (the batch's side of the dispatcher).

A batch's children are ordinary migrations, all created `queued` up front (phase
`waiting_for_batch`) and not handed to the broker at once: the dispatcher
(`services.migrations_dispatch_waiting`, run when any migration ends and by the
reconciler every 15 s) calls `batches_advance`, which stops, finishes and publishes
batches, and enqueues only the children `batch_rules.batch_children_to_start`
allows. The claim (engine._try_claim) checks the batch's gate again under the batch's
row lock, so `max_parallel` holds whatever was enqueued. Nothing waits in a worker:
a restart loses nothing, the next dispatch picks the batch up where its rows say.
"""

from __future__ import annotations

import logging

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.events import EventType
from audit.services import Actor, audit_event_record
from hosts.models import Host
from migrations_app.domain import batch_rules, decisions
from migrations_app.domain.lifecycle import BATCH_FINAL_STATUSES, BatchStatus, Phase
from migrations_app.domain.options import MigrationOptions
from migrations_app.events import batch_publish, migration_publish
from migrations_app.models import (
    ACTIVE_STATUSES,
    BatchKind,
    Migration,
    MigrationBatch,
    MigrationStatus,
)
from migrations_app.selectors import destinations_ranked
from migrations_app.services import MigrationConflict, migration_cancel, migration_row_record
from migrations_app.webhooks import webhooks_batch_finished, webhooks_migration_final
from vms.models import VM

logger = logging.getLogger(__name__)

# A batch item: the VM, its destination (None: to be placed), and optionally its own
# options (the batch's options with this VM's overrides).
BatchItem = tuple[VM, Host | None] | tuple[VM, Host | None, MigrationOptions]


def _children_of(batch: MigrationBatch) -> list[batch_rules.Child]:
    rows = batch.children.order_by("pk").values_list("pk", "status")
    return [batch_rules.Child(pk, status) for pk, status in rows]


def _batch_detail(batch: MigrationBatch, **extra) -> dict:
    return {
        "kind": batch.kind,
        "host": batch.host.name if batch.host_id else None,
        "stop_on_failure": batch.stop_on_failure,
        "max_parallel": batch.max_parallel,
        **extra,
    }


def _items_placed(items: list[BatchItem]) -> list[BatchItem]:
    """Items without a destination get the best fit host of the destination ranking
    (`selectors.destinations_ranked`, which asks the hosts for the CPU comparison: this
    runs before any transaction). Each VM is ranked on its own: the pre-checks judge
    memory again when its migration starts. Raises ValidationError on `items` naming
    each VM that no host fits, with the best host's reason."""
    placed, unfit = [], []
    for item in items:
        if item[1] is not None:
            placed.append(item)
            continue
        ranking = destinations_ranked(item[0])
        if not ranking or not ranking[0].fit:
            why = (
                f"{ranking[0].host.name}: {ranking[0].reasons[0]}"
                if ranking
                else "no other host is registered"
            )
            unfit.append(f"{item[0].name} ({why})")
            continue
        placed.append((item[0], ranking[0].host, *item[2:]))
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
    """Record the batch and all its children (`queued`, waiting for the batch) with
    their audit events in one transaction; the dispatcher starts them after commit.

    Raises ValidationError naming the field (items, max_parallel, not_before) and
    MigrationConflict if a VM already has a queued or running migration.
    """
    if not items:
        raise ValidationError({"items": ["Give at least one VM."]})
    if max_parallel < 1:
        raise ValidationError({"max_parallel": ["Must be at least 1."]})
    uuids = [item[0].uuid for item in items]
    if len(set(uuids)) != len(uuids):
        raise ValidationError({"items": ["A VM appears more than once."]})
    items = _items_placed(items)
    now = timezone.now()
    schedule = decisions.schedule_errors(not_before=not_before, window_end=window_end, now=now)
    if schedule:
        raise ValidationError(schedule)
    # Scheduled: every child waits as `scheduled` until the reconciler queues it; the
    # batch's turn (max_parallel) is kept by the claim's gate as for any child.
    scheduled = not decisions.due(not_before=not_before, now=now)

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
            vm, destination = item[0], item[1]
            child_options = item[2] if len(item) > 2 and item[2] is not None else options
            try:
                child = migration_row_record(
                    vm=vm,
                    destination=destination,
                    options=child_options,
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
            detail=_batch_detail(
                batch,
                options=batch.options,
                children=[
                    {"migration": c.pk, "vm_name": c.vm_name, "destination": c.destination.name}
                    for c in children
                ],
            ),
        )
        batch_publish(batch_id=batch.pk, event="requested")
        transaction.on_commit(_dispatch)
    return batch


def _dispatch() -> None:
    from migrations_app.services import migrations_dispatch_waiting

    try:
        migrations_dispatch_waiting()
    except Exception:  # the reconciler dispatches again within seconds
        logger.exception("dispatching after a batch change failed")


def batch_cancel(*, batch: MigrationBatch, actor: Actor) -> MigrationBatch:
    """Cancel the batch: its queued children are cancelled, running ones are asked to
    cancel (migration_cancel); the batch ends `cancelled` once none is active.
    Raises MigrationConflict if the batch already ended."""
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
                detail=_batch_detail(batch),
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


def batch_advance(*, batch: MigrationBatch) -> list[int]:
    """Bring one batch up to date with its children; returns the ids of the children
    that may start now. Under the batch's row lock: a stopping batch cancels the
    children not started yet; the status follows the children, and the final one is
    written once (compare-and-set on the non-final status) with its audit event."""
    with transaction.atomic():
        batch = MigrationBatch.objects.select_for_update().get(pk=batch.pk)
        if batch.status in BATCH_FINAL_STATUSES:
            return []
        cancel_requested = batch.cancel_requested_at is not None
        children = _children_of(batch)
        to_cancel = batch_rules.batch_children_to_cancel(
            children=children,
            stop_on_failure=batch.stop_on_failure,
            cancel_requested=cancel_requested,
        )
        if to_cancel:
            _cancel_not_started(batch, to_cancel, cancel_requested)
            children = _children_of(batch)
        status = batch_rules.batch_status(
            children=children,
            stop_on_failure=batch.stop_on_failure,
            cancel_requested=cancel_requested,
        )
        if status != batch.status:
            _batch_set_status(batch, status, children)
        return batch_rules.batch_children_to_start(
            children=children,
            max_parallel=batch.max_parallel,
            stop_on_failure=batch.stop_on_failure,
            cancel_requested=cancel_requested,
        )


def _cancel_not_started(batch: MigrationBatch, ids: list[int], cancel_requested: bool) -> None:
    why = (
        "the batch was cancelled"
        if cancel_requested
        else "another migration of the batch failed (stop_on_failure)"
    )
    actor = Actor.system(f"batch {batch.pk}")
    now = timezone.now()
    for child in Migration.objects.select_for_update().filter(
        pk__in=ids, status=MigrationStatus.QUEUED, claimed_by=""
    ):
        child.status = MigrationStatus.CANCELLED
        child.phase = Phase.CANCELLED
        child.finished_at = child.cancel_requested_at = now
        child.error = f"Not started: {why}."
        child.save(update_fields=["status", "phase", "finished_at", "cancel_requested_at", "error"])
        audit_event_record(
            actor=actor,
            event_type=EventType.MIGRATION_CANCELLED,
            target=child,
            before={"status": MigrationStatus.QUEUED},
            after={"status": child.status},
            detail={
                "vm_uuid": str(child.vm_uuid),
                "vm_name": child.vm_name,
                "source": child.source.name,
                "destination": child.destination.name,
                "batch": batch.pk,
                "reason": why,
            },
        )
        webhooks_migration_final(migration=child)
        migration_publish(migration=child, event="cancelled")


def _batch_set_status(
    batch: MigrationBatch, status: str, children: list[batch_rules.Child]
) -> None:
    before = batch.status
    fields: dict = {"status": status}
    if status != BatchStatus.QUEUED and batch.started_at is None:
        fields["started_at"] = timezone.now()
    final = status in BATCH_FINAL_STATUSES
    if final:
        fields["finished_at"] = timezone.now()
    # Compare-and-set: only from the status read under the lock, never from a final one.
    changed = (
        MigrationBatch.objects.filter(pk=batch.pk, status=before)
        .exclude(status__in=BATCH_FINAL_STATUSES)
        .update(**fields)
    )
    if not changed:
        return
    for name, value in fields.items():
        setattr(batch, name, value)
    if final:
        failed = Migration.objects.filter(batch=batch, status=MigrationStatus.FAILED)
        audit_event_record(
            actor=Actor.system(f"batch {batch.pk}"),
            event_type=EventType.BATCH_FINISHED,
            target=batch,
            before={"status": before},
            after={"status": status},
            detail=_batch_detail(
                batch,
                outcomes={str(c.id): c.status for c in children},
                failed=[
                    {"migration": m.pk, "vm_name": m.vm_name, "error": m.error}
                    for m in failed.order_by("pk")
                ],
            ),
        )
        webhooks_batch_finished(batch=batch, outcomes={str(c.id): c.status for c in children})
    batch_publish(batch_id=batch.pk, event=status if final else "status")


def batches_advance() -> set[int]:
    """Advance every open batch; the ids of the children that may start now."""
    startable: set[int] = set()
    for batch in MigrationBatch.objects.exclude(status__in=BATCH_FINAL_STATUSES).order_by("pk"):
        startable.update(batch_advance(batch=batch))
    return startable
