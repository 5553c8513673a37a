"""A worker's claim of a queued migration: its batch's turn, free slots, `checking`."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.events import EventType
from core.db import DbNow
from hosts.models import Host
from migrations_app.domain import decisions
from migrations_app.domain.lifecycle import BatchStatus, Phase
from migrations_app.events import migration_publish
from migrations_app.models import RUNNING_STATUSES, Migration, MigrationBatch, MigrationStatus
from migrations_app.scheduling.batch_turns import batch_gate_open
from migrations_app.scheduling.schedule import migration_window_close
from migrations_app.transitions import batch_change, migration_change
from migrations_app.worker.lease import Lease, system_actor


class ClaimOutcome(enum.Enum):
    CLAIMED = "claimed"
    WAIT = "wait"  # no free slot, or not its turn in its batch: enqueued again later
    NOT_MINE = "not-mine"  # cancelled, already claimed (a redelivery), or too late


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    migration: Migration | None = None
    lease: Lease | None = None


def migration_claim(migration_id: int, worker: str) -> Claim:
    batch_id = Migration.objects.filter(pk=migration_id).values_list("batch_id", flat=True).first()
    with transaction.atomic():
        # A batch's row is locked before its child's, as everywhere else.
        batch = MigrationBatch.objects.select_for_update().get(pk=batch_id) if batch_id else None
        migration = (
            Migration.objects.select_for_update(of=("self",))
            .select_related("source", "destination")
            .get(pk=migration_id)
        )
        if migration.status != MigrationStatus.QUEUED or migration.claimed_by:
            return Claim(ClaimOutcome.NOT_MINE)
        now = timezone.now()
        if decisions.window_closed(window_end=migration.window_end, now=now):
            migration_window_close(migration=migration, actor=system_actor(), now=now)
            return Claim(ClaimOutcome.NOT_MINE)
        if batch is not None and not batch_gate_open(batch):
            # Out of the broker: the dispatcher enqueues it again at the batch's turn.
            migration.phase = Phase.WAITING_FOR_BATCH
            migration.enqueued_at = None
            migration.save(update_fields=["phase", "enqueued_at"])
            return Claim(ClaimOutcome.WAIT)
        # Lock both hosts so concurrent claims count each other's slots: in pk order (no
        # deadlock), FOR NO KEY UPDATE (not blocking an insert's FOR KEY SHARE FK check).
        list(
            Host.objects.select_for_update(no_key=True)
            .filter(pk__in=[migration.source_id, migration.destination_id])
            .order_by("pk")
        )
        running = Migration.objects.filter(status__in=RUNNING_STATUSES)
        if not decisions.slot_free(
            outgoing=running.filter(source_id=migration.source_id).count(),
            incoming=running.filter(destination_id=migration.destination_id).count(),
            max_outgoing=settings.MIGRATION_MAX_OUTGOING_PER_HOST,
            max_incoming=settings.MIGRATION_MAX_INCOMING_PER_HOST,
        ):
            if migration.phase != Phase.WAITING_FOR_SLOT:
                migration.phase = Phase.WAITING_FOR_SLOT
                migration.save(update_fields=["phase"])
                migration_publish(migration=migration, event="waiting")
            return Claim(ClaimOutcome.WAIT)
        migration = migration_change(
            migration,
            MigrationStatus.CHECKING,
            EventType.MIGRATION_CHECKING,
            actor=system_actor(),
            detail={"worker": worker},
            claimed_by=worker,
            claim_epoch=migration.claim_epoch + 1,
            started_at=now,
            heartbeat_at=DbNow(),
            phase=Phase.CHECKING,
        )
        if batch is not None and batch.status == BatchStatus.QUEUED:
            batch_change(batch, BatchStatus.RUNNING, actor=system_actor())
    lease = Lease(migration.pk, migration.claim_epoch, f"worker {worker}")
    return Claim(ClaimOutcome.CLAIMED, migration, lease)
