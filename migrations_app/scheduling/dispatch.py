"""Handing queued migrations to the broker when they may start."""

from __future__ import annotations

import logging
from collections import Counter

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from core.db import DbNow
from migrations_app.domain import decisions
from migrations_app.domain.lifecycle import Phase
from migrations_app.models import RUNNING_STATUSES, Migration, MigrationStatus
from migrations_app.scheduling.batch_turns import batches_advance

logger = logging.getLogger(__name__)


def migration_enqueue(*, migration_id: int) -> bool:
    """Hand the migration's task to the broker; True if it took it."""
    try:
        async_task(
            "migrations_app.tasks.migration_run",
            migration_id,
            task_name=f"migration-{migration_id}",
            # Never retried: a redelivered migration is refused by the worker's claim.
            q_options={"max_attempts": 1},
        )
    except Exception as exc:  # redis down: the reconciler enqueues it later
        logger.warning("migration %s: could not be enqueued now: %s", migration_id, exc)
        return False
    # The database's clock: the age is read by any node's reconciler.
    Migration.objects.filter(pk=migration_id).update(enqueued_at=DbNow())
    return True


def postcopy_resume_enqueue(*, migration_id: int, epoch: int) -> bool:
    """Hand a post-copy recovery to a worker; False if the broker did not take it (the
    reconciler then finds the claim stale and settles it: still paused, needs attention)."""
    try:
        async_task(
            "migrations_app.tasks.migration_postcopy_resume",
            migration_id,
            epoch,
            task_name=f"migration-{migration_id}-resume-{epoch}",
            q_options={"max_attempts": 1},
        )
    except Exception as exc:
        logger.warning("migration %s: resume could not be enqueued: %s", migration_id, exc)
        return False
    return True


def migrations_dispatch_waiting(*, include_lost: bool = False) -> list[int]:
    now = timezone.now()
    # Batches first: they may stop or finish, and only some of their children may start.
    batch_startable = batches_advance()
    queued = list(
        Migration.objects.filter(status=MigrationStatus.QUEUED)
        .annotate(db_now=DbNow())
        .order_by("created_at", "pk")
    )
    if not queued:
        return []
    running = Migration.objects.filter(status__in=RUNNING_STATUSES)
    outgoing = Counter(running.values_list("source_id", flat=True))
    incoming = Counter(running.values_list("destination_id", flat=True))
    dispatched = []
    for migration in queued:
        enqueued_at = migration.enqueued_at
        age = (migration.db_now - enqueued_at).total_seconds() if enqueued_at else None
        lost = include_lost and decisions.task_lost(
            enqueued_age_s=age, lost_after_s=settings.MIGRATION_TASK_LOST_AFTER_S
        )
        # A request's own enqueue runs right after its commit: not lost yet.
        if age is None and (now - migration.created_at).total_seconds() < 5:
            lost = False
        waiting = migration.phase == Phase.WAITING_FOR_SLOT
        if migration.batch_id is not None:
            # Only in its turn; waiting for the batch it is not in the broker.
            if migration.pk not in batch_startable:
                continue
            if migration.phase == Phase.WAITING_FOR_BATCH and migration.enqueued_at is None:
                waiting = True
        if not (lost or waiting):
            continue
        free = decisions.slot_free(
            outgoing=outgoing[migration.source_id],
            incoming=incoming[migration.destination_id],
            max_outgoing=settings.MIGRATION_MAX_OUTGOING_PER_HOST,
            max_incoming=settings.MIGRATION_MAX_INCOMING_PER_HOST,
        )
        if waiting and not free and not lost:
            continue
        if not _enqueue_turn_taken(migration):
            continue  # another dispatcher (another migration's end) enqueued it meanwhile
        if migration_enqueue(migration_id=migration.pk):
            dispatched.append(migration.pk)
            if free:  # it will probably take the slot: count it for the next ones
                outgoing[migration.source_id] += 1
                incoming[migration.destination_id] += 1
        else:  # as it was: the next dispatch or the reconciler tries again
            Migration.objects.filter(pk=migration.pk).update(enqueued_at=enqueued_at)
    return dispatched


def _enqueue_turn_taken(migration: Migration) -> bool:
    """Take the turn to enqueue `migration`: a compare-and-set on `enqueued_at` as read.
    Dispatchers run at every migration's end, often at once: without it each would hand
    the same task to the broker, and the copies hold workers a freed slot needs."""
    taken = Migration.objects.filter(
        pk=migration.pk, status=MigrationStatus.QUEUED, enqueued_at=migration.enqueued_at
    ).update(enqueued_at=DbNow())
    return bool(taken)


def dispatch_after_commit() -> None:
    """Dispatch after commit; a failure is not the caller's (the reconciler dispatches)."""

    def dispatch() -> None:
        try:
            migrations_dispatch_waiting()
        except Exception:
            logger.exception("dispatching after a batch change failed")

    transaction.on_commit(dispatch)
